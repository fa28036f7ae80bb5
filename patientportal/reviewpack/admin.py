"""Admin: the security-review packs, read-only, kept with each health system's review state."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from .models import ReviewPack
from .services.pack import pack_json_bytes
from .services.render import pack_html


def _summary(content: dict[str, Any]) -> str:
    counts: dict[str, int] = {}
    for row in content.get("controls", {}).get("rows", []):
        counts[row["result"]] = counts.get(row["result"], 0) + 1
    return ", ".join(f"{n} {result}" for result, n in sorted(counts.items())) or "-"


def review_packs_html(health_system: Any) -> str:
    """The packs kept for a health system, newest first, linked (its admin change page)."""
    packs = ReviewPack.objects.filter(health_system=health_system).order_by("-generated_at")[:20]
    if not packs:
        return "none yet (action: Generate the security review pack)"
    return format_html_join(
        mark_safe("<br>"),
        '<a href="{}">{} ({})</a> SHA-256 <code>{}</code>',
        (
            (
                reverse("admin:reviewpack_reviewpack_change", args=[p.pk]),
                f"{p.generated_at:%Y-%m-%d %H:%M}",
                p.get_review_state_display(),
                p.sha256,
            )
            for p in packs
        ),
    )


@admin.register(ReviewPack)
class ReviewPackAdmin(admin.ModelAdmin[ReviewPack]):
    # The pack describes the system; its access-log sample is of a synthetic patient only.
    serves_patient_data = False
    list_display = ["health_system", "generated_at", "review_state", "controls", "short_sha256"]
    list_filter = ["review_state", "health_system"]
    fields = (
        "health_system",
        "generated_at",
        "generated_by",
        "review_state",
        "source_commit",
        "sha256",
        "controls",
        "vulnerability_scan",
    )
    readonly_fields = fields
    actions = ["download_json", "download_html"]

    @admin.display(description="controls")
    def controls(self, obj: ReviewPack) -> str:
        return _summary(obj.content)

    @admin.display(description="vulnerability scan")
    def vulnerability_scan(self, obj: ReviewPack) -> str:
        scan = obj.content.get("vulnerabilities", {})
        if scan.get("status") == "run":
            return f"{len(scan.get('findings', []))} finding(s), {scan.get('date', '')}"
        return f"not run: {scan.get('reason', '')}"

    @admin.display(description="SHA-256")
    def short_sha256(self, obj: ReviewPack) -> str:
        return format_html("<code>{}</code>", obj.sha256[:16])

    def _one(self, request: HttpRequest, queryset: QuerySet[ReviewPack]) -> ReviewPack | None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one pack.", level="warning")
            return None
        return queryset.first()

    @admin.action(description="Download pack.json")
    def download_json(self, request: HttpRequest, queryset: QuerySet[ReviewPack]) -> Any:
        pack = self._one(request, queryset)
        if pack is None:
            return None
        response = HttpResponse(pack_json_bytes(pack.content), content_type="application/json")
        response["Content-Disposition"] = (
            f'attachment; filename="review-pack-{pack.generated_at:%Y%m%d-%H%M}.json"'
        )
        return response

    @admin.action(description="Download pack.html")
    def download_html(self, request: HttpRequest, queryset: QuerySet[ReviewPack]) -> Any:
        pack = self._one(request, queryset)
        if pack is None:
            return None
        response = HttpResponse(pack_html(pack.content, sha256=pack.sha256))
        response["Content-Disposition"] = (
            f'attachment; filename="review-pack-{pack.generated_at:%Y%m%d-%H%M}.html"'
        )
        return response

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
