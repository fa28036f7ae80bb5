"""The attachments a run's DocumentReferences name, and what an error about one may say."""

from __future__ import annotations

import re

from fhirlink import vault
from fhirlink.conf import sync_settings
from fhirlink.models import SyncedResource, SyncRun
from fhirlink.services.sync.store import resource_payload

# A FHIR id (R4 `id`): what an error may name. Anything else taken from a URL is left out.
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def attachment_urls(run: SyncRun) -> tuple[dict[str, str], dict[str, tuple[str, int]]]:
    """This server's Binary URLs the stored DocumentReferences name and the connection has
    not stored, of an allowed content type: {URL: a DocumentReference naming it}, and apart
    those whose declared size is over the bound {URL: (DocumentReference, size)}."""
    cfg = sync_settings()
    allowed = set(cfg.binary_content_types)
    have = set(
        SyncedResource.objects.filter(
            connection_id=run.connection_id, resource_type="Binary"
        ).values_list("fhir_id", flat=True)
    )
    connection = run.connection
    base = (connection.fhir_base_url or connection.health_system.fhir_base_url).rstrip("/")
    base += "/Binary/"
    urls: dict[str, str] = {}
    too_large: dict[str, tuple[str, int]] = {}
    try:
        cipher = vault.patient_cipher(patient_id=connection.patient_id, create=False)
    except vault.KeyDestroyed:
        return {}, {}
    rows = SyncedResource.objects.filter(
        connection_id=run.connection_id, resource_type="DocumentReference", deleted_at__isnull=True
    ).order_by("fhir_id")
    for row in rows.iterator(chunk_size=200):
        for content in resource_payload(row, cipher=cipher).get("content") or []:
            attachment = content.get("attachment") if isinstance(content, dict) else None
            if not isinstance(attachment, dict):
                continue
            url = str(attachment.get("url") or "")
            if not url.startswith(base) or url[len(base) :] in have:
                continue  # only this server's Binary (never another host), not stored yet
            if allowed and str(attachment.get("contentType", "")).split(";")[0] not in allowed:
                continue
            size = attachment.get("size")
            if isinstance(size, int) and size > cfg.max_binary_bytes:
                too_large.setdefault(url, (row.fhir_id, size))
                continue
            urls.setdefault(url, row.fhir_id)
    return urls, too_large


def binary_names(url: str, document: str) -> dict[str, str]:
    """What an error about the Binary at `url` may say: the two FHIR ids, never the URL."""
    names: dict[str, str] = {}
    binary_id = url.rpartition("/Binary/")[2]
    if FHIR_ID.fullmatch(binary_id):
        names["id"] = binary_id
    if FHIR_ID.fullmatch(document):
        names["document"] = f"DocumentReference/{document}"
    return names
