"""Cohorts: rules that resolve to patient ids, one selector class per audience.

A selector returns a `Patient` queryset, never clinical data: staff see its size, the expansion
walks its ids in primary-key order in batches. A cohort chosen by clinical data sets
`uses_clinical_data`, and resolving it writes an access-log entry. Adding a cohort is adding a
class here and an `Audience` value.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any, ClassVar

from django.db.models import Q, QuerySet
from django.utils import timezone

from engagement.models import Audience, Campaign
from fhirlink.models import Connection, ConnectionStatus, SyncedResource
from patientportal.accesslog.models import AccessAction, ActorKind
from patientportal.accesslog.services import access_log_record
from patientportal.accounts.models import Patient
from patientportal.consent.models import Purpose
from patientportal.consent.selectors import patients_with_consent

CONNECTED_STATUSES = (ConnectionStatus.ACTIVE, ConnectionStatus.SYNCING)


class CohortSelector:
    audience: ClassVar[str]
    uses_clinical_data: ClassVar[bool] = False

    def patients(self, campaign: Campaign) -> QuerySet[Patient]:
        raise NotImplementedError


class OnePatient(CohortSelector):
    audience = Audience.PATIENT

    def patients(self, campaign: Campaign) -> QuerySet[Patient]:
        return Patient.objects.filter(pk__in=[campaign.patient_id] if campaign.patient_id else [])


class AllPatients(CohortSelector):
    audience = Audience.ALL_PATIENTS

    def patients(self, campaign: Campaign) -> QuerySet[Patient]:
        return Patient.objects.all()


class _ConnectionCohort(CohortSelector):
    """Patients selected through their connections (`fhirlink.models.Connection`)."""

    def connection_filter(self, campaign: Campaign) -> Q:
        raise NotImplementedError

    def patients(self, campaign: Campaign) -> QuerySet[Patient]:
        connections = Connection.objects.filter(self.connection_filter(campaign))
        return Patient.objects.filter(pk__in=connections.values("patient_id"))


class AllConnected(_ConnectionCohort):
    audience = Audience.ALL_CONNECTED

    def connection_filter(self, campaign: Campaign) -> Q:
        return Q(status__in=CONNECTED_STATUSES)


class NeedsReconnection(_ConnectionCohort):
    audience = Audience.NEEDS_RECONNECTION

    def connection_filter(self, campaign: Campaign) -> Q:
        return Q(status=ConnectionStatus.NEEDS_REAUTH)


class StaleData(_ConnectionCohort):
    """Connected patients whose last sync is older than `stale_after_days` (or never ran)."""

    audience = Audience.STALE_DATA

    def connection_filter(self, campaign: Campaign) -> Q:
        cutoff = timezone.now() - timedelta(days=campaign.stale_after_days)
        return Q(status__in=CONNECTED_STATUSES) & (
            Q(last_synced_at__lt=cutoff) | Q(last_synced_at__isnull=True)
        )


class _CodeCohort(CohortSelector):
    """Patients whose synced record holds a live resource with the campaign's code.

    `cohort_code` is "system|code" or a bare code (any system). Matched on the store's clear
    filter columns (`fhirlink.models.SyncedResource`: resource type, code system, code, status),
    never on decrypted payloads; entered-in-error and tombstoned rows never count. The store
    keeps one (standard-first) coding per resource, so a cohort names the code the store keeps
    (e.g. SNOMED CT for Cerner's conditions, RxNorm for medications). Resolving it writes an
    access-log entry (`uses_clinical_data`).
    """

    uses_clinical_data = True
    resource_type: ClassVar[str]
    status_field: ClassVar[str]
    live_statuses: ClassVar[tuple[str, ...]]

    def patients(self, campaign: Campaign) -> QuerySet[Patient]:
        system, _, code = campaign.cohort_code.strip().rpartition("|")
        rows = SyncedResource.objects.live().filter(
            resource_type=self.resource_type,
            code=code.strip(),
            **{f"{self.status_field}__in": self.live_statuses},
        )
        if system.strip():
            rows = rows.filter(code_system=system.strip())
        return Patient.objects.filter(pk__in=rows.values("patient_id"))


class ConditionCode(_CodeCohort):
    audience = Audience.CONDITION_CODE
    resource_type = "Condition"
    status_field = "clinical_status"
    live_statuses = ("active", "recurrence", "relapse")


class MedicationCode(_CodeCohort):
    audience = Audience.MEDICATION_CODE
    resource_type = "MedicationRequest"
    status_field = "status"
    live_statuses = ("active", "on-hold")


SELECTORS: dict[str, CohortSelector] = {
    selector.audience: selector
    for selector in (
        OnePatient(),
        AllPatients(),
        AllConnected(),
        NeedsReconnection(),
        StaleData(),
        ConditionCode(),
        MedicationCode(),
    )
}


def selector_for(audience: str) -> CohortSelector:
    return SELECTORS[audience]


def cohort_patients(*, campaign: Campaign, purpose: str, log: bool = True) -> QuerySet[Patient]:
    """The campaign's patients (a lazy queryset); a clinical-data cohort writes an access-log
    entry (`log=False` for the later batches of one expansion: one entry per resolution)."""
    selector = selector_for(campaign.audience)
    queryset = selector.patients(campaign)
    if selector.uses_clinical_data and log:
        access_log_record(
            actor_kind=ActorKind.SYSTEM,
            actor_label="engagement.cohort",
            action=AccessAction.SEARCH,
            patient=None,
            purpose=Purpose.ENGAGEMENT,
            query={"cohort": campaign.audience, "campaign": campaign.pk, "use": purpose},
        )
    return queryset


def consenting_patient_ids(*, patient_ids: Iterable[Any]) -> set[str]:
    """Which of these patients hold the engagement consent now (one query), as strings."""
    granted = patients_with_consent(purpose=Purpose.ENGAGEMENT).filter(patient_id__in=patient_ids)
    return {str(pk) for pk in granted.values_list("patient_id", flat=True)}
