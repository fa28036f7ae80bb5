"""Cohorts: rules that resolve to patient ids, one selector class per audience.

A selector returns a `Patient` queryset, never clinical data: staff see its size, the expansion
walks its ids in primary-key order in batches. A cohort chosen by clinical data sets
`uses_clinical_data`, and resolving it writes an access-log entry. Adding a cohort is adding a
class here and an `Audience` value.
"""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

from django.db.models import Q, QuerySet
from django.utils import timezone

from engagement import integrations
from engagement.models import Audience, Campaign
from patientportal.accounts.models import Patient


class CohortUnavailable(Exception):
    """The cohort's data source does not exist (yet) on this installation."""


class CohortSelector:
    audience: ClassVar[str]
    uses_clinical_data: ClassVar[bool] = False

    def available(self) -> bool:
        return True

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
    """Patients selected through `fhirlink.models.Connection` (unavailable until it exists)."""

    def available(self) -> bool:
        return integrations.connection_model() is not None

    def connection_filter(self, campaign: Campaign) -> Q:
        raise NotImplementedError

    def patients(self, campaign: Campaign) -> QuerySet[Patient]:
        model = integrations.connection_model()
        if model is None:
            raise CohortUnavailable(self.audience)
        connections = model._default_manager.filter(self.connection_filter(campaign))
        return Patient.objects.filter(pk__in=connections.values("patient_id"))


class AllConnected(_ConnectionCohort):
    audience = Audience.ALL_CONNECTED

    def connection_filter(self, campaign: Campaign) -> Q:
        return Q(status__in=integrations.CONNECTED_STATUSES)


class NeedsReconnection(_ConnectionCohort):
    audience = Audience.NEEDS_RECONNECTION

    def connection_filter(self, campaign: Campaign) -> Q:
        return Q(status=integrations.NEEDS_REAUTH_STATUS)


class StaleData(_ConnectionCohort):
    """Connected patients whose last sync is older than `stale_after_days` (or never ran)."""

    audience = Audience.STALE_DATA

    def available(self) -> bool:
        model = integrations.connection_model()
        return model is not None and self._last_sync_field(model) is not None

    @staticmethod
    def _last_sync_field(model: type) -> str | None:
        return integrations.connection_field(model, integrations.LAST_SYNC_FIELDS)

    def connection_filter(self, campaign: Campaign) -> Q:
        model = integrations.connection_model()
        field = self._last_sync_field(model) if model is not None else None
        if field is None:
            raise CohortUnavailable(self.audience)
        cutoff = timezone.now() - timedelta(days=campaign.stale_after_days)
        return Q(status__in=integrations.CONNECTED_STATUSES) & (
            Q(**{f"{field}__lt": cutoff}) | Q(**{f"{field}__isnull": True})
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

    def available(self) -> bool:
        return integrations.synced_resource_model() is not None

    def patients(self, campaign: Campaign) -> QuerySet[Patient]:
        model = integrations.synced_resource_model()
        if model is None:
            raise CohortUnavailable(self.audience)
        system, _, code = campaign.cohort_code.strip().rpartition("|")
        rows = model.objects.live().filter(
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
    if not selector.available():
        raise CohortUnavailable(campaign.audience)
    queryset = selector.patients(campaign)
    if selector.uses_clinical_data and log:
        integrations.access_log_record(
            actor_kind="system",
            actor_label="engagement.cohort",
            action="search",
            patient=None,
            purpose=integrations.ENGAGEMENT_PURPOSE,
            query={"cohort": campaign.audience, "campaign": campaign.pk, "use": purpose},
        )
    return queryset
