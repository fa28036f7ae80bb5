"""The security-review packs generated for each health system, kept with the review state."""

from __future__ import annotations

import uuid

from django.db import models

from fhirlink.models.health_systems import ReviewState


class ReviewPack(models.Model):
    """One generated pack: its machine-readable content (`pack.json`) and that file's SHA-256.

    The HTML is a rendering of `content` (the admin renders it again on demand), so the JSON and
    its hash are the evidence. Never edited; kept when the health system is held (PROTECT).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    health_system = models.ForeignKey(
        "fhirlink.HealthSystem", on_delete=models.PROTECT, related_name="review_packs"
    )
    generated_at = models.DateTimeField()
    generated_by = models.CharField(max_length=150, blank=True)
    review_state = models.CharField(max_length=16, choices=ReviewState.choices)
    source_commit = models.CharField(max_length=64, blank=True)
    sha256 = models.CharField(max_length=64, help_text="SHA-256 of pack.json as written.")
    content = models.JSONField()

    class Meta:
        ordering = ["-generated_at"]
        indexes = [models.Index(fields=["health_system", "-generated_at"], name="reviewpack_hs")]
        verbose_name = "security review pack"

    def __str__(self) -> str:
        return f"review pack {self.generated_at:%Y-%m-%d %H:%M} ({self.get_review_state_display()})"
