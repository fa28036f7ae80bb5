"""The sandbox's id_token signing keys (RS256, ``kid`` suffixed ``.rsa`` like Cerner's)."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.db import transaction
from django.utils import timezone

from .conf import KEY_RETIRE_GRACE_SECONDS
from .models import SandboxSigningKey

_spare_lock = threading.Lock()
_spare_pem: list[str] = []


def _new_private_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _first_pem() -> str:
    """Key material for the first key of a fresh database, generated once per process.

    Tests flush the table after every test; generating a 2048-bit key each time would cost.
    """
    with _spare_lock:
        if not _spare_pem:
            _spare_pem.append(_new_private_pem())
        return _spare_pem[0]


def _kid() -> str:
    now = timezone.now()
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond:06d}.rsa"


def signing_key_active() -> SandboxSigningKey:
    key = SandboxSigningKey.objects.filter(retired_at__isnull=True).order_by("-created_at").first()
    if key is not None:
        return key
    with transaction.atomic():
        key = SandboxSigningKey.objects.filter(retired_at__isnull=True).first()
        if key is None:
            key = SandboxSigningKey.objects.create(
                kid=_kid(), private_pem=_first_pem(), created_at=timezone.now()
            )
    return key


def signing_key_rotate() -> SandboxSigningKey:
    """A new active key; the old one stays in the JWKS for KEY_RETIRE_GRACE_SECONDS."""
    pem = _new_private_pem()
    with transaction.atomic():
        signing_key_active()
        SandboxSigningKey.objects.filter(retired_at__isnull=True).update(retired_at=timezone.now())
        return SandboxSigningKey.objects.create(
            kid=_kid(), private_pem=pem, created_at=timezone.now()
        )


def jwks() -> dict[str, Any]:
    signing_key_active()
    cutoff = timezone.now() - timedelta(seconds=KEY_RETIRE_GRACE_SECONDS)
    keys = []
    for row in SandboxSigningKey.objects.order_by("-created_at"):
        if row.retired_at is not None and row.retired_at < cutoff:
            continue
        private = serialization.load_pem_private_key(row.private_pem.encode(), password=None)
        public_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))  # type: ignore[arg-type]
        keys.append({**public_jwk, "kid": row.kid, "use": "sig", "alg": "RS256"})
    return {"keys": keys}


def sign_id_token(claims: dict[str, Any]) -> str:
    key = signing_key_active()
    return jwt.encode(
        claims, key.private_pem, algorithm="RS256", headers={"kid": key.kid, "typ": "JWT"}
    )
