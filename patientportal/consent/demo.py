"""Demo consent documents (version 1 of each purpose) and the demo patient's consents.

Idempotent: documents are created once; the demo patient's consents are granted only if they
have never been given or withdrawn (a patient who revoked in the demo stays revoked).
"""

from __future__ import annotations

from datetime import datetime
from typing import TextIO

from django.utils import timezone

from patientportal.accounts.models import Patient

from .models import ConsentDocument, PatientConsent, Purpose
from .services import consent_grant

DOCUMENTS: dict[str, tuple[str, str]] = {
    Purpose.EHR_SYNC: (
        "Sync my health record",
        "I allow Patient Portal to copy the parts of my health record I choose from my health "
        "system, keep them encrypted, and refresh them until I disconnect or withdraw this "
        "consent. Withdrawing stops any sync at once.",
    ),
    Purpose.CARE_TEAM_ACCESS: (
        "Care-team access",
        "I allow the members of my care team to read the records I synced, read-only. Every "
        "time they open my chart it appears in my access log.",
    ),
    Purpose.ENGAGEMENT: (
        "Reminders",
        "I allow Patient Portal to send me reminders and messages about my care. Withdrawing "
        "cancels every pending reminder.",
    ),
    Purpose.AI_PROCESSING: (
        "AI processing",
        "I allow my synced records to be processed by automated tools that summarise them. "
        "Offered only where the operator has enabled it.",
    ),
}
DEMO_PATIENT_PURPOSES = (Purpose.EHR_SYNC, Purpose.CARE_TEAM_ACCESS, Purpose.ENGAGEMENT)


def seed(stdout: TextIO) -> None:
    from patientportal.accounts.demo import DEMO_PATIENT_EMAIL

    effective_at = timezone.make_aware(datetime(2026, 1, 1), timezone.get_fixed_timezone(0))
    for purpose, (title, body) in DOCUMENTS.items():
        ConsentDocument.objects.get_or_create(
            purpose=purpose,
            version=1,
            language="en",
            defaults={"title": title, "body": body, "effective_at": effective_at},
        )
    patient = Patient.objects.filter(user__email=DEMO_PATIENT_EMAIL).first()
    granted = 0
    if patient is not None:
        for purpose in DEMO_PATIENT_PURPOSES:
            if not PatientConsent.objects.filter(patient=patient, purpose=purpose).exists():
                consent_grant(patient=patient, purpose=purpose, version=1, language="en")
                granted += 1
    stdout.write(f"Seeded consent documents; granted {granted} demo patient consent(s).\n")
