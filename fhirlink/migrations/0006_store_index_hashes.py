"""Data at rest (issue #19 item 9): the synced-record store's filter columns become keyed hashes
and the connection's EHR login name (id_token `sub`) is sealed by the vault.

* category, code_system, code, status, clinical_status: every existing row is hashed in place
  under FHIRLINK_INDEX_ACTIVE_KEY_ID (`fhirlink.vault.index_hash`, the function the store's
  writer uses), with that key id in the new `index_key_id`; then the columns become
  `IndexHashField`s (32 hex characters).
* last_updated and issued_at are dropped: nothing filters or sorts on them (the API reads
  meta.lastUpdated from the payload).
* Connection.oidc_subject is sealed into oidc_subject_blob (AAD naming the row), then dropped.

Reversing restores the login names (opened from their seal) and the dropped columns empty; the
hashed columns stay hashed (a hash has no inverse: re-sync to get clear values back).
"""

from __future__ import annotations

from typing import Any

from django.db import migrations, models

import fhirlink.models.store

INDEX_COLUMNS = ("category", "code_system", "code", "status", "clinical_status")
BATCH = 1000


def _hash_existing(apps: Any, schema_editor: Any) -> None:
    from fhirlink import vault

    model = apps.get_model("fhirlink", "SyncedResource")
    db = schema_editor.connection.alias
    key_id = vault.index_active_key_id()
    last = 0
    while True:
        rows = list(
            model.objects.using(db)
            .filter(pk__gt=last)
            .order_by("pk")
            .only("pk", *INDEX_COLUMNS)[:BATCH]
        )
        if not rows:
            return
        for row in rows:
            for column in INDEX_COLUMNS:
                clear = str(getattr(row, column) or "")
                setattr(row, column, vault.index_hash(column, clear, key_id=key_id))
            row.index_key_id = key_id
        model.objects.using(db).bulk_update(rows, [*INDEX_COLUMNS, "index_key_id"])
        last = rows[-1].pk


def _seal_subjects(apps: Any, schema_editor: Any) -> None:
    from fhirlink import vault

    model = apps.get_model("fhirlink", "Connection")
    db = schema_editor.connection.alias
    for row in model.objects.using(db).exclude(oidc_subject="").only("pk", "oidc_subject"):
        sealed = vault.seal(row.oidc_subject, aad=f"fhirlink.connection:{row.pk}:oidc_subject")
        model.objects.using(db).filter(pk=row.pk).update(
            oidc_subject_blob=sealed.blob, oidc_subject_key_id=sealed.key_id
        )


def _open_subjects(apps: Any, schema_editor: Any) -> None:
    from fhirlink import vault

    model = apps.get_model("fhirlink", "Connection")
    db = schema_editor.connection.alias
    rows = model.objects.using(db).exclude(oidc_subject_blob=None)
    for row in rows.only("pk", "oidc_subject_blob", "oidc_subject_key_id"):
        clear = vault.open_sealed(
            row.oidc_subject_blob,
            key_id=row.oidc_subject_key_id,
            aad=f"fhirlink.connection:{row.pk}:oidc_subject",
        )
        model.objects.using(db).filter(pk=row.pk).update(oidc_subject=clear)


class Migration(migrations.Migration):
    dependencies = [
        ("fhirlink", "0005_review_state"),
    ]

    operations = [
        # --- the store's filter columns ---------------------------------------------------------
        migrations.AddField(
            model_name="syncedresource",
            name="index_key_id",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.RunPython(_hash_existing, migrations.RunPython.noop, elidable=False),
        *[
            migrations.AlterField(
                model_name="syncedresource",
                name=column,
                field=fhirlink.models.store.IndexHashField(blank=True, max_length=32),
            )
            for column in INDEX_COLUMNS
        ],
        migrations.RemoveField(model_name="syncedresource", name="issued_at"),
        migrations.RemoveField(model_name="syncedresource", name="last_updated"),
        # --- the EHR login name ---------------------------------------------------------------
        migrations.AddField(
            model_name="connection",
            name="oidc_subject_blob",
            field=models.BinaryField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="connection",
            name="oidc_subject_key_id",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.RunPython(_seal_subjects, _open_subjects, elidable=False),
        migrations.RemoveField(model_name="connection", name="oidc_subject"),
    ]
