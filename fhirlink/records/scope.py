"""Whose records a read covers. A portal account can hold the records of several people: the
account holder's own (connections with relationship "self", at any number of health systems,
read together) and each record they manage (a child's, a parent's: one connection each, read on
its own). Every records read (API, export, staff chart) passes either the account's patient (all
of it: staff, the account's own erasure) or a `RecordScope` narrowed to one person; the selectors
filter by its connections."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from fhirlink.models import Connection, Relationship
from patientportal.core.errors import NotFound, ValidationFailed

SELF = "self"


@dataclass(frozen=True)
class RecordScope:
    """One account's patient narrowed to one person. `pk` is the patient's, so it goes wherever
    a patient does (payload decryption uses the account's data key)."""

    patient: Any
    person: str  # "self", or the id of one of the account's managed connections

    @property
    def pk(self) -> Any:
        return self.patient.pk


def person_filter(person: str) -> dict[str, Any]:
    """The SyncedResource filter for a person: a join on the row's connection for "self" (every
    health system together, no query of its own), one connection for a managed record."""
    if person == SELF:
        return {"connection__relationship": Relationship.SELF}
    return {"connection_id": person}


def record_scope(*, patient: Any, person: str | None) -> RecordScope:
    """The scope for `?person=`: absent or "self" is the account holder's own records; a
    connection id is that managed record. Raises ValidationFailed (`invalid_person`) for a
    malformed value and NotFound (`person_not_found`) for an id that is not one of this
    account's managed records (another account's id answers exactly like a missing one)."""
    if person in (None, "", SELF):
        return RecordScope(patient, SELF)
    try:
        connection_id = uuid.UUID(str(person))
    except ValueError:
        raise ValidationFailed(
            "person must be 'self' or the id of a record you manage.", code="invalid_person"
        ) from None
    found = (
        Connection.objects.filter(patient=patient, pk=connection_id)
        .exclude(relationship=Relationship.SELF)
        .exists()
    )
    if not found:
        raise NotFound("No such person among the records you manage.", code="person_not_found")
    return RecordScope(patient, str(connection_id))


def scope_person(patient: Any) -> str | None:
    """The person a selector must keep to: a scope's, or None for a whole account."""
    return patient.person if isinstance(patient, RecordScope) else None
