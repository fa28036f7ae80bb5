"""The software bill of materials (CycloneDX, from the installed packages) and a scan of it for
known vulnerabilities.

The SBOM is made by CycloneDX's own generator (`cyclonedx-py environment`, from the
cyclonedx-bom package) for this interpreter's environment, with this project as the root
component. The scan is pip-audit over the same environment; it needs the network (the
vulnerability service), so it has a timeout and can be switched off, and the pack then says it
was not run and why, rather than pretending.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone

logger = logging.getLogger(__name__)

SBOM_SPEC_VERSION = "1.6"


def _run(args: list[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (our own interpreter and fixed arguments)
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=str(settings.BASE_DIR),
    )


def sbom_generate(*, out_file: Path, timeout: float = 120.0) -> dict[str, Any]:
    """Writes the CycloneDX JSON to `out_file`; returns a summary (or the reason it failed).

    Schema validation is left off: the generator builds the document with cyclonedx-python-lib's
    models, and validating costs ~12 s of jsonschema format checks per run."""
    args = [
        "cyclonedx_py",
        "environment",
        "--pyproject",
        str(Path(settings.BASE_DIR) / "pyproject.toml"),
        "--spec-version",
        SBOM_SPEC_VERSION,
        "--output-format",
        "JSON",
        "--output-file",
        str(out_file),
        "--no-validate",
        sys.executable,
    ]
    try:
        done = _run(args, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"cyclonedx-py took over {timeout:.0f} s"}
    if done.returncode != 0 or not out_file.is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return {"status": "failed", "reason": f"cyclonedx-py failed: {last}"}
    bom = json.loads(out_file.read_text(encoding="utf-8"))
    components = bom.get("components", [])
    return {
        "status": "generated",
        "file": out_file.name,
        "format": f"CycloneDX {bom.get('specVersion', SBOM_SPEC_VERSION)} JSON",
        "generator": "cyclonedx-py environment (cyclonedx-bom)",
        "root": (bom.get("metadata", {}).get("component") or {}).get("name", ""),
        "components": len(components),
        "packages": sorted(
            (
                {
                    "name": c.get("name", ""),
                    "version": c.get("version", ""),
                    "purl": c.get("purl", ""),
                }
                for c in components
            ),
            key=lambda c: c["name"].lower(),
        ),
    }


def vulnerability_scan(*, enabled: bool, timeout: float = 180.0) -> dict[str, Any]:
    """pip-audit over the installed packages (the SBOM's components), dated; or why not run."""
    now = timezone.now().isoformat(timespec="seconds")
    base = {"tool": "pip-audit (PyPI vulnerability data)", "date": now}
    if not enabled:
        return {**base, "status": "not run", "reason": "--no-vuln-scan given", "findings": []}
    args = [
        "pip_audit",
        "--format",
        "json",
        "--progress-spinner",
        "off",
        "--skip-editable",
        "--timeout",
        "20",
    ]
    try:
        done = _run(args, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {
            **base,
            "status": "not run",
            "reason": f"timed out after {timeout:.0f} s (the vulnerability service unreachable?)",
            "findings": [],
        }
    try:
        result = json.loads(done.stdout)
    except json.JSONDecodeError:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
        logger.warning("Review pack: the vulnerability scan did not complete")
        return {**base, "status": "not run", "reason": f"pip-audit failed: {last}", "findings": []}
    findings = []
    dependencies = result.get("dependencies", [])
    for dependency in dependencies:
        for vuln in dependency.get("vulns", []):
            findings.append(
                {
                    "package": dependency.get("name", ""),
                    "version": dependency.get("version", ""),
                    "id": vuln.get("id", ""),
                    "aliases": vuln.get("aliases", []),
                    "fix_versions": vuln.get("fix_versions", []),
                }
            )
    return {
        **base,
        "status": "run",
        "reason": "",
        "packages_scanned": len(dependencies),
        "skipped": [d.get("name", "") for d in dependencies if d.get("skip_reason")],
        "findings": findings,
    }
