"""The deterministic, seeded generator of Cerner-shaped data.

Every resource is derived from (patient, type, index): nothing is stored. A compact per-process
index holds, per patient and type, one small tuple per resource (sort date, index, category, code,
status, lastUpdated, variant, version) for filtering and keyset paging; a resource is rendered only
when a page or a read needs it. Changes made by advancing the clock (``SandboxChange`` rows) are
overlaid on the index per tenant.
"""

from __future__ import annotations

import base64
import random
import time
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, NamedTuple

from ..conf import PATIENTS_BY_ORDINAL, TestPatient
from . import catalog as cat

DATA_END = int(datetime(2026, 6, 1, tzinfo=UTC).timestamp())
YEAR = 365 * 86400
ID_BASE = 10_000_000


class Row(NamedTuple):
    ts: int  # the date the resource sorts and filters on (epoch seconds)
    i: int
    category: str
    code: str  # "loinc-or-standard|cerner"
    status: str
    lu: int  # meta.lastUpdated
    variant: int
    version: int


# Per resource type: (everyday count, large count, years of history).
COUNTS: dict[str, tuple[int, int, int]] = {
    "Observation": (180, 50_400, 20),
    "Condition": (12, 150, 20),
    "AllergyIntolerance": (4, 20, 20),
    "MedicationRequest": (15, 300, 20),
    "Immunization": (10, 60, 20),
    "Procedure": (8, 120, 20),
    "Encounter": (20, 600, 20),
    "DiagnosticReport": (10, 300, 20),
    "DocumentReference": (9, 120, 20),
    "CarePlan": (3, 20, 10),
    "Goal": (3, 15, 10),
    "CareTeam": (3, 6, 10),
    "Device": (2, 5, 10),
    "ServiceRequest": (5, 40, 10),
    "NutritionOrder": (2, 6, 5),
    "Consent": (1, 1, 5),
}
TYPE_CODES = {t: n for n, t in enumerate(["Patient", *COUNTS], start=1)}
PATIENT_TYPES = tuple(COUNTS)
SHARED_TYPES = ("Practitioner", "Organization", "Location")

MASKED = {
    "coding": [
        {
            "extension": [
                {
                    "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                    "valueCode": "masked",
                }
            ]
        }
    ]
}
DAR_MASKED = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
            "code": "masked",
            "display": "Masked",
        }
    ],
    "text": "Masked",
}
DAR_UNKNOWN = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
            "code": "unknown",
            "display": "Unknown",
        }
    ],
    "text": "Unknown",
}


def num(p: int, i: int) -> int:
    return p * ID_BASE + i


def split_num(value: int) -> tuple[int, int]:
    return value // ID_BASE, value % ID_BASE


def iso_s(ts: int) -> str:
    """FHIR dateTime in whole seconds (faster than datetime.strftime on hot paths)."""
    t = time.gmtime(ts)
    date = f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
    return f"{date}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}Z"


def iso(ts: int) -> str:
    """FHIR instant with milliseconds, as Cerner prints them."""
    return iso_s(ts)[:-1] + ".000Z"


def day(ts: int) -> str:
    return iso_s(ts)[:10]


def _rng(p: int, rtype: str, i: int) -> random.Random:
    # Deterministic test data, not security: a seeded PRNG is the point.
    return random.Random(p * 1_000_003 + TYPE_CODES.get(rtype, 99) * 100_003_333 + i)  # noqa: S311


def count_for(patient: TestPatient, rtype: str) -> int:
    everyday, large, _ = COUNTS[rtype]
    return large if patient.large else everyday


# --- Index ---------------------------------------------------------------------------------------


def _eie(i: int, rtype: str) -> bool:
    """Deterministic entered-in-error records (masked for the patient persona)."""
    return (
        rtype
        in {
            "Observation",
            "Condition",
            "AllergyIntolerance",
            "MedicationRequest",
            "Immunization",
            "Procedure",
        }
        and i % 97 == 41
    )


def attributes(patient: TestPatient, rtype: str, i: int, ts: int | None = None) -> Row:
    """The index row of one resource (``ts`` given for resources created by a change)."""
    rng = _rng(patient.ordinal, rtype, i)
    n = count_for(patient, rtype)
    years = COUNTS[rtype][2]
    if ts is None:
        start = DATA_END - years * YEAR
        slot = (years * YEAR) // max(n, 1)
        ts = start + i * slot + rng.randrange(max(slot - 3600, 1))
    lu = min(ts + rng.randrange(3600, 86400), DATA_END) if ts <= DATA_END else ts
    status = "final"
    category = ""
    code = ""
    variant = 0
    if rtype == "Observation":
        r = rng.random()
        if i < 3:
            category, variant = "social-history", i
            sh = cat.SOCIAL[i]
            code = f"{sh[1]}|{sh[0]}"
        elif r < 0.45:
            category = "vital-signs"
            variant = rng.randrange(len(cat.VITALS) + 1)
            entry = cat.BP if variant == len(cat.VITALS) else cat.VITALS[variant]
            code = f"{entry[1]}|{entry[0]}"
        else:
            category = "laboratory"
            variant = rng.randrange(len(cat.LABS))
            lab = cat.LABS[variant]
            code = f"{lab[1]}|{lab[0]}"
            if variant == 1 and i % 50 == 7:
                category = ""  # POC glucose: data-absent category
        status = "amended" if i % 61 == 5 else "final"
    elif rtype == "Condition":
        variant = rng.randrange(len(cat.CONDITIONS))
        category = ("problem-list-item", "encounter-diagnosis", "health-concern")[i % 3]
        code = f"{cat.CONDITIONS[variant][0]}|{cat.CONDITIONS[variant][1]}"
        status = ("active", "resolved", "inactive")[rng.randrange(3)] if i % 3 != 2 else "active"
    elif rtype == "AllergyIntolerance":
        variant = i % len(cat.ALLERGIES)
        category = cat.ALLERGIES[variant][0]
        code = cat.ALLERGIES[variant][1]
        status = "active" if rng.random() < 0.8 else "resolved"
    elif rtype == "MedicationRequest":
        variant = rng.randrange(len(cat.MEDICATIONS))
        code = cat.MEDICATIONS[variant][0]
        status = "active" if ts > DATA_END - YEAR else ("completed", "stopped")[rng.randrange(2)]
        category = "community" if i % 4 else "discharge"
    elif rtype == "Immunization":
        variant = rng.randrange(len(cat.VACCINES))
        code = cat.VACCINES[variant][0]
        status = "not-done" if i % 7 == 3 else "completed"
    elif rtype == "Procedure":
        variant = rng.randrange(len(cat.PROCEDURES))
        code = cat.PROCEDURES[variant][0]
        status = "completed"
    elif rtype == "Encounter":
        variant = rng.randrange(3)
        category = ("AMB", "IMP", "EMER")[variant]
        status = "finished" if ts < DATA_END - 86400 else "in-progress"
    elif rtype == "DiagnosticReport":
        variant = rng.randrange(len(cat.REPORTS))
        category = cat.REPORTS[variant][0]
        code = cat.REPORTS[variant][1]
    elif rtype == "DocumentReference":
        variant = rng.randrange(len(cat.DOC_TYPES))
        category = "clinical-note"
        code = f"{cat.DOC_TYPES[variant][1]}|{cat.DOC_TYPES[variant][0]}"
        status = "current"
    elif rtype == "CarePlan":
        category = "assess-plan"
        status = "active" if i == 0 else "completed"
    elif rtype == "Goal":
        variant = i % len(cat.GOALS)
        status = "active" if rng.random() < 0.7 else "completed"
    elif rtype == "CareTeam":
        category = "encounter" if i % 3 == 0 else "longitudinal"
        status = "active"
    elif rtype == "Device":
        variant = i % len(cat.DEVICES)
        status = "active"
    elif rtype == "ServiceRequest":
        status = "active" if i % 3 else "completed"
        category = "laboratory"
        variant = rng.randrange(len(cat.LABS))
        code = cat.LABS[variant][1]
    elif rtype == "NutritionOrder":
        status = "active" if i == 0 else "completed"
    elif rtype == "Consent":
        status = "active"
    if _eie(i, rtype) or (
        (rtype in MASK_KEEP or rtype == "AllergyIntolerance") and patient.large and i == 1
    ):
        status = "entered-in-error"
    return Row(ts, i, category, code, status, lu, variant, 1)


@lru_cache(maxsize=64)
def base_index(ordinal: int, rtype: str) -> tuple[Row, ...]:
    """Every base resource's index row, ascending by (ts, i). Built once per process."""
    patient = PATIENTS_BY_ORDINAL[ordinal]
    rows = [attributes(patient, rtype, i) for i in range(count_for(patient, rtype))]
    rows.sort(key=lambda r: (r.ts, r.i))
    return tuple(rows)


def suppressed(rtype: str, i: int) -> bool:
    """Sensitive documents the patient persona does not get (a suppressed-outcome entry instead)."""
    return rtype == "DocumentReference" and i % 9 == 4


# --- Rendering ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ctx:
    tenant: str
    base: str  # the FHIR base URL

    @property
    def codeset(self) -> str:
        return f"https://fhir.cerner.com/{self.tenant}/codeSet"


def cc(ctx: Ctx, codeset: int, code: str, display: str, *others: dict[str, Any]) -> dict[str, Any]:
    coding = [
        {
            "system": f"{ctx.codeset}/{codeset}",
            "code": code,
            "display": display,
            "userSelected": True,
        }
    ]
    return {"coding": coding + list(others), "text": display}


def coding(system: str, code: str, display: str) -> dict[str, Any]:
    return {"system": system, "code": code, "display": display}


def narrative(title: str, pairs: list[tuple[str, str]]) -> dict[str, str]:
    body = "".join(f"<p><b>{k}</b>: {v}</p>" for k, v in pairs)
    return {
        "status": "generated",
        "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><p><b>{title}</b></p>{body}</div>',
    }


def meta(row: Row) -> dict[str, str]:
    return {"versionId": str(row.version), "lastUpdated": iso(row.lu)}


def patient_ref(p: TestPatient) -> dict[str, str]:
    return {
        "reference": f"Patient/{p.fhir_id}",
        "display": f"{p.family.upper()}, {p.given.upper()}",
    }


def practitioner_ref(k: int) -> dict[str, str]:
    family, given, _ = cat.PRACTITIONERS[k % len(cat.PRACTITIONERS)]
    return {"reference": f"Practitioner/{practitioner_id(k)}", "display": f"{family}, {given}"}


def practitioner_id(k: int) -> str:
    return str(11_638_400 + k % len(cat.PRACTITIONERS))


def organization_id(k: int) -> str:
    return str(675_840 + k % len(cat.ORGANIZATIONS))


def location_id(k: int) -> str:
    return str(32_216_040 + k % len(cat.LOCATIONS))


def encounter_ref(p: TestPatient, rng: random.Random) -> dict[str, str]:
    return {"reference": f"Encounter/{num(p.ordinal, rng.randrange(count_for(p, 'Encounter')))}"}


def status_title(status: str) -> str:
    return status.replace("-", " ").title()


# What the patient persona still sees of an entered-in-error record of these types.
MASK_KEEP: dict[str, tuple[str, ...]] = {
    "CarePlan": ("category", "intent", "status", "subject"),
    "Goal": ("description", "lifecycleStatus", "subject"),
    "Device": ("patient", "status", "type"),
    "NutritionOrder": ("dateTime", "intent", "patient", "status"),
    "ServiceRequest": ("intent", "status", "subject"),
}
_ALWAYS = ("resourceType", "id", "meta", "text")


def render(ctx: Ctx, patient: TestPatient, rtype: str, row: Row) -> dict[str, Any]:
    # An updated version gets new values (same id, same dates); version 1 is the original.
    seed_index = row.i + (row.version - 1) * 7_919_000 if row.version > 1 else row.i
    resource = RENDERERS[rtype](ctx, patient, row, _rng(patient.ordinal, rtype, seed_index))
    keep = MASK_KEEP.get(rtype)
    if keep is not None and row.status == "entered-in-error":
        resource = {k: v for k, v in resource.items() if k in _ALWAYS or k in keep}
        if rtype == "Goal":
            resource["lifecycleStatus"] = "entered-in-error"
    return resource


def parse_id(rtype: str, rid: str) -> tuple[int, int] | None:
    """(patient ordinal, index) from a generated id, or None."""
    if rtype == "CareTeam":
        parts = rid.split("-")
        digits = parts[1] if len(parts) > 1 else ""
    elif rtype == "Consent":
        parts = rid.split("-")
        digits = parts[1] if len(parts) > 2 else ""
    elif rtype == "Observation" and rid.startswith("SH-"):
        parts = rid.split("-")
        digits = parts[2] if len(parts) == 3 else ""
    else:
        digits = rid.lstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_").removeprefix(
            "-"
        )
    if not digits.isdigit():
        return None
    p, i = split_num(int(digits))
    if p not in PATIENTS_BY_ORDINAL:
        return None
    return p, i


# --- Binary ---------------------------------------------------------------------------------------


def _pdf(text: str) -> bytes:
    """A small valid one-page PDF showing ``text``."""
    stream = zlib.compress(f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode())
    objects = [
        b"<</Type/Catalog/Pages 2 0 R>>",
        b"<</Type/Pages/Kids[3 0 R]/Count 1>>",
        b"<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]"
        b"/Resources<</Font<</F1 4 0 R>>>>/Contents 5 0 R>>",
        b"<</Type/Font/Subtype/Type1/BaseFont/Helvetica>>",
        b"<</Length %d/Filter/FlateDecode>>stream\n" % len(stream) + stream + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<</Size %d/Root 1 0 R>>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def binary_content(
    patient: TestPatient, rtype_source: str, row: Row, binary_id: str
) -> tuple[str, bytes]:
    if binary_id.startswith("XR-"):
        return "application/pdf", _pdf(
            f"Sandbox clinical document {binary_id} for {patient.given} {patient.family}"
        )
    return "text/plain", (
        f"Sandbox note {binary_id}\nPatient: {patient.family.upper()}, {patient.given.upper()}\n"
        f"Date: {iso(row.ts)}\nAssessment: stable. Plan: follow up in 3 months.\n"
    ).encode()


def binary_resource(binary_id: str, content_type: str, data: bytes, row: Row) -> dict[str, Any]:
    return {
        "resourceType": "Binary",
        "id": binary_id,
        "meta": {"lastUpdated": iso(row.lu)},
        "contentType": content_type,
        "data": base64.b64encode(data).decode(),
    }


# The renderers need the helpers above; importing them last keeps one import path for callers.
from .resources import RENDERERS, render_patient, render_shared, shared_ids  # noqa: E402

__all__ = ["RENDERERS", "render_patient", "render_shared", "shared_ids"]
