"""The pack as people read it (HTML, and a PDF rendered from that HTML by WeasyPrint) and as
spreadsheets (one CSV per table)."""

from __future__ import annotations

import base64
import csv
import logging
from pathlib import Path
from typing import Any

from django.template.loader import render_to_string


def pack_html(content: dict[str, Any], *, sha256: str = "") -> str:
    svg = content.get("diagram", {}).get("svg")
    diagram_uri = (
        "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode() if svg else ""
    )
    return render_to_string(
        "reviewpack/pack.html",
        {"pack": content, "diagram_uri": diagram_uri, "sha256": sha256},
    )


class PdfUnavailable(Exception):
    """WeasyPrint cannot load its system libraries (Debian's pango)."""


def pack_pdf(html: str) -> bytes:
    """PDF from the pack's HTML (WeasyPrint: pango for text layout; nothing fetched: the only
    image is an inline data URI)."""
    # WeasyPrint reports every layout step at INFO; the pack's command says what it wrote.
    logging.getLogger("weasyprint.progress").setLevel(logging.WARNING)
    try:
        from weasyprint import HTML
    except OSError as exc:  # its cffi bindings could not load libpango / libpangoft2
        raise PdfUnavailable(
            "WeasyPrint needs Debian's libpango-1.0-0 and libpangoft2-1.0-0"
        ) from exc

    pdf: bytes = HTML(string=html, base_url=None).write_pdf()
    return pdf


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return "; ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}={_cell(v)}" for k, v in value.items())
    text = "" if value is None else str(value)
    # Spreadsheet formula injection: a cell must never start a formula.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        if not rows:
            return
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _cell(value) for key, value in row.items()})


def csv_tables(content: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    scopes = [
        {
            "scope": r["scope"],
            "resource": r["resource"],
            "features": r["features"],
            "used": r["used"],
        }
        for r in content["scopes"]["rows"]
    ]
    inventory = []
    for category in content["inventory"]["categories"]:
        for store in category["stores"] or [{}]:
            inventory.append(
                {
                    "category": category["category"],
                    "model": store.get("model", ""),
                    "table": store.get("table", ""),
                    "encrypted_columns": store.get("encrypted_columns", []),
                    "key_id_columns": store.get("key_id_columns", []),
                    "when_the_patient_row_goes": store.get("when_the_patient_row_goes", ""),
                    "protection": category["protection"],
                    "retention": category["retention"],
                    "retention_settings": category["retention_settings"],
                    "erasure": category["erasure"],
                    "erasure_functions": [f["function"] for f in category["erasure_functions"]],
                }
            )
    roles = []
    for role in content["roles"]["staff_roles"]:
        for model in role["models"]:
            roles.append(
                {
                    "role": role["role"],
                    "model": model["model"],
                    "can": model["can"],
                    "in_admin": model["in_admin"],
                    "serves_patient_data": model["serves_patient_data"],
                }
            )
    for scope in content["roles"]["patient_scopes"]:
        for operation in scope["operations"] or [""]:
            roles.append(
                {
                    "role": f"patient scope {scope['scope']}",
                    "model": operation,
                    "can": scope["description"],
                    "in_admin": False,
                    "serves_patient_data": True,
                }
            )
    controls = []
    for row in content["controls"]["rows"]:
        for test in row["tests"]:
            controls.append(
                {
                    "framework": row["framework"],
                    "ref": row["ref"],
                    "title": row["title"],
                    "feature": row["feature"],
                    "control_result": row["result"],
                    "test_id": test["id"],
                    "test_result": test["result"],
                }
            )
    return {
        "scopes.csv": scopes,
        "inventory.csv": inventory,
        "roles.csv": roles,
        "controls.csv": controls,
        "attack_suite.csv": content["attack_suite"]["cases"],
        "settings.csv": content["settings"]["rows"],
        "access_log_sample.csv": content["access_log"]["sample"],
        "vulnerabilities.csv": content["vulnerabilities"]["findings"],
        "sbom_components.csv": content["sbom"].get("packages", []),
    }
