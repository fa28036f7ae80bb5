"""Whose record each connection holds, as the account holder sees it (issue #20): the
relationship the callback set (self / managed) refined by the account holder (child, parent,
partner, other), and their own label for it. The label is a name, so it is encrypted with the
account's data key, like the synced records (a purge erases it with them)."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from fhirlink import vault
from fhirlink.models import MANAGED_RELATIONSHIPS, Connection, Relationship
from fhirlink.selectors import connection_get_for_patient
from patientportal.core.errors import Conflict, ValidationFailed

LABEL_MAX = 60


def _label_aad(connection: Connection) -> str:
    return f"fhirlink.connection:{connection.pk}:label"


def connection_label(connection: Connection) -> str | None:
    """The account holder's label of the connection's person (None when unset or erased)."""
    if not connection.label_blob:
        return None
    try:
        cipher = vault.patient_cipher(patient_id=connection.patient_id, create=False)
        return cipher.decrypt(bytes(connection.label_blob), aad=_label_aad(connection)).decode()
    except vault.KeyDestroyed:
        return None


def connection_person_set(
    *,
    patient: Any,
    connection_id: Any,
    label: str | None = None,
    relationship: str | None = None,
) -> Connection:
    """Set the label ("" clears it) and/or refine a managed record's relationship. A record the
    EHR said is the account holder's own stays `self`; a managed one never becomes `self`."""
    with transaction.atomic():
        connection = connection_get_for_patient(patient=patient, connection_id=connection_id)
        connection = Connection.objects.select_for_update().get(pk=connection.pk)
        fields: list[str] = []
        if relationship is not None and relationship != connection.relationship:
            if relationship not in MANAGED_RELATIONSHIPS:
                raise ValidationFailed(
                    "relationship must be one of: "
                    + ", ".join(str(r) for r in MANAGED_RELATIONSHIPS),
                    code="invalid_relationship",
                )
            if connection.relationship == Relationship.SELF:
                raise Conflict(
                    "This is your own record at the health system; it has no relationship.",
                    code="relationship_fixed",
                )
            connection.relationship = relationship
            fields.append("relationship")
        if label is not None:
            label = " ".join(label.split())
            if len(label) > LABEL_MAX:
                raise ValidationFailed(
                    f"label is at most {LABEL_MAX} characters.", code="invalid_label"
                )
            cipher = vault.patient_cipher(patient_id=connection.patient_id)
            connection.label_blob = (
                cipher.encrypt(label.encode(), aad=_label_aad(connection)) if label else None
            )
            fields.append("label_blob")
        if fields:
            connection.save(update_fields=[*fields, "updated_at"])
    return connection
