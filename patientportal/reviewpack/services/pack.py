"""Building, writing and storing a security-review pack (`manage.py security_review_pack`)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from fhirlink.models import HealthSystem
from patientportal.accounts.models import Patient

from ..models import ReviewPack
from . import controls, diagram, evidence, inventory, render, roles, sbom, scopes, settings_audit
from .junit import junit_load

logger = logging.getLogger(__name__)

FORMAT = "patientportal.security-review-pack/1"


@dataclass
class Pack:
    content: dict[str, Any]
    sbom_json: bytes | None


def source_commit() -> str:
    """The commit the running code is from: SOURCE_COMMIT (set by the image build), else git."""
    commit = os.environ.get("SOURCE_COMMIT", "").strip()
    if commit:
        return commit[:64]
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # noqa: S607 (git from PATH, fixed arguments)
            cwd=str(settings.BASE_DIR),
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip()[:64] if done.returncode == 0 else ""


def _health_system_section(health_system: HealthSystem) -> dict[str, Any]:
    return {
        "id": str(health_system.pk),
        "slug": health_system.slug,
        "name": health_system.name,
        "fhir_base_url": health_system.fhir_base_url,
        "tenant": health_system.tenant,
        "client_auth": health_system.client_auth,
        "scope_syntax": health_system.scope_syntax,
        "enabled": health_system.enabled,
        "on_hold": health_system.on_hold,
        "review": {
            "state": health_system.review_state,
            "started_on": _date(health_system.review_started_on),
            "approved_on": _date(health_system.review_approved_on),
            "reviewer": health_system.reviewer,
            "agreement": health_system.agreement_kind or "none",
            "agreement_reference": health_system.agreement_reference,
            "agreement_signed_on": _date(health_system.agreement_signed_on),
        },
    }


def _date(value: Any) -> str | None:
    return value.isoformat() if value else None


def sample_patient_default() -> Patient | None:
    """The demo's synthetic patient when it is seeded (dev/demo only), else none."""
    if not settings.DEMO_ENABLED:
        return None
    from patientportal.accounts.demo import DEMO_PATIENT_EMAIL

    return Patient.objects.filter(user__email=DEMO_PATIENT_EMAIL).first()


def review_pack_build(
    *,
    health_system: HealthSystem,
    junit_path: str | Path | None,
    vuln_scan: bool = True,
    vuln_timeout: float = 180.0,
    sample_patient: Patient | None = None,
) -> Pack:
    """Everything the pack holds, as one JSON-ready dict, plus the SBOM document."""
    report = junit_load(junit_path)
    with tempfile.TemporaryDirectory() as scratch:
        sbom_file = Path(scratch) / "sbom.cdx.json"
        sbom_summary = sbom.sbom_generate(out_file=sbom_file)
        sbom_json = sbom_file.read_bytes() if sbom_file.is_file() else None
    content: dict[str, Any] = {
        "format": FORMAT,
        "generated_at": timezone.now().isoformat(timespec="seconds"),
        "source_commit": source_commit(),
        "health_system": _health_system_section(health_system),
        "scopes": scopes.scopes_requested(health_system=health_system),
        "inventory": inventory.data_inventory(),
        "diagram": diagram.data_flow_diagram(health_system=health_system),
        "roles": roles.roles_and_permissions(),
        "controls": controls.control_matrix(report=report),
        "attack_suite": controls.attack_suite(report=report),
        "sbom": sbom_summary,
        "vulnerabilities": sbom.vulnerability_scan(enabled=vuln_scan, timeout=vuln_timeout),
        "access_log": evidence.access_log_evidence(patient=sample_patient),
        "settings": settings_audit.security_settings(),
    }
    return Pack(content=content, sbom_json=sbom_json)


def pack_json_bytes(content: dict[str, Any]) -> bytes:
    return json.dumps(content, indent=2, sort_keys=True, ensure_ascii=False).encode() + b"\n"


def review_pack_write(*, pack: Pack, out_dir: Path) -> dict[str, Path]:
    """Writes pack.json, pack.html, pack.pdf, the diagram, the SBOM and the CSV tables."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    data = pack_json_bytes(pack.content)
    written["pack.json"] = out_dir / "pack.json"
    written["pack.json"].write_bytes(data)
    if pack.sbom_json is not None:
        written["sbom.cdx.json"] = out_dir / "sbom.cdx.json"
        written["sbom.cdx.json"].write_bytes(pack.sbom_json)
    svg = pack.content["diagram"].get("svg")
    if svg:
        written["dataflow.svg"] = out_dir / "dataflow.svg"
        written["dataflow.svg"].write_text(svg, encoding="utf-8")
    written["dataflow.dot"] = out_dir / "dataflow.dot"
    written["dataflow.dot"].write_text(pack.content["diagram"]["dot"], encoding="utf-8")
    for name, rows in render.csv_tables(pack.content).items():
        path = out_dir / name
        render.write_csv(path, rows)
        written[name] = path
    html = render.pack_html(pack.content, sha256=hashlib.sha256(data).hexdigest())
    written["pack.html"] = out_dir / "pack.html"
    written["pack.html"].write_text(html, encoding="utf-8")
    try:
        pdf = render.pack_pdf(html)
    except render.PdfUnavailable as exc:
        logger.warning("Review pack: no PDF (%s); pack.html has the same content", exc)
    else:
        written["pack.pdf"] = out_dir / "pack.pdf"
        written["pack.pdf"].write_bytes(pdf)
    return written


def review_pack_store(
    *, health_system: HealthSystem, pack: Pack, generated_by: str = ""
) -> ReviewPack:
    """Keeps the pack with the health system's review state (pack.json's content and hash)."""
    data = pack_json_bytes(pack.content)
    with transaction.atomic():
        stored = ReviewPack.objects.create(
            health_system=health_system,
            generated_at=timezone.now(),
            generated_by=generated_by[:150],
            review_state=health_system.review_state,
            source_commit=pack.content.get("source_commit", ""),
            sha256=hashlib.sha256(data).hexdigest(),
            content=pack.content,
        )
    logger.info("Review pack %s stored for health system %s", stored.pk, health_system.pk)
    return stored
