"""The outbox at scale: one reminder to a cohort of N patients, expanded in batches by one
process and dispatched by several worker processes, then checked for duplicates.

Each phase runs in fresh processes (spawned), so the peak memory reported is the phase's own
(the setup that creates N patients does not count). Use a scratch database: the cohort is "all
patients", and the check counts the bench occurrence's rows.
"""

from __future__ import annotations

import multiprocessing
import resource
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

BENCH_EMAIL_DOMAIN = "bench.invalid"


class Writer(Protocol):
    def write(self, text: str) -> Any: ...


@dataclass(frozen=True)
class PhaseResult:
    seconds: float
    rows: int
    peak_rss_mib: float


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _expand_in_child(occurrence_id: int, batch_size: int, queue: Any) -> None:
    import django

    django.setup()
    from engagement.services import occurrence_expand

    started = time.perf_counter()
    result = occurrence_expand(occurrence_id=occurrence_id, batch_size=batch_size)
    queue.put(PhaseResult(time.perf_counter() - started, result.deliveries, _peak_rss_mib()))


def _dispatch_in_child(batch_size: int, queue: Any) -> None:
    import django

    django.setup()
    from engagement.services import deliveries_dispatch

    started = time.perf_counter()
    total = 0
    while True:
        stats = deliveries_dispatch(batch_size=batch_size, max_seconds=3600)
        total += stats.claimed
        if stats.claimed == 0:
            break
    queue.put(PhaseResult(time.perf_counter() - started, total, _peak_rss_mib()))


def ensure_patients(count: int, stdout: Writer) -> None:
    """Creates bench patients (with the engagement consent) up to `count`, in chunks."""
    from django.db import transaction
    from django.utils import timezone

    from patientportal.accounts.models import Patient, User
    from patientportal.consent.models import (
        ConsentDocument,
        ConsentStatus,
        PatientConsent,
        Purpose,
    )

    document, _ = ConsentDocument.objects.get_or_create(
        purpose=Purpose.ENGAGEMENT,
        version=1,
        language="en",
        defaults={
            "title": "Reminders",
            "body": "Benchmark consent document.",
            "effective_at": timezone.now() - timedelta(days=1),
        },
    )
    existing = User.objects.filter(email__endswith=f"@{BENCH_EMAIL_DOMAIN}").count()
    chunk = 5000
    for start in range(existing, count, chunk):
        end = min(start + chunk, count)
        with transaction.atomic():
            users = User.objects.bulk_create(
                [
                    User(email=f"bench-{i}@{BENCH_EMAIL_DOMAIN}", password="!")
                    for i in range(start, end)
                ]
            )
            patients = Patient.objects.bulk_create(
                [Patient(user=u, time_zone="UTC") for u in users]
            )
            now = timezone.now()
            PatientConsent.objects.bulk_create(
                [
                    PatientConsent(
                        patient=p,
                        purpose=Purpose.ENGAGEMENT,
                        status=ConsentStatus.GRANTED,
                        version=document.version,
                        updated_at=now,
                    )
                    for p in patients
                ]
            )
        stdout.write(f"  created bench patients {start}..{end - 1}\n")


def run(
    *,
    patients: int,
    workers: int,
    expand_batch: int,
    dispatch_batch: int,
    stdout: Writer,
) -> dict[str, Any]:
    from django.db import connection
    from django.db.models import Count

    from engagement.models import Audience, Campaign, Delivery, MessageTemplate, Occurrence
    from engagement.services import campaign_schedule, occurrences_plan
    from patientportal.accounts.models import Patient

    stdout.write(f"Setting up {patients} patients...\n")
    ensure_patients(patients, stdout)
    cohort = Patient.objects.count()
    template, _ = MessageTemplate.objects.get_or_create(
        name="Benchmark", defaults={"title": "Benchmark", "body": "Benchmark reminder."}
    )
    # Due now for the (UTC) bench patients.
    local = datetime.now(UTC) - timedelta(minutes=1)
    campaign = Campaign.objects.create(
        name=f"Benchmark {datetime.now(UTC):%Y-%m-%d %H:%M:%S}",
        template=template,
        audience=Audience.ALL_PATIENTS,
        starts_on=local.date(),
        send_time=local.time().replace(second=0, microsecond=0),
        send_push=False,
        send_email=False,
        send_inbox=True,
    )
    campaign_schedule(campaign=campaign)
    # As if scheduled yesterday, so today's occurrence is not "already past when scheduled".
    Campaign.objects.filter(pk=campaign.pk).update(activated_at=local - timedelta(days=1))
    occurrences_plan()
    occurrence = Occurrence.objects.get(campaign=campaign)
    connection.close()

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    stdout.write(f"Expanding to {cohort} patients in batches of {expand_batch}...\n")
    expander = ctx.Process(target=_expand_in_child, args=(occurrence.pk, expand_batch, queue))
    expander.start()
    expansion: PhaseResult = queue.get()
    expander.join()

    stdout.write(f"Dispatching with {workers} worker processes...\n")
    started = time.perf_counter()
    procs = [
        ctx.Process(target=_dispatch_in_child, args=(dispatch_batch, queue)) for _ in range(workers)
    ]
    for proc in procs:
        proc.start()
    results: list[PhaseResult] = [queue.get() for _ in procs]
    for proc in procs:
        proc.join()
    dispatch_seconds = time.perf_counter() - started

    rows = Delivery.objects.filter(occurrence=occurrence)
    total = rows.count()
    distinct = rows.values("patient_id").distinct().count()
    delivered = rows.filter(status="delivered").count()
    duplicates = (
        rows.values("patient_id", "channel").annotate(n=Count("id")).filter(n__gt=1).count()
    )
    reclaimed = rows.filter(attempts__gt=1).count()
    return {
        "cohort": cohort,
        "rows": total,
        "distinct_patients": distinct,
        "delivered": delivered,
        "duplicates": duplicates,
        "claimed_twice": reclaimed,
        "expand_seconds": expansion.seconds,
        "expand_rate": expansion.rows / expansion.seconds if expansion.seconds else 0.0,
        "expand_peak_mib": expansion.peak_rss_mib,
        "dispatch_seconds": dispatch_seconds,
        "dispatch_rate": delivered / dispatch_seconds if dispatch_seconds else 0.0,
        "dispatch_per_worker": [r.rows for r in results],
        "dispatch_peak_mib": max(r.peak_rss_mib for r in results),
        "database": connection.vendor,
    }
