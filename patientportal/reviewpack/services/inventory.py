"""The data inventory: every stored category of data, where it lives, how it is protected.

Read from the models and the running settings where the code can say it: tables, encrypted
columns (the vault's sealed `BinaryField`s) and the key-id column beside them, what happens to a
row when its patient row goes (the foreign key's `on_delete`), retention settings and their
values, the erasure functions (checked to exist), the vault's key-encryption keys by id (never
a key) and how many rows each key still wraps (rotation status).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db import models
from django.utils.module_loading import import_string

from fhirlink import vault

AES_GCM = "AES-256-GCM (cryptography's AESGCM; 96-bit random nonce, 128-bit tag, AAD binds row)"


@dataclass(frozen=True)
class Category:
    key: str
    name: str
    models: tuple[str, ...]
    protection: str
    retention: str
    retention_settings: tuple[str, ...] = ()
    erasure: str = ""
    erasure_functions: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)


CATEGORIES: tuple[Category, ...] = (
    Category(
        key="ehr_tokens",
        name="EHR tokens and client credentials",
        models=("fhirlink.Connection", "fhirlink.LaunchAttempt", "fhirlink.HealthSystem"),
        protection=(
            "Sealed one by one by the vault (envelope encryption): a fresh 256-bit data key per "
            f"value, wrapped by the active key-encryption key; {AES_GCM}. Never in an API "
            "response, the admin, a log line or a URL."
        ),
        retention=(
            "Until the connection is disconnected or the account deleted; a launch attempt's PKCE "
            "verifier until it is used or expires (purged daily)."
        ),
        retention_settings=("FHIRLINK_LAUNCH_TTL", "FHIRLINK_GRANT_CHECK_MINUTES"),
        erasure=(
            "Disconnect revokes the refresh token at the health system (RFC 7009) and destroys the "
            "local tokens; account deletion disconnects every connection."
        ),
        erasure_functions=(
            "fhirlink.services.connections.connection_disconnect",
            "fhirlink.services.connections.connection_disconnect_all",
            "fhirlink.tasks.launch_attempts_purge",
        ),
    ),
    Category(
        key="app_tokens",
        name="This server's sign-in tokens (mobile app OAuth)",
        models=(
            "oauth2_provider.AccessToken",
            "oauth2_provider.RefreshToken",
            "oauth2_provider.Grant",
            "sessions.Session",
        ),
        protection=(
            "Only a SHA-256 checksum of each access and refresh token is stored "
            "(OAUTH2_PROVIDER COMPLIANT_BCP_RFC9700_TOKEN_STORAGE); refresh tokens rotate and a "
            "reused one revokes its family."
        ),
        retention="Until expiry; expired tokens are cleared every 6 hours (beat).",
        retention_settings=("OAUTH2_PROVIDER.ACCESS_TOKEN_EXPIRE_SECONDS",),
        erasure="Password reset, account deactivation and deletion revoke every token.",
        erasure_functions=("patientportal.accounts.services.oauth_tokens_revoke_for_user",),
    ),
    Category(
        key="synced_records",
        name="Synced health records (FHIR resources)",
        models=("fhirlink.SyncedResource", "fhirlink.SyncQuarantine", "fhirlink.PatientDataKey"),
        protection=(
            "Each payload encrypted with the patient's own data key (one per patient, wrapped by "
            f"the key-encryption key); {AES_GCM}. Only the columns the API filters on stay in "
            "the clear."
        ),
        retention=(
            "While the patient keeps the connection; a full reconcile tombstones what the health "
            "system no longer returns."
        ),
        retention_settings=("FHIRLINK_SYNC_RECONCILE_DAYS",),
        erasure=(
            "Disconnect with purge (or account deletion) deletes the connection's rows; when no "
            "connection is left the patient's data key is destroyed: cryptographic erasure."
        ),
        erasure_functions=(
            "fhirlink.hooks.synced_data_erase",
            "fhirlink.vault.patient_key_destroy",
        ),
    ),
    Category(
        key="documents",
        name="Documents (DocumentReference attachments, exports)",
        models=("fhirlink.SyncedResource",),
        protection=(
            "Attachments (Binary) are synced records: encrypted with the patient's data key. An "
            "export is encrypted (AAD bound to the export id) and kept in the cache only."
        ),
        retention="Attachments as synced records; an export is downloadable once within its TTL.",
        retention_settings=(
            "FHIRLINK_RECORDS_EXPORT_TTL",
            "FHIRLINK_SYNC_MAX_BINARY_BYTES",
            "FHIRLINK_SYNC_BINARY_CONTENT_TYPES",
        ),
        erasure="As synced records (cryptographic erasure); exports expire from the cache.",
        erasure_functions=("fhirlink.vault.patient_key_destroy",),
        extra={"resource_types": "Binary, DocumentReference"},
    ),
    Category(
        key="access_log",
        name="Access log",
        models=("accesslog.AccessEvent", "accesslog.AccessLogAnchor"),
        protection=(
            "Append-only (ORM refuses edits; a PostgreSQL trigger refuses UPDATE/DELETE); each row "
            "chained by HMAC-SHA256 under ACCESS_LOG_CHAIN_KEY, verifiable with manage.py "
            "accesslog_verify. Not encrypted at the application level."
        ),
        retention="Rows older than the retention period are purged daily behind a signed anchor.",
        retention_settings=("ACCESS_LOG_RETENTION_DAYS",),
        erasure=(
            "Only the retention purge removes rows (oldest first); the log outlives the patient "
            "row (no foreign key)."
        ),
        erasure_functions=("patientportal.accesslog.services.access_log_purge",),
    ),
    Category(
        key="consents",
        name="Consents",
        models=("consent.ConsentDocument", "consent.PatientConsent", "consent.ConsentRecord"),
        protection=(
            "History is never edited (each grant/revocation is a new record with version, time, "
            "IP, user agent, app). Not encrypted at the application level."
        ),
        retention="Kept as evidence of consent while the patient row exists.",
        erasure="Revocation takes effect at once everywhere (handlers after commit).",
        erasure_functions=("patientportal.consent.services.consent_revoke",),
    ),
    Category(
        key="account",
        name="Account data",
        models=(
            "accounts.User",
            "accounts.Patient",
            "accounts.AccountDeletionRequest",
            "engagement.Device",
            "engagement.ReminderPreference",
            "engagement.Delivery",
            "otp_totp.TOTPDevice",
        ),
        protection=(
            "Passwords hashed by Django's password hashers; not otherwise encrypted at the "
            "application level (database and volume encryption are the deployment's)."
        ),
        retention="Until the patient deletes the account.",
        retention_settings=("PASSWORD_RESET_TIMEOUT",),
        erasure=(
            "Account deletion closes sign-in and revokes tokens at once, then calls each "
            "ACCOUNT_DELETION_REQUEST_HANDLERS entry."
        ),
        erasure_functions=("patientportal.accounts.services.account_deletion_request",),
    ),
)


def _setting(name: str) -> Any:
    head, _, tail = name.partition(".")
    value = getattr(settings, head, None)
    if tail and isinstance(value, dict):
        value = value.get(tail)
    return value


def _json_value(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return str(value)


def _model_row(label: str) -> dict[str, Any] | None:
    try:
        model = apps.get_model(label)
    except LookupError:
        return None
    fields = [f for f in model._meta.get_fields() if isinstance(f, models.Field)]
    encrypted = [f.name for f in fields if isinstance(f, models.BinaryField)]
    key_ids = [f.name for f in fields if f.name.endswith("key_id") and f.name != "jwt_key_id"]
    patient_fk = next(
        (
            f
            for f in fields
            if isinstance(f, models.ForeignKey | models.OneToOneField)
            and getattr(getattr(f.related_model, "_meta", None), "label", "") == "accounts.Patient"
        ),
        None,
    )
    on_delete = ""
    if patient_fk is not None:
        on_delete = getattr(patient_fk.remote_field.on_delete, "__name__", "")
    return {
        "model": label,
        "table": model._meta.db_table,
        "encrypted_columns": encrypted,
        "key_id_columns": key_ids,
        "when_the_patient_row_goes": {
            "CASCADE": "deleted with it",
            "PROTECT": "kept: blocks deleting the patient row",
            "SET_NULL": "kept, unlinked",
        }.get(on_delete, on_delete or "no link to a patient row"),
    }


def key_hierarchy() -> dict[str, Any]:
    """KEKs by id (never the keys) and how many wrapped rows each still holds."""
    from fhirlink.models import Connection, HealthSystem, LaunchAttempt, PatientDataKey

    provider = vault.key_provider()
    known = list(getattr(provider, "key_ids", lambda: [])())
    active = provider.active_key_id()
    usage: Counter[str] = Counter()
    for model, column in (
        (Connection, "token_key_id"),
        (LaunchAttempt, "verifier_key_id"),
        (HealthSystem, "secret_key_id"),
        (PatientDataKey, "key_id"),
    ):
        for row in (
            model.objects.exclude(**{column: ""}).values(column).annotate(n=models.Count("pk"))
        ):
            usage[row[column]] += row["n"]
    on_old = {key_id: n for key_id, n in sorted(usage.items()) if key_id != active}
    return {
        "provider": settings.VAULT_BACKEND,
        "levels": [
            "Key-encryption keys (KEK), held by the provider, never in the database",
            "Data keys: one per sealed secret, one per patient for synced payloads; stored "
            "wrapped by a KEK with that KEK's id on the row",
            "Ciphertexts: AES-256-GCM under the data key, AAD naming the row and field",
        ],
        "algorithm": AES_GCM,
        "active_key_id": active,
        "key_ids": known,
        "wrapped_rows_by_key_id": dict(sorted(usage.items())),
        "rotation": (
            "every wrapped row is on the active key"
            if not on_old
            else "rows still wrapped by older keys: run manage.py vault_rotate"
        ),
        "rotation_command": "VAULT_KEYS=old:...,new:... VAULT_ACTIVE_KEY_ID=new manage.py "
        "vault_rotate (re-wraps data keys in batches, online; then drop the old key)",
    }


def data_inventory() -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for category in CATEGORIES:
        stores = [row for label in category.models if (row := _model_row(label)) is not None]
        erasure_functions = []
        for path in category.erasure_functions:
            try:
                import_string(path)
                exists = True
            except ImportError:
                exists = False
            erasure_functions.append({"function": path, "exists": exists})
        rows.append(
            {
                "key": category.key,
                "category": category.name,
                "stores": stores,
                "protection": category.protection,
                "retention": category.retention,
                "retention_settings": {
                    name: _json_value(_setting(name)) for name in category.retention_settings
                },
                "erasure": category.erasure,
                "erasure_functions": erasure_functions,
                **({"details": dict(category.extra)} if category.extra else {}),
            }
        )
    return {
        "database": settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1],
        "cache_and_broker": "redis" if settings.REDIS_URL else "embedded",
        "key_hierarchy": key_hierarchy(),
        "categories": rows,
        "account_deletion_handlers": list(settings.ACCOUNT_DELETION_REQUEST_HANDLERS),
    }
