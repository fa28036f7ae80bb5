"""The issue's "Done means": discovery, standalone launch with PKCE, refresh, paged search."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fhirlink.sandbox.smart_client_check import run_check

pytestmark = pytest.mark.integration


def test_smart_client_check_completes_against_the_live_sandbox(sandbox):
    result = run_check(sandbox.fhir_base)

    assert result.patient == sandbox.large_patient.fhir_id
    assert result.refreshed is True
    assert "patient/Observation.s" in result.granted_scope.split()
    # 50,400 Observations: page 1 has 200 + the 3 social-history rows, then 200 a page.
    assert result.observations == 50_400
    assert result.pages == 252


def test_the_check_runs_from_the_command_line(sandbox):
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "fhirlink.sandbox.smart_client_check",
            "--fhir-base",
            sandbox.fhir_base,
            "--max-pages",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[-1] == "OK"
    assert "launched: patient=12800104" in lines[1]
    assert lines[3].startswith("paged 2 pages, 403 Observations")
