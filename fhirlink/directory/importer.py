"""Import a published endpoint directory: Oracle Health's bundle (`Endpoint` + `Organization`,
one endpoint per organisation) or a SMART App Launch 2.2 User-access Brands bundle (brands and
facilities as `Organization`, `partOf` their brand, logos in the brand extension).

Idempotent: entries are keyed by (source, Organization id @ Endpoint id); a re-import reports
what was added, changed (renamed among them) and retired. A retired entry is never deleted: its
health system stops taking new connections, and its patients' connections are marked as needing
reconnection and their patients told, through `hooks.needs_reauth_notify`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from fhirlink import hooks, http
from fhirlink.directory.text import search_text
from fhirlink.models import (
    Connection,
    ConnectionStatus,
    DirectoryEntry,
    DirectoryImport,
    EntryStatus,
    HealthSystem,
)
from patientportal.core.errors import ValidationFailed

logger = logging.getLogger(__name__)

BRAND_EXTENSION = "http://hl7.org/fhir/StructureDefinition/organization-brand"
LIVE_CONNECTION_STATUSES = (
    ConnectionStatus.PENDING,
    ConnectionStatus.ACTIVE,
    ConnectionStatus.SYNCING,
)
COMPARED_FIELDS = (
    "identifier",
    "name",
    "aliases",
    "city",
    "state",
    "postal_code",
    "logo_url",
    "tenant",
    "fhir_base_url",
)
DETAIL_LIMIT = 200


@dataclass(frozen=True)
class ParsedEntry:
    external_id: str
    name: str
    fhir_base_url: str
    tenant: str = ""
    identifier: str = ""
    aliases: list[str] = field(default_factory=list)
    city: str = ""
    state: str = ""
    postal_code: str = ""
    logo_url: str = ""


def _tenant(address: str) -> str:
    path = address.rstrip("/")
    return path.split("/r4/", 1)[1].split("/", 1)[0] if "/r4/" in path else ""


def _brand_logo(organization: dict[str, Any]) -> str:
    for ext in organization.get("extension") or []:
        if ext.get("url") != BRAND_EXTENSION:
            continue
        for sub in ext.get("extension") or []:
            if sub.get("url") == "brandLogo" and isinstance(sub.get("valueUrl"), str):
                return str(sub["valueUrl"])[:500]
    return ""


def _refs(resources: dict[str, dict[str, Any]], kind: str, reference: Any) -> dict[str, Any] | None:
    """The resource a Reference names: `Type/id`, or an absolute URL ending in `Type/id`."""
    if not isinstance(reference, dict) or not isinstance(reference.get("reference"), str):
        return None
    ref = reference["reference"]
    found = resources.get(ref) or resources.get(f"{kind}/{ref.rsplit('/', 1)[-1]}")
    return found if found is not None and found.get("resourceType") == kind else None


def bundle_parse(bundle: Any) -> list[ParsedEntry]:
    """Directory entries of a FHIR Bundle (Oracle's format or User-access Brands)."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise ValidationFailed("The file is not a FHIR Bundle.", extra={"field": "bundle"})
    resources: dict[str, dict[str, Any]] = {}
    organizations: list[dict[str, Any]] = []
    for entry in bundle.get("entry") or []:
        resource = (entry or {}).get("resource") or {}
        kind, rid = resource.get("resourceType"), resource.get("id")
        if kind not in ("Endpoint", "Organization") or not isinstance(rid, str):
            continue
        resources[f"{kind}/{rid}"] = resource
        if isinstance(entry.get("fullUrl"), str):
            resources[entry["fullUrl"]] = resource
        if kind == "Organization":
            organizations.append(resource)

    def endpoints_of(org: dict[str, Any], depth: int = 0) -> list[dict[str, Any]]:
        refs = (_refs(resources, "Endpoint", r) for r in org.get("endpoint") or [])
        found = [e for e in refs if e]
        if not found and depth < 3:  # a facility inherits its brand's endpoints (partOf)
            parent = _refs(resources, "Organization", org.get("partOf"))
            if parent is not None:
                return endpoints_of(parent, depth + 1)
        return found

    parsed: dict[str, ParsedEntry] = {}
    for org in organizations:
        if org.get("active") is False or not isinstance(org.get("name"), str):
            continue
        address = next(iter(org.get("address") or []), {}) or {}
        identifier = next(iter(org.get("identifier") or []), {}) or {}
        parent = _refs(resources, "Organization", org.get("partOf"))
        logo = _brand_logo(org) or (_brand_logo(parent) if parent else "")
        for endpoint in endpoints_of(org):
            url = endpoint.get("address")
            if endpoint.get("status", "active") != "active" or not isinstance(url, str):
                continue
            external_id = f"{org['id']}@{endpoint.get('id', '')}"[:300]
            parsed[external_id] = ParsedEntry(
                external_id=external_id,
                name=org["name"].strip()[:300],
                fhir_base_url=url.strip().rstrip("/")[:500],
                tenant=_tenant(url)[:100],
                identifier=str(identifier.get("value") or "")[:200],
                aliases=[str(a)[:300] for a in org.get("alias") or [] if isinstance(a, str)],
                city=str(address.get("city") or "").strip()[:120],
                state=str(address.get("state") or "").strip()[:40],
                postal_code=str(address.get("postalCode") or "").strip()[:20],
                logo_url=logo,
            )
    return list(parsed.values())


def bundle_release(bundle: dict[str, Any], raw: bytes) -> str:
    updated = (bundle.get("meta") or {}).get("lastUpdated")
    if isinstance(updated, str) and updated:
        return updated[:64]
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:16]


def directory_fetch(*, url: str) -> bytes:
    """The published bundle, through the one outbound HTTP client (no redirects, timeouts)."""
    return http.request("GET", url, accept="application/fhir+json, application/json").content


@dataclass
class ImportReport:
    source: str
    release: str
    total: int = 0
    added: list[str] = field(default_factory=list)
    changed: list[dict[str, Any]] = field(default_factory=list)
    renamed: list[list[str]] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    connections_marked: int = 0


def _values(parsed: ParsedEntry) -> dict[str, Any]:
    values = asdict(parsed)
    values.pop("external_id")
    return values


def directory_import(
    *, raw: bytes, source: str, origin: str, release: str | None = None
) -> DirectoryImport:
    """Upsert the bundle's entries for `source`, retire those it no longer lists."""
    try:
        bundle = json.loads(raw)
    except ValueError as exc:
        raise ValidationFailed("The file is not JSON.", extra={"field": "bundle"}) from exc
    parsed = bundle_parse(bundle)
    if not parsed:
        # An empty or foreign file must not retire a whole directory.
        raise ValidationFailed("The bundle lists no endpoint.", extra={"field": "bundle"})
    report = ImportReport(source=source, release=release or bundle_release(bundle, raw))
    report.total = len(parsed)
    now = timezone.now()
    with transaction.atomic():
        existing = {
            e.external_id: e
            for e in DirectoryEntry.objects.select_for_update().filter(source=source)
        }
        by_base = {
            hs.fhir_base_url.rstrip("/"): hs.pk
            for hs in HealthSystem.objects.filter(directory_entry__isnull=True).only(
                "pk", "fhir_base_url"
            )
        }
        to_create: list[DirectoryEntry] = []
        to_update: list[DirectoryEntry] = []
        for item in parsed:
            values = _values(item)
            row = existing.get(item.external_id)
            if row is None:
                row = DirectoryEntry(source=source, external_id=item.external_id, **values)
                row.health_system_id = by_base.pop(item.fhir_base_url.rstrip("/"), None)
                to_create.append(row)
                report.added.append(item.name)
            else:
                diff = [f for f in COMPARED_FIELDS if getattr(row, f) != values[f]]
                revived = row.status == EntryStatus.RETIRED
                if not diff and not revived and row.release == report.release:
                    continue
                if diff:
                    report.changed.append({"name": item.name, "fields": diff})
                    if "name" in diff:
                        report.renamed.append([row.name, item.name])
                if revived:
                    report.added.append(item.name)
                for name, value in values.items():
                    setattr(row, name, value)
                row.status, row.retired_at = EntryStatus.ACTIVE, None
                to_update.append(row)
            row.release = report.release
            row.search_text = search_text(
                name=row.name, aliases=row.aliases, city=row.city, state=row.state
            )
            row.updated_at = now
        DirectoryEntry.objects.bulk_create(to_create, batch_size=1000)
        DirectoryEntry.objects.bulk_update(
            to_update,
            [*COMPARED_FIELDS, "release", "search_text", "status", "retired_at", "updated_at"],
            batch_size=1000,
        )
        seen = {item.external_id for item in parsed}
        gone = [
            e for key, e in existing.items() if key not in seen and e.status == EntryStatus.ACTIVE
        ]
        report.retired = [e.name for e in gone]
        DirectoryEntry.objects.filter(pk__in=[e.pk for e in gone]).update(
            status=EntryStatus.RETIRED, retired_at=now, updated_at=now
        )
        report.connections_marked = _retire_connections(entries=gone, now=now)
        _sync_materialised_names(entries=to_update)
        return DirectoryImport.objects.create(
            source=source,
            release=report.release,
            origin=origin[:500],
            total=report.total,
            added=len(report.added),
            changed=len(report.changed),
            renamed=len(report.renamed),
            retired=len(report.retired),
            connections_marked=report.connections_marked,
            details={
                "added": report.added[:DETAIL_LIMIT],
                "changed": report.changed[:DETAIL_LIMIT],
                "renamed": report.renamed[:DETAIL_LIMIT],
                "retired": report.retired[:DETAIL_LIMIT],
            },
        )


def _retire_connections(*, entries: list[DirectoryEntry], now: Any) -> int:
    """Stop new launches to retired endpoints; mark their live connections and tell patients."""
    hs_ids = [e.health_system_id for e in entries if e.health_system_id]
    if not hs_ids:
        return 0
    # Only the health systems the directory created; a hand registration stays the operator's.
    created = [e.pk for e in entries if e.health_system_id == e.pk]
    HealthSystem.objects.filter(pk__in=created).update(enabled=False)
    ids = list(
        Connection.objects.select_for_update()
        .filter(health_system_id__in=hs_ids, status__in=LIVE_CONNECTION_STATUSES)
        .values_list("pk", flat=True)
    )
    Connection.objects.filter(pk__in=ids).update(
        status=ConnectionStatus.NEEDS_REAUTH, needs_reauth_at=now
    )
    for connection_id in ids:
        cid = str(connection_id)
        transaction.on_commit(lambda cid=cid: hooks.needs_reauth_notify(connection_id=cid))  # type: ignore[misc]
    logger.info("directory: %d connections marked (retired endpoints)", len(ids))
    return len(ids)


def _sync_materialised_names(*, entries: list[DirectoryEntry]) -> None:
    for entry in entries:
        if entry.health_system_id and entry.health_system_id == entry.pk:
            HealthSystem.objects.filter(pk=entry.pk).update(name=entry.name[:200])


def directory_default_url() -> str:
    return str(settings.FHIRLINK_DIRECTORY_URL)
