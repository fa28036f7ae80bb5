"""Vault key rotation: re-wrap every data key under the active KEK, online, in batches, resumable.

Each batch is one short transaction over rows still under another key (`key_id != active`),
locked with `select_for_update(skip_locked=True)` so live traffic (a refresh writing new tokens)
is never blocked or overwritten. Re-running continues where a stopped run left off, because the
selection is by key id, not by a cursor kept elsewhere.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from django.db import models, transaction

from fhirlink import vault
from fhirlink.models import Connection, HealthSystem, LaunchAttempt, PatientDataKey
from fhirlink.services.oauth_client import secret_aad

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Vaulted:
    model: type[models.Model]
    key_field: str
    # (blob field, aad for the row)
    blobs: list[tuple[str, Callable[[Any], str]]]


def _conn_aad(field: str) -> Callable[[Any], str]:
    return lambda row: f"fhirlink.connection:{row.pk}:{field}"


VAULTED: list[Vaulted] = [
    Vaulted(
        Connection,
        "token_key_id",
        [
            ("access_token_blob", _conn_aad("access_token")),
            ("refresh_token_blob", _conn_aad("refresh_token")),
        ],
    ),
    # The EHR login name (id_token `sub`), sealed apart from the tokens (which a disconnect
    # destroys, with their key id).
    Vaulted(Connection, "oidc_subject_key_id", [("oidc_subject_blob", _conn_aad("oidc_subject"))]),
    Vaulted(HealthSystem, "secret_key_id", [("secret_blob", secret_aad)]),
    Vaulted(
        LaunchAttempt,
        "verifier_key_id",
        [("verifier_blob", lambda row: f"fhirlink.launchattempt:{row.pk}:verifier")],
    ),
]


@dataclass
class RotationReport:
    active_key_id: str
    rewrapped: dict[str, int]
    remaining: dict[str, int]
    index_key_id: str = ""


def _label(spec: Vaulted) -> str:
    """The report's name for a vaulted column set: the model, and the key field where a model
    has more than one."""
    shared = sum(1 for other in VAULTED if other.model is spec.model) > 1
    return f"{spec.model._meta.label}.{spec.key_field}" if shared else spec.model._meta.label


def _pending(model: type[models.Model], key_field: str, active: str) -> models.QuerySet[Any]:
    return (
        model._default_manager.exclude(**{key_field: active})
        .exclude(**{key_field: ""})
        .order_by("pk")
    )


def _batches(batch_size: int, max_batches: int | None) -> Iterator[int]:
    n = 0
    while max_batches is None or n < max_batches:
        yield n
        n += 1


def vault_rotate(*, batch_size: int = 500, max_batches: int | None = None) -> RotationReport:
    """Re-wrap everything under the active key. `max_batches` bounds one run (resume later)."""
    active = vault.active_key_id()
    rewrapped: dict[str, int] = {}
    for spec in VAULTED:
        label = _label(spec)
        rewrapped[label] = 0
        for _ in _batches(batch_size, max_batches):
            with transaction.atomic():
                rows = list(
                    _pending(spec.model, spec.key_field, active).select_for_update(
                        skip_locked=True
                    )[:batch_size]
                )
                if not rows:
                    break
                for row in rows:
                    old = getattr(row, spec.key_field)
                    for field, aad in spec.blobs:
                        blob = getattr(row, field)
                        if blob:
                            setattr(
                                row,
                                field,
                                vault.rewrap(blob, key_id=old, aad=aad(row), new_key_id=active),
                            )
                    setattr(row, spec.key_field, active)
                    row.save(update_fields=[spec.key_field, *[f for f, _ in spec.blobs]])
                rewrapped[label] += len(rows)
            logger.info("vault_rotate: %s +%s rows", label, len(rows))

    label = PatientDataKey._meta.label
    rewrapped[label] = 0
    for _ in _batches(batch_size, max_batches):
        with transaction.atomic():
            keys = list(
                PatientDataKey.objects.exclude(key_id=active)
                .order_by("pk")
                .select_for_update(skip_locked=True)[:batch_size]
            )
            if not keys:
                break
            for key in keys:
                key.wrapped_key = vault.patient_key_rewrap(
                    key.wrapped_key, patient_id=key.patient_id, key_id=key.key_id, new_key_id=active
                )
                key.key_id = active
                key.save(update_fields=["wrapped_key", "key_id"])
            rewrapped[label] += len(keys)

    remaining = {
        _label(spec): _pending(spec.model, spec.key_field, active).count() for spec in VAULTED
    }
    remaining[label] = PatientDataKey.objects.exclude(key_id=active).count()

    # The store's index hashes: re-hashed under FHIRLINK_INDEX_ACTIVE_KEY_ID from the payloads.
    from fhirlink.services.sync.store import index_rehash

    label = "fhirlink.SyncedResource.index_key_id"
    rehash = index_rehash(batch_size=batch_size, max_batches=max_batches)
    rewrapped[label], remaining[label] = rehash.rehashed, rehash.remaining
    return RotationReport(
        active_key_id=active,
        rewrapped=rewrapped,
        remaining=remaining,
        index_key_id=vault.index_active_key_id(),
    )
