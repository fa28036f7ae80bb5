"""fhirlink reads."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from fhirlink.exceptions import ConnectionNotFound
from fhirlink.models import Connection, HealthSystem
from patientportal.accounts.models import Patient


def health_system_list_enabled() -> QuerySet[HealthSystem]:
    return HealthSystem.objects.filter(enabled=True).order_by("name")


def connection_list_for_patient(*, patient: Patient) -> QuerySet[Connection]:
    return Connection.objects.filter(patient=patient).select_related("health_system")


def connection_get_for_patient(*, patient: Patient, connection_id: Any) -> Connection:
    connection = (
        Connection.objects.select_related("health_system")
        .filter(pk=connection_id, patient=patient)
        .first()
    )
    if connection is None:
        raise ConnectionNotFound()
    return connection
