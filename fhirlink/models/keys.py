"""Per-patient data keys for synced payloads (see fhirlink.vault)."""

from __future__ import annotations

from django.db import models


class PatientDataKey(models.Model):
    """The patient's payload data key, wrapped by the KEK `key_id`. Deleting the row is the
    cryptographic erasure of every payload encrypted with it."""

    patient = models.OneToOneField(
        "accounts.Patient", on_delete=models.CASCADE, related_name="fhirlink_data_key"
    )
    key_id = models.CharField(max_length=64)
    wrapped_key = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"data key for patient {str(self.patient_id)[:8]}"
