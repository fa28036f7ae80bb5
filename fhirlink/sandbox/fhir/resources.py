"""Per-type renderers: one Cerner-shaped resource from an index row (see ``data.py``)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from typing import Any

from ..conf import TestPatient
from . import catalog as cat
from .data import (
    DAR_MASKED,
    DAR_UNKNOWN,
    DATA_END,
    MASKED,
    YEAR,
    Ctx,
    Row,
    cc,
    coding,
    day,
    encounter_ref,
    iso,
    iso_s,
    location_id,
    meta,
    narrative,
    num,
    organization_id,
    patient_ref,
    practitioner_id,
    practitioner_ref,
    status_title,
)


def render_observation(ctx: Ctx, p: TestPatient, row: Row, rng: random.Random) -> dict[str, Any]:
    n = num(p.ordinal, row.i)
    subject = {"reference": f"Patient/{p.fhir_id}"}
    obs_cat = {
        "social-history": ("social-history", "Social History"),
        "vital-signs": ("vital-signs", "Vital Signs"),
        "laboratory": ("laboratory", "Laboratory"),
    }
    if row.category == "social-history":
        sh = cat.SOCIAL[row.variant]
        rid = f"{sh[0]}-{n}"
        code = {"coding": [coding(sh[3], sh[1], sh[2])], "text": sh[2]}
    elif row.category == "vital-signs":
        rid = f"VS-{n}"
    else:
        rid = f"L-{n}"
    out: dict[str, Any] = {"resourceType": "Observation", "id": rid, "meta": meta(row)}
    if row.category == "vital-signs":
        if row.variant == len(cat.VITALS):
            code = cc(
                ctx, 72, cat.BP[0], cat.BP[2], coding("http://loinc.org", cat.BP[1], cat.BP[2])
            )
        else:
            v = cat.VITALS[row.variant]
            code = cc(ctx, 72, v[0], v[2], coding("http://loinc.org", v[1], v[2]))
    elif row.category != "social-history":
        lab = cat.LABS[row.variant]
        code = cc(ctx, 72, lab[0], lab[2], coding("http://loinc.org", lab[1], lab[2]))
    display = str(code["text"])
    out["text"] = narrative(
        "Observation",
        [("Patient Id", p.fhir_id), ("Status", status_title(row.status)), ("Code", display)],
    )
    out["status"] = row.status
    if row.category:
        c, d = obs_cat[row.category]
        out["category"] = [
            {
                "coding": [
                    coding("http://terminology.hl7.org/CodeSystem/observation-category", c, d)
                ],
                "text": d,
            }
        ]
    else:
        out["category"] = [DAR_UNKNOWN]
    out["code"] = code
    out["subject"] = subject
    out["encounter"] = encounter_ref(p, rng)
    out["effectiveDateTime"] = iso_s(row.ts)
    out["issued"] = iso(row.ts + 600)
    if row.status == "entered-in-error":
        return {
            "resourceType": "Observation",
            "id": rid,
            "text": out["text"],
            "status": row.status,
            "category": out["category"],
            "code": code,
            "subject": subject,
            "effectiveDateTime": out["effectiveDateTime"],
            "dataAbsentReason": DAR_MASKED,
        }
    if row.category == "social-history":
        out["hasMember"] = [{"reference": f"Observation/SH-{n}-q{4_625_800 + row.variant}"}]
        out["valueCodeableConcept"] = {
            "text": ("Never smoker", "Denies", "Occasional")[row.variant]
        }
    elif row.category == "vital-signs" and row.variant == len(cat.VITALS):
        out["component"] = [
            {
                "code": cc(ctx, 72, c[0], c[2], coding("http://loinc.org", c[1], c[2])),
                "valueQuantity": {
                    "value": rng.randint(c[3], c[4]),
                    "unit": "mmHg",
                    "system": "http://unitsofmeasure.org",
                    "code": "mm[Hg]",
                },
            }
            for c in cat.BP_COMPONENTS
        ]
    elif row.category == "vital-signs":
        v = cat.VITALS[row.variant]
        value = round(rng.uniform(v[4], v[5]), v[6]) if v[6] else rng.randint(int(v[4]), int(v[5]))
        out["valueQuantity"] = {
            "value": value,
            "unit": v[3],
            "system": "http://unitsofmeasure.org",
            "code": v[3],
        }
        out["performer"] = [practitioner_ref(rng.randrange(8))]
    else:
        lab = cat.LABS[row.variant]
        value = (
            round(rng.uniform(lab[4], lab[5]), lab[6])
            if lab[6]
            else rng.randint(int(lab[4]), int(lab[5]))
        )
        low, high = lab[7]
        out["valueQuantity"] = {
            "value": value,
            "unit": lab[3],
            "system": "http://unitsofmeasure.org",
            "code": lab[3],
        }
        out["referenceRange"] = [
            {"low": {"value": low, "unit": lab[3]}, "high": {"value": high, "unit": lab[3]}}
        ]
        if value > high or value < low:
            flag = "H" if value > high else "L"
            out["interpretation"] = [
                cc(
                    ctx,
                    52,
                    "2" if flag == "H" else "3",
                    "High" if flag == "H" else "Low",
                    coding(
                        "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                        flag,
                        "High" if flag == "H" else "Low",
                    ),
                )
            ]
    return out


def render_condition(ctx: Ctx, p: TestPatient, row: Row, rng: random.Random) -> dict[str, Any]:
    snomed, icd, display = cat.CONDITIONS[row.variant]
    prefix = {"problem-list-item": "p", "encounter-diagnosis": "d", "health-concern": "h"}[
        row.category
    ]
    rid = f"{prefix}{num(p.ordinal, row.i)}"
    cat_display = {
        "problem-list-item": "Problem List Item",
        "encounter-diagnosis": "Encounter Diagnosis",
        "health-concern": "Health Concern",
    }[row.category]
    category_system = (
        "http://hl7.org/fhir/us/core/CodeSystem/condition-category"
        if row.category == "health-concern"
        else "http://terminology.hl7.org/CodeSystem/condition-category"
    )
    code = {
        "coding": [
            coding("http://snomed.info/sct", snomed, display),
            coding("http://hl7.org/fhir/sid/icd-10-cm", icd, display),
        ],
        "text": display,
    }
    eie = row.status == "entered-in-error"
    out: dict[str, Any] = {
        "resourceType": "Condition",
        "id": rid,
        "meta": meta(row),
        "text": narrative(
            "Condition",
            [
                ("Patient", f"{p.family.upper()}, {p.given.upper()}"),
                ("Problem", "Masked" if eie else display),
            ],
        ),
    }
    if not eie:
        out["clinicalStatus"] = {
            "coding": [
                coding(
                    "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    row.status,
                    row.status.title(),
                )
            ],
            "text": row.status.title(),
        }
    ver = "entered-in-error" if eie else "confirmed"
    out["verificationStatus"] = {
        "coding": [
            coding(
                "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                ver,
                status_title(ver),
            )
        ],
        "text": status_title(ver),
    }
    out["category"] = [
        {"coding": [coding(category_system, row.category, cat_display)], "text": cat_display}
    ]
    out["code"] = MASKED if eie else code
    out["subject"] = patient_ref(p)
    if row.category == "encounter-diagnosis" and not eie:
        out["encounter"] = encounter_ref(p, rng)
    out["onsetDateTime"] = iso_s(row.ts - 30 * 86400)
    if row.status == "resolved":
        out["abatementDateTime"] = iso_s(row.ts + 60 * 86400)
        del out["onsetDateTime"]
    out["recordedDate"] = iso(row.ts)
    out["recorder"] = practitioner_ref(rng.randrange(8))
    return out


def render_allergy(ctx: Ctx, p: TestPatient, row: Row, rng: random.Random) -> dict[str, Any]:
    category, code, display, system, reaction = cat.ALLERGIES[row.variant]
    rid = str(num(p.ordinal, row.i))
    base: dict[str, Any] = {
        "resourceType": "AllergyIntolerance",
        "id": rid,
        "meta": meta(row),
        "text": narrative(
            "Allergy Intolerance",
            [("Patient", f"{p.family.upper()}, {p.given.upper()}"), ("Allergy", display)],
        ),
    }
    if row.status == "entered-in-error":
        base["verificationStatus"] = {
            "coding": [
                coding(
                    "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                    "entered-in-error",
                    "Entered in Error",
                )
            ],
            "text": "Entered in Error",
        }
        base["code"] = MASKED
        base["patient"] = patient_ref(p)
        return base
    base.update(
        {
            "clinicalStatus": {
                "coding": [
                    coding(
                        "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                        row.status,
                        row.status.title(),
                    )
                ],
                "text": row.status.title(),
            },
            "verificationStatus": {
                "coding": [
                    coding(
                        "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                        "confirmed",
                        "Confirmed",
                    )
                ],
                "text": "Confirmed",
            },
            "type": "allergy",
            "category": [category],
            "criticality": ("low", "high", "unable-to-assess")[row.i % 3],
            "code": cc(
                ctx,
                12_006 if category == "medication" else 12_020,
                str(1_000_000 + row.variant),
                display,
                coding(system, code, display),
            ),
            "patient": patient_ref(p),
            "encounter": encounter_ref(p, rng),
            "recordedDate": iso(row.ts),
            "recorder": practitioner_ref(rng.randrange(8)),
            "reaction": [
                {
                    "manifestation": [cc(ctx, 12_021, str(2_000_000 + row.variant), reaction)],
                    "severity": "moderate",
                }
            ],
        }
    )
    return base


def render_medication_request(
    ctx: Ctx, p: TestPatient, row: Row, rng: random.Random
) -> dict[str, Any]:
    rxnorm, display, sig = cat.MEDICATIONS[row.variant]
    rid = str(num(p.ordinal, row.i))
    med = cc(
        ctx,
        72,
        str(2_750_000 + row.variant),
        display,
        coding("http://www.nlm.nih.gov/research/umls/rxnorm", rxnorm, display),
    )
    ext = [
        {
            "url": "https://fhir-ehr.cerner.com/r4/StructureDefinition/pharmacy-verification-status",
            "valueCodeableConcept": {"text": "Verified"},
        }
    ]
    out: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": rid,
        "meta": meta(row),
        "text": narrative(
            "Medication Request", [("Status", status_title(row.status)), ("Medication", display)]
        ),
        "extension": ext,
        "status": row.status,
        "intent": "order",
    }
    if row.status == "entered-in-error":
        out["medicationCodeableConcept"] = MASKED
        out["subject"] = patient_ref(p)
        return out
    out.update(
        {
            "category": [
                cc(
                    ctx,
                    4_480 if row.category == "community" else 4_481,
                    "2" if row.category == "community" else "3",
                    row.category.title(),
                    coding(
                        "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                        row.category,
                        row.category.title(),
                    ),
                ),
            ],
            "reportedBoolean": False,
            "medicationCodeableConcept": med,
            "subject": patient_ref(p),
            "encounter": encounter_ref(p, rng),
            "authoredOn": iso(row.ts),
            "requester": practitioner_ref(rng.randrange(8)),
            "courseOfTherapyType": {
                "coding": [
                    coding(
                        "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy",
                        "continuous",
                        "Continuous long term therapy",
                    )
                ],
                "text": "Maintenance",
            },
            "dosageInstruction": [
                {
                    "text": sig,
                    "patientInstruction": sig,
                    "timing": {"repeat": {"boundsPeriod": {"start": iso(row.ts)}}},
                }
            ],
            "dispenseRequest": {
                "validityPeriod": {"start": iso(row.ts)},
                "numberOfRepeatsAllowed": rng.randrange(6),
                "quantity": {"value": 30, "unit": "tab(s)"},
            },
            "substitution": {"allowedBoolean": True},
        }
    )
    return out


def render_immunization(ctx: Ctx, p: TestPatient, row: Row, rng: random.Random) -> dict[str, Any]:
    cvx, display = cat.VACCINES[row.variant]
    n = num(p.ordinal, row.i)
    not_done = row.status == "not-done" or (row.status == "entered-in-error" and row.i % 7 == 3)
    rid = f"HM{n}" if not_done else f"M{n}"
    vaccine = cc(
        ctx,
        72,
        str(2_790_000 + row.variant),
        display,
        coding("http://hl7.org/fhir/sid/cvx", cvx, display),
    )
    out: dict[str, Any] = {
        "resourceType": "Immunization",
        "id": rid,
        "meta": meta(row),
        "text": narrative(
            "Immunization", [("Status", status_title(row.status)), ("Vaccine", display)]
        ),
        "status": row.status,
    }
    if row.status == "entered-in-error":
        out["vaccineCode"] = MASKED
        out["patient"] = patient_ref(p)
        out["_occurrenceDateTime"] = {
            "extension": [
                {
                    "valueCode": "masked",
                    "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                }
            ]
        }
        return out
    out["vaccineCode"] = vaccine
    out["patient"] = patient_ref(p)
    out["occurrenceDateTime"] = iso(row.ts)
    out["primarySource"] = not not_done
    if not_done:
        out["statusReason"] = {
            "coding": [
                coding(
                    "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                    "PATOBJ",
                    "patient objection",
                )
            ],
            "text": "Patient refused",
        }
        return out
    out["encounter"] = encounter_ref(p, rng)
    out["location"] = {"reference": f"Location/{location_id(rng.randrange(6))}"}
    out["reportOrigin"] = {"text": "Administered"}
    out["doseQuantity"] = {
        "value": 0.5,
        "unit": "mL",
        "system": "http://unitsofmeasure.org",
        "code": "mL",
    }
    out["protocolApplied"] = [{"doseNumberPositiveInt": 1 + row.i % 3}]
    return out


def render_procedure(ctx: Ctx, p: TestPatient, row: Row, rng: random.Random) -> dict[str, Any]:
    snomed, display = cat.PROCEDURES[row.variant]
    out: dict[str, Any] = {
        "resourceType": "Procedure",
        "id": str(num(p.ordinal, row.i)),
        "meta": meta(row),
        "text": narrative(
            "Procedure", [("Status", status_title(row.status)), ("Procedure", display)]
        ),
        "status": row.status,
    }
    if row.status == "entered-in-error":
        out["code"] = MASKED
        out["subject"] = patient_ref(p)
        return out
    out["code"] = cc(
        ctx,
        72,
        str(2_810_000 + row.variant),
        display,
        coding("http://snomed.info/sct", snomed, display),
    )
    out["subject"] = patient_ref(p)
    out["encounter"] = encounter_ref(p, rng)
    if row.i % 5 == 2:
        out["_performedDateTime"] = {
            "extension": [
                {
                    "valueCode": "unknown",
                    "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                }
            ]
        }
    else:
        out["performedDateTime"] = iso(row.ts)
    out["recorder"] = practitioner_ref(rng.randrange(8))
    out["performer"] = [{"actor": practitioner_ref(rng.randrange(8))}]
    out["location"] = {"reference": f"Location/{location_id(rng.randrange(6))}"}
    out["note"] = [{"text": "Procedure tolerated well.", "time": iso(row.ts)}]
    return out


def render_encounter(ctx: Ctx, p: TestPatient, row: Row, rng: random.Random) -> dict[str, Any]:
    v2, display, cerner = [
        ("O", "Outpatient", "309309"),
        ("I", "Inpatient", "309308"),
        ("E", "Emergency", "309310"),
    ][row.variant]
    rid = str(num(p.ordinal, row.i))
    loc_k = rng.randrange(6)
    out: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": rid,
        "meta": meta(row),
        "text": narrative(
            "Encounter",
            [
                ("Patient", f"{p.family.upper()}, {p.given.upper()}"),
                ("Type", display),
                ("Status", status_title(row.status)),
            ],
        ),
        "identifier": [
            {
                "use": "usual",
                "type": cc(
                    ctx,
                    319,
                    "1077",
                    "FIN NBR",
                    {
                        **coding(
                            "http://terminology.hl7.org/CodeSystem/v2-0203", "AN", "Account number"
                        ),
                        "userSelected": False,
                    },
                ),
                "system": "urn:oid:2.16.840.1.113883.3.13.6",
                "value": str(16_000 + row.i),
                "period": {"start": iso(row.ts)},
            }
        ],
        "status": row.status,
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v2-0004",
            "code": v2,
            "display": display,
            "userSelected": False,
        },
        "type": [
            cc(
                ctx,
                71,
                cerner,
                display,
                {
                    **coding("http://terminology.hl7.org/CodeSystem/v2-0004", v2, display),
                    "userSelected": False,
                },
            )
        ],
        "subject": patient_ref(p),
        "participant": [
            {
                "type": [
                    {
                        "coding": [
                            coding(
                                "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                "ATND",
                                "attender",
                            )
                        ],
                        "text": "Attending Physician",
                    }
                ],
                "individual": practitioner_ref(rng.randrange(8)),
            }
        ],
        "period": {
            "start": iso(row.ts),
            **(
                {"end": iso(row.ts + 3600 * (1 + row.variant * 48))}
                if row.status == "finished"
                else {}
            ),
        },
        "serviceProvider": {
            "reference": f"Organization/{organization_id(row.variant)}",
            "display": cat.ORGANIZATIONS[row.variant % 3],
        },
    }
    if row.i % 5 == 0:
        out["contained"] = [
            {
                "resourceType": "Location",
                "id": "loc1",
                "name": cat.LOCATIONS[loc_k],
                "status": "active",
            }
        ]
        out["location"] = [
            {
                "location": {"reference": "#loc1", "display": cat.LOCATIONS[loc_k]},
                "status": "active",
            }
        ]
    else:
        out["location"] = [
            {
                "location": {
                    "reference": f"Location/{location_id(loc_k)}",
                    "display": cat.LOCATIONS[loc_k],
                },
                "status": "completed",
            }
        ]
    return out


def render_diagnostic_report(
    ctx: Ctx, p: TestPatient, row: Row, rng: random.Random
) -> dict[str, Any]:
    category, loinc, display = cat.REPORTS[row.variant]
    out: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": str(num(p.ordinal, row.i)),
        "meta": meta(row),
        "text": narrative("Diagnostic Report", [("Status", "Final"), ("Report", display)]),
        "status": row.status,
        "category": [
            {
                "coding": [
                    coding(
                        "http://terminology.hl7.org/CodeSystem/v2-0074",
                        category,
                        "Laboratory" if category == "LAB" else "Radiology",
                    )
                ],
                "text": "Laboratory" if category == "LAB" else "Radiology",
            }
        ],
        "code": cc(
            ctx,
            72,
            str(2_820_000 + row.variant),
            display,
            coding("http://loinc.org", loinc, display),
        ),
        "subject": patient_ref(p),
        "encounter": encounter_ref(p, rng),
        "effectiveDateTime": iso_s(row.ts),
        "issued": iso(row.ts + 3600),
        "performer": [practitioner_ref(rng.randrange(8))],
    }
    return out


def render_document_reference(
    ctx: Ctx, p: TestPatient, row: Row, rng: random.Random
) -> dict[str, Any]:
    loinc, cerner = row.code.split("|")
    display = cat.DOC_TYPES[row.variant][2]
    n = num(p.ordinal, row.i)
    pdf = row.i % 2 == 0
    binary_id = f"XR-{n}" if pdf else f"TR-{n}"
    author = practitioner_ref(rng.randrange(8))
    return {
        "resourceType": "DocumentReference",
        "id": str(n),
        "meta": meta(row),
        "text": narrative(
            "Document Reference", [("Document Type", display), ("Document Status", "Final")]
        ),
        "identifier": [
            {"system": "https://fhir.cerner.com/ceuuid", "value": f"CE{uuid.UUID(int=n)}-{n}"}
        ],
        "status": row.status,
        "docStatus": "final",
        "type": cc(ctx, 72, cerner, display, coding("http://loinc.org", loinc, display)),
        "category": [
            {
                "coding": [
                    coding(
                        "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",
                        "clinical-note",
                        "Clinical Note",
                    )
                ],
                "text": "Clinical Note",
            }
        ],
        "subject": patient_ref(p),
        "date": iso_s(row.ts),
        "author": [author],
        "authenticator": author,
        "content": [
            {
                "attachment": {
                    "contentType": "application/pdf" if pdf else "text/plain",
                    "url": f"{ctx.base}/Binary/{binary_id}",
                    "title": display,
                    "creation": iso(row.ts),
                },
                "format": {
                    "system": "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode",
                    "code": "urn:ihe:iti:xds:2017:mimeTypeSufficient",
                    "display": "mimeType Sufficient",
                },
            }
        ],
        "context": {
            "encounter": [encounter_ref(p, rng)],
            "period": {"start": iso(row.ts), "end": iso(row.ts + 1800)},
        },
    }


def render_care_plan(ctx: Ctx, p: TestPatient, row: Row, rng: random.Random) -> dict[str, Any]:
    return {
        "resourceType": "CarePlan",
        "id": str(num(p.ordinal, row.i)),
        "meta": meta(row),
        "text": narrative(
            "Care Plan", [("Title", "Assessment and plan"), ("Status", status_title(row.status))]
        ),
        "status": row.status,
        "intent": "plan",
        "category": [
            {
                "coding": [
                    coding(
                        "http://hl7.org/fhir/us/core/CodeSystem/careplan-category",
                        "assess-plan",
                        "Assessment and Plan of Treatment",
                    )
                ],
                "text": "Assessment and Plan of Treatment",
            }
        ],
        "title": "Assessment and plan",
        "subject": patient_ref(p),
        "period": {"start": iso(row.ts)},
        "author": practitioner_ref(rng.randrange(8)),
    }


def render_goal(ctx: Ctx, p: TestPatient, row: Row, rng: random.Random) -> dict[str, Any]:
    text = cat.GOALS[row.variant]
    return {
        "resourceType": "Goal",
        "id": str(num(p.ordinal, row.i)),
        "meta": meta(row),
        "text": narrative("Goal", [("Description", text)]),
        "lifecycleStatus": row.status,
        "achievementStatus": {
            "coding": [
                coding(
                    "http://terminology.hl7.org/CodeSystem/goal-achievement",
                    "in-progress",
                    "In Progress",
                )
            ],
            "text": "In Progress",
        },
        "category": [
            {
                "coding": [
                    coding(
                        "http://terminology.hl7.org/CodeSystem/goal-category", "dietary", "Dietary"
                    )
                ],
                "text": "Dietary",
            }
        ],
        "description": {"text": text},
        "subject": patient_ref(p),
        "startDate": day(row.ts),
        "target": [{"dueDate": day(row.ts + 180 * 86400)}],
        "statusDate": day(row.ts),
        "expressedBy": practitioner_ref(rng.randrange(8)),
        "note": [{"text": "Reviewed with patient."}],
    }


def render_care_team(ctx: Ctx, p: TestPatient, row: Row, rng: random.Random) -> dict[str, Any]:
    n = num(p.ordinal, row.i)
    k = row.i % 8  # part of the id: never from the rng
    if row.category == "encounter":
        rid = f"CARE_TEAM-{n}-{practitioner_id(k)}-0-0-0"
    else:
        rid = f"LIFETIME_PROVIDER-{n}-0-{practitioner_id(k)}-0-0-0"
    out: dict[str, Any] = {
        "resourceType": "CareTeam",
        "id": rid,
        "meta": meta(row),
        "text": narrative("Care Team", [("Category", row.category.title())]),
        "status": "active",
        "category": [
            {
                "coding": [
                    coding(
                        "http://loinc.org",
                        "LA27976-2" if row.category == "encounter" else "LA27975-4",
                        "Encounter-focused care team"
                        if row.category == "encounter"
                        else "Longitudinal care-coordination focused care team",
                    )
                ],
                "text": row.category.title(),
            }
        ],
        "subject": patient_ref(p),
        "participant": [
            {
                "role": [cc(ctx, 331, "1119", "Primary Care Physician")],
                "member": practitioner_ref(k),
            }
        ],
    }
    if row.category == "encounter":
        out["name"] = "Inpatient care team"
        out["encounter"] = encounter_ref(p, rng)
    return out


def render_device(ctx: Ctx, p: TestPatient, row: Row, rng: random.Random) -> dict[str, Any]:
    snomed, display = cat.DEVICES[row.variant]
    return {
        "resourceType": "Device",
        "id": str(num(p.ordinal, row.i)),
        "meta": meta(row),
        "text": narrative("Device", [("Type", display)]),
        "udiCarrier": [
            {
                "deviceIdentifier": f"0{num(p.ordinal, row.i)}",
                "carrierHRF": f"(01)0{num(p.ordinal, row.i)}",
            }
        ],
        "status": row.status,
        "manufacturer": "Sandbox Devices Inc.",
        "manufactureDate": iso(row.ts - YEAR),
        "expirationDate": iso(row.ts + 5 * YEAR),
        "lotNumber": f"LOT{row.i:04d}",
        "serialNumber": f"SN{num(p.ordinal, row.i)}",
        "deviceName": [{"name": display, "type": "user-friendly-name"}],
        "modelNumber": f"M-{row.variant}",
        "type": {"coding": [coding("http://snomed.info/sct", snomed, display)], "text": display},
        "patient": patient_ref(p),
        "owner": {"reference": f"Organization/{organization_id(0)}"},
    }


def render_service_request(
    ctx: Ctx, p: TestPatient, row: Row, rng: random.Random
) -> dict[str, Any]:
    lab = cat.LABS[row.variant]
    return {
        "resourceType": "ServiceRequest",
        "id": str(num(p.ordinal, row.i)),
        "meta": meta(row),
        "text": narrative(
            "Service Request", [("Code", lab[2]), ("Status", status_title(row.status))]
        ),
        "status": row.status,
        "intent": "order",
        "category": [
            {
                "coding": [coding("http://snomed.info/sct", "108252007", "Laboratory procedure")],
                "text": "Laboratory",
            }
        ],
        "priority": "routine",
        "code": cc(ctx, 200, lab[0], lab[2], coding("http://loinc.org", lab[1], lab[2])),
        "subject": patient_ref(p),
        "encounter": encounter_ref(p, rng),
        **(
            {
                "occurrencePeriod": {"start": iso(row.ts + 86400), "end": iso(row.ts + 7 * 86400)},
                "basedOn": [{"reference": f"CarePlan/{num(p.ordinal, 0)}"}],
            }
            if row.i % 2 == 0
            else {"occurrenceDateTime": iso(row.ts + 86400)}
        ),
        "authoredOn": iso(row.ts),
        "requester": practitioner_ref(rng.randrange(8)),
    }


def render_nutrition_order(
    ctx: Ctx, p: TestPatient, row: Row, rng: random.Random
) -> dict[str, Any]:
    return {
        "resourceType": "NutritionOrder",
        "id": str(num(p.ordinal, row.i)),
        "meta": meta(row),
        "text": narrative("Nutrition Order", [("Diet", "Low sodium")]),
        "status": row.status,
        "intent": "order",
        "patient": patient_ref(p),
        "encounter": encounter_ref(p, rng),
        "dateTime": iso(row.ts),
        "orderer": practitioner_ref(rng.randrange(8)),
        "foodPreferenceModifier": [cc(ctx, 16_755, "4317421", "No pork")],
        "oralDiet": {"type": [cc(ctx, 200, "2555231", "Low Sodium Diet")]},
    }


def render_consent(ctx: Ctx, p: TestPatient, row: Row, rng: random.Random) -> dict[str, Any]:
    return {
        "resourceType": "Consent",
        "id": f"AR-{num(p.ordinal, row.i)}-{p.fhir_id}",
        "meta": meta(row),
        "text": narrative("Consent", [("Scope", "Patient privacy")]),
        "status": "active",
        "scope": {
            "coding": [
                coding(
                    "http://terminology.hl7.org/CodeSystem/consentscope",
                    "patient-privacy",
                    "Privacy Consent",
                )
            ]
        },
        "category": [{"coding": [coding("http://loinc.org", "59284-0", "Patient Consent")]}],
        "patient": patient_ref(p),
        "policyRule": {
            "coding": [
                coding("http://terminology.hl7.org/CodeSystem/v3-ActCode", "OPTIN", "opt-in")
            ]
        },
        "provision": {"period": {"start": iso(row.ts)}},
    }


RENDERERS: dict[str, Callable[[Ctx, TestPatient, Row, random.Random], dict[str, Any]]] = {
    "Observation": render_observation,
    "Condition": render_condition,
    "AllergyIntolerance": render_allergy,
    "MedicationRequest": render_medication_request,
    "Immunization": render_immunization,
    "Procedure": render_procedure,
    "Encounter": render_encounter,
    "DiagnosticReport": render_diagnostic_report,
    "DocumentReference": render_document_reference,
    "CarePlan": render_care_plan,
    "Goal": render_goal,
    "CareTeam": render_care_team,
    "Device": render_device,
    "ServiceRequest": render_service_request,
    "NutritionOrder": render_nutrition_order,
    "Consent": render_consent,
}


def render_patient(ctx: Ctx, p: TestPatient) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": p.fhir_id,
        "meta": {"versionId": "3", "lastUpdated": iso(DATA_END - YEAR)},
        "text": narrative(
            "Patient",
            [
                ("Name", f"{p.family.upper()}, {p.given.upper()}"),
                ("Status", "Active"),
                ("DOB", p.birth_date),
            ],
        ),
        "extension": [
            {
                "extension": [
                    {
                        "valueCoding": {
                            "system": "urn:oid:2.16.840.1.113883.6.238",
                            "code": "2106-3",
                            "display": "White",
                            "userSelected": False,
                        },
                        "url": "ombCategory",
                    },
                    {"valueString": "White", "url": "text"},
                ],
                "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
            }
        ],
        "identifier": [
            {
                "id": f"CI-{p.fhir_id}-0",
                "use": "usual",
                "type": cc(
                    ctx,
                    4,
                    "10",
                    "MRN",
                    {
                        **coding(
                            "http://terminology.hl7.org/CodeSystem/v2-0203",
                            "MR",
                            "Medical record number",
                        ),
                        "userSelected": False,
                    },
                ),
                "system": "urn:oid:2.16.840.1.113883.6.1000",
                "value": str(6_900 + p.ordinal),
            }
        ],
        "active": True,
        "name": [
            {
                "use": "official",
                "text": f"{p.family.upper()}, {p.given.upper()}",
                "family": p.family.upper(),
                "given": [p.given.upper()],
            }
        ],
        "telecom": [{"system": "email", "value": f"{p.username}@sandbox.invalid", "use": "home"}],
        "gender": p.gender,
        "birthDate": p.birth_date,
        "address": [
            {
                "use": "home",
                "line": [f"{100 + p.ordinal} Sandbox Way"],
                "city": "Kansas City",
                "state": "MO",
                "postalCode": "64105",
                "country": "USA",
            }
        ],
        "generalPractitioner": [practitioner_ref(p.ordinal)],
        "managingOrganization": {"reference": f"Organization/{organization_id(0)}"},
    }


def render_shared(ctx: Ctx, rtype: str, rid: str) -> dict[str, Any] | None:
    m = {"versionId": "1", "lastUpdated": iso(DATA_END - 2 * YEAR)}
    if rtype == "Practitioner":
        for k in range(len(cat.PRACTITIONERS)):
            if practitioner_id(k) == rid:
                family, given, role = cat.PRACTITIONERS[k]
                return {
                    "resourceType": "Practitioner",
                    "id": rid,
                    "meta": m,
                    "text": narrative("Practitioner", [("Name", f"{family}, {given}")]),
                    "identifier": [
                        {
                            "system": "http://hl7.org/fhir/sid/us-npi",
                            "value": str(1_000_000_000 + k),
                        }
                    ],
                    "active": True,
                    "name": [
                        {
                            "use": "usual",
                            "text": f"{given} {family}",
                            "family": family,
                            "given": [given],
                            "prefix": ["Dr."] if role == "Physician" else [],
                        }
                    ],
                }
    if rtype == "Organization":
        for k, name in enumerate(cat.ORGANIZATIONS):
            if organization_id(k) == rid:
                return {
                    "resourceType": "Organization",
                    "id": rid,
                    "meta": m,
                    "text": narrative("Organization", [("Name", name)]),
                    "active": True,
                    "name": name,
                    "type": [
                        {
                            "coding": [
                                coding(
                                    "http://terminology.hl7.org/CodeSystem/organization-type",
                                    "prov",
                                    "Healthcare Provider",
                                )
                            ]
                        }
                    ],
                    "address": [
                        {
                            "line": ["2800 Rockcreek Parkway"],
                            "city": "Kansas City",
                            "state": "MO",
                            "postalCode": "64117",
                        }
                    ],
                }
    if rtype == "Location":
        for k, name in enumerate(cat.LOCATIONS):
            if location_id(k) == rid:
                return {
                    "resourceType": "Location",
                    "id": rid,
                    "meta": m,
                    "text": narrative("Location", [("Name", name)]),
                    "status": "active",
                    "name": name,
                    "mode": "instance",
                    "physicalType": {
                        "coding": [
                            coding(
                                "http://terminology.hl7.org/CodeSystem/location-physical-type",
                                "wa",
                                "Ward",
                            )
                        ]
                    },
                    "managingOrganization": {"reference": f"Organization/{organization_id(0)}"},
                }
    return None


def shared_ids(rtype: str) -> list[str]:
    if rtype == "Practitioner":
        return [practitioner_id(k) for k in range(len(cat.PRACTITIONERS))]
    if rtype == "Organization":
        return [organization_id(k) for k in range(len(cat.ORGANIZATIONS))]
    return [location_id(k) for k in range(len(cat.LOCATIONS))]
