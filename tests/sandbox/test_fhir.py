"""The FHIR server: bearer tokens, scopes, compartment, search rules, paging, Binary."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from fhirlink.sandbox.fhir.data import DATA_END, iso

from .conftest import FULL_SCOPES

pytestmark = pytest.mark.integration

INSUFFICIENT_SCOPE = {
    "code": 403,
    "message": (
        'code="urn:cerner:error:oauth2:resource-access:insufficient-scopes", '
        'error="insufficient_scope", subcode="no_scope_for_resource_path"'
    ),
}


def _next(bundle):
    return next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)


def _ids(bundle, rtype=None):
    return [
        e["resource"]["id"]
        for e in bundle["entry"]
        if rtype is None or e["resource"]["resourceType"] == rtype
    ]


def test_no_token_is_401_with_an_operation_outcome_and_challenge(sandbox):
    response = requests.get(f"{sandbox.fhir_base}/Observation?patient=12800101", timeout=10)

    assert response.status_code == 401
    assert (
        response.headers["WWW-Authenticate"]
        == 'Bearer realm="fhir-myrecord.cerner.com", error="invalid_token", '
        'error_description="Token has expired or signature is invalid"'
    )
    assert response.json() == {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "login",
                "diagnostics": response.headers["WWW-Authenticate"],
                "location": ["http.Authorization"],
            }
        ],
    }
    assert "WWW-Authenticate" in response.headers["Access-Control-Expose-Headers"]


def test_an_invalid_token_is_401(sandbox):
    response = requests.get(
        f"{sandbox.fhir_base}/Patient/12800101",
        headers={"Authorization": "Bearer forged"},
        timeout=10,
    )

    assert response.status_code == 401


def test_a_token_is_only_good_at_its_own_tenant(sandbox, nancy):
    other = sandbox.create_tenant("11111111-2222-3333-4444-555555555555")

    response = nancy.get(f"{sandbox.fhir_base_for(other)}/Patient/{nancy.token['patient']}")

    assert response.status_code == 401


def test_missing_scope_is_cerners_non_fhir_403(smart, sandbox):
    launch = smart.launch(scopes=["launch/patient", "patient/Patient.rs"])

    response = launch.get(f"{sandbox.fhir_base}/Condition?patient={launch.token['patient']}")

    assert response.status_code == 403
    assert response.json() == INSUFFICIENT_SCOPE


def test_observation_s_allows_search_but_not_read(sandbox, nancy):
    bundle = nancy.get(f"{sandbox.fhir_base}/Observation?patient={nancy.token['patient']}").json()
    some_id = _ids(bundle)[0]

    response = nancy.get(f"{sandbox.fhir_base}/Observation/{some_id}")

    assert response.status_code == 403
    assert response.json() == INSUFFICIENT_SCOPE


def test_observation_read_scope_allows_read(smart, sandbox):
    sandbox.register_client("v1-app", "https://app.example.org/callback", smart_version="v1")
    launch = smart.launch(client_id="v1-app", scopes=["launch/patient", "patient/Observation.read"])
    bundle = launch.get(f"{sandbox.fhir_base}/Observation?patient={launch.token['patient']}").json()
    some_id = _ids(bundle)[-1]

    response = launch.get(f"{sandbox.fhir_base}/Observation/{some_id}")

    assert response.status_code == 200
    assert response.json()["id"] == some_id


def test_the_patient_compartment_is_enforced(smart, sandbox, nancy):
    joe = smart.launch(patient="joe")
    joe_condition = _ids(
        joe.get(f"{sandbox.fhir_base}/Condition?patient={joe.token['patient']}").json()
    )[0]

    search = nancy.get(f"{sandbox.fhir_base}/Condition?patient={joe.token['patient']}")
    read = nancy.get(f"{sandbox.fhir_base}/Condition/{joe_condition}")
    patient = nancy.get(f"{sandbox.fhir_base}/Patient/{joe.token['patient']}")
    by_id = nancy.get(f"{sandbox.fhir_base}/Condition?_id={joe_condition}")

    assert search.status_code == 403
    assert read.status_code == 403
    assert patient.status_code == 403
    assert by_id.status_code == 200
    assert by_id.json()["entry"] == []


def test_missing_required_parameter_is_400(sandbox, nancy):
    response = nancy.get(f"{sandbox.fhir_base}/Condition?clinical-status=active")

    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"
    assert response.json()["issue"][0]["diagnostics"] == "No supported search parameters provided."


def test_careplan_by_patient_needs_category_assess_plan(sandbox, nancy):
    pid = nancy.token["patient"]

    assert nancy.get(f"{sandbox.fhir_base}/CarePlan?patient={pid}").status_code == 400
    ok = nancy.get(f"{sandbox.fhir_base}/CarePlan?patient={pid}&category=assess-plan")
    assert ok.status_code == 200
    assert len(ok.json()["entry"]) == 3


def test_observation_count_default_50_max_200_and_no_total(sandbox, smart):
    hugo = smart.launch(patient="hugo")
    pid = hugo.token["patient"]

    default = hugo.get(f"{sandbox.fhir_base}/Observation?patient={pid}").json()
    big = hugo.get(f"{sandbox.fhir_base}/Observation?patient={pid}&_count=1000").json()

    assert "total" not in default
    social = [e for e in default["entry"] if e["resource"]["id"].startswith("SH-")]
    assert len(social) == 3
    assert len(default["entry"]) == 50 + 3
    assert len(big["entry"]) == 200 + 3


def test_social_history_comes_on_page_one_whatever_the_count(sandbox, nancy):
    bundle = nancy.get(
        f"{sandbox.fhir_base}/Observation?patient={nancy.token['patient']}&_count=2"
    ).json()

    ids = _ids(bundle)
    assert len(ids) == 5
    assert [i.split("-")[0] for i in ids[:3]] == ["SH", "SH", "SH"]
    second = nancy.get(_next(bundle)).json()
    assert not any(i.startswith("SH-") for i in _ids(second))


def test_observation_paging_follows_opaque_next_links_newest_first_without_gaps(sandbox, nancy):
    url = f"{sandbox.fhir_base}/Observation?patient={nancy.token['patient']}&_count=40"
    seen, dates, pages = [], [], 0
    while url:
        response = nancy.get(url)
        assert response.status_code == 200
        bundle = response.json()
        pages += 1
        for entry in bundle["entry"]:
            seen.append(entry["resource"]["id"])
            if not entry["resource"]["id"].startswith("SH-"):
                dates.append(entry["resource"]["effectiveDateTime"])
        url = _next(bundle)
        if url:
            query = parse_qs(urlsplit(url).query)
            assert set(query) == {"patient", "-pageContext", "-pageDirection"}
            assert query["-pageDirection"] == ["NEXT"]

    assert len(seen) == len(set(seen)) == 180
    assert pages == 5
    assert dates == sorted(dates, reverse=True)


def test_a_tampered_page_context_is_400(sandbox, nancy):
    bundle = nancy.get(
        f"{sandbox.fhir_base}/Observation?patient={nancy.token['patient']}&_count=10"
    ).json()
    url = _next(bundle).replace("-pageContext=", "-pageContext=x")

    assert nancy.get(url).status_code == 400


def test_a_page_context_cannot_be_replayed_by_another_patient(smart, sandbox, nancy):
    joe = smart.launch(patient="joe")
    url = _next(
        nancy.get(
            f"{sandbox.fhir_base}/Observation?patient={nancy.token['patient']}&_count=10"
        ).json()
    )

    assert joe.get(url).status_code in {400, 403}


def test_observation_filters_category_code_and_date(sandbox, smart):
    hugo = smart.launch(patient="hugo")
    base = f"{sandbox.fhir_base}/Observation?patient={hugo.token['patient']}&_count=200"

    labs = hugo.get(f"{base}&category=laboratory").json()
    glucose = hugo.get(f"{base}&code=http://loinc.org|2345-7").json()
    in_2020 = hugo.get(f"{base}&date=ge2020-01-01&date=lt2020-02-01").json()

    assert {e["resource"]["category"][0]["coding"][0]["code"] for e in labs["entry"]} == {
        "laboratory"
    }
    assert all(
        e["resource"]["code"]["coding"][1]["code"] == "2345-7"
        for e in glucose["entry"]
        if e["resource"]["id"].startswith("L-")
    )
    dates = [e["resource"]["effectiveDateTime"] for e in in_2020["entry"]]
    assert dates
    assert all("2020-01-01" <= d < "2020-02-01" for d in dates)
    assert hugo.get(f"{base}&date=ge2020-01-01&_lastUpdated=ge2020-01-01").status_code == 400
    assert hugo.get(f"{base}&date=ge2020&date=le2021&date=le2022").status_code == 400


def test_blood_pressure_only_by_its_panel_code(sandbox, nancy):
    base = f"{sandbox.fhir_base}/Observation?patient={nancy.token['patient']}&_count=200"

    panel = nancy.get(f"{base}&code=85354-9").json()
    component = nancy.get(f"{base}&code=8480-6").json()

    assert len(panel["entry"]) > 0
    assert all(
        "component" in e["resource"] or e["resource"]["status"] == "entered-in-error"
        for e in panel["entry"]
        if not e["resource"]["id"].startswith("SH-")
    )
    assert [e for e in component["entry"] if not e["resource"]["id"].startswith("SH-")] == []


def test_total_only_where_cerner_gives_it(sandbox, nancy):
    pid = nancy.token["patient"]

    condition = nancy.get(f"{sandbox.fhir_base}/Condition?patient={pid}").json()
    encounter = nancy.get(f"{sandbox.fhir_base}/Encounter?patient={pid}").json()
    medication = nancy.get(f"{sandbox.fhir_base}/MedicationRequest?patient={pid}").json()
    documents = nancy.get(f"{sandbox.fhir_base}/DocumentReference?patient={pid}").json()

    assert condition["total"] == 12
    assert encounter["total"] == 20
    assert "total" not in medication
    assert "total" not in documents


def test_encounters_are_oldest_first(sandbox, nancy):
    bundle = nancy.get(
        f"{sandbox.fhir_base}/Encounter?patient={nancy.token['patient']}&_count=5"
    ).json()

    starts = [e["resource"]["period"]["start"] for e in bundle["entry"]]
    assert starts == sorted(starts)
    following = nancy.get(_next(bundle)).json()
    assert following["entry"][0]["resource"]["period"]["start"] >= starts[-1]


def test_document_reference_count_and_suppressed_outcome(sandbox, nancy):
    bundle = nancy.get(
        f"{sandbox.fhir_base}/DocumentReference?patient={nancy.token['patient']}"
    ).json()

    outcomes = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    documents = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "DocumentReference"]
    assert len(documents) == 8  # 9 documents, one sensitive
    assert len(outcomes) == 1
    assert outcomes[0]["resource"]["issue"][0]["code"] == "suppressed"
    assert outcomes[0]["fullUrl"].startswith("urn:uuid:")
    assert _next(bundle) is None


def test_entered_in_error_resources_are_masked(sandbox, smart):
    hugo = smart.launch(patient="hugo")
    bundle = hugo.get(f"{sandbox.fhir_base}/Condition?patient={hugo.token['patient']}").json()
    while not any(
        e["resource"].get("verificationStatus", {}).get("coding", [{}])[0].get("code")
        == "entered-in-error"
        for e in bundle["entry"]
    ):
        bundle = hugo.get(_next(bundle)).json()

    masked = next(
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["verificationStatus"]["coding"][0]["code"] == "entered-in-error"
    )

    assert masked["code"] == {
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
    assert "clinicalStatus" not in masked


def test_last_updated_filter(sandbox, nancy):
    pid = nancy.token["patient"]
    cutoff = iso(DATA_END - 365 * 86400)

    recent = nancy.get(
        f"{sandbox.fhir_base}/Condition?patient={pid}&_lastUpdated=gt{cutoff}"
    ).json()

    assert all(e["resource"]["meta"]["lastUpdated"] > cutoff for e in recent["entry"])
    assert len(recent["entry"]) < 12
    assert (
        nancy.get(
            f"{sandbox.fhir_base}/MedicationRequest?patient={pid}&_lastUpdated=ge2020-01-01"
        ).status_code
        == 400
    )  # time required
    assert (
        nancy.get(
            f"{sandbox.fhir_base}/MedicationRequest?patient={pid}&_lastUpdated=ge2020-01-01T00:00:00Z"
        ).status_code
        == 200
    )


def test_id_search_excludes_other_parameters(sandbox, nancy):
    pid = nancy.token["patient"]
    first = _ids(nancy.get(f"{sandbox.fhir_base}/Condition?patient={pid}").json())[:2]

    by_id = nancy.get(f"{sandbox.fhir_base}/Condition?_id={','.join(first)}").json()

    assert sorted(_ids(by_id)) == sorted(first)
    assert (
        nancy.get(
            f"{sandbox.fhir_base}/Condition?_id={first[0]}&clinical-status=active"
        ).status_code
        == 400
    )


def test_revinclude_provenance_needs_a_provenance_scope(smart, sandbox, nancy):
    pid = nancy.token["patient"]
    with_provenance = nancy.get(
        f"{sandbox.fhir_base}/Condition?patient={pid}&_revinclude=Provenance:target"
    ).json()
    no_scope = smart.launch(untick=("patient/Provenance.rs",))

    assert {e["resource"]["resourceType"] for e in with_provenance["entry"]} == {
        "Condition",
        "Provenance",
    }
    assert (
        no_scope.get(
            f"{sandbox.fhir_base}/Condition?patient={pid}&_revinclude=Provenance:target"
        ).json()
        == INSUFFICIENT_SCOPE
    )
    provenance = next(
        e["resource"]
        for e in with_provenance["entry"]
        if e["resource"]["resourceType"] == "Provenance"
    )
    assert nancy.get(f"{sandbox.fhir_base}/Provenance/{provenance['id']}").json() == provenance
    assert (
        nancy.get(
            f"{sandbox.fhir_base}/Provenance?target={provenance['target'][0]['reference']}"
        ).json()["entry"][0]["resource"]
        == provenance
    )


def test_every_patient_type_searches_and_reads(sandbox, nancy):
    pid = nancy.token["patient"]
    for rtype in (
        "Condition",
        "AllergyIntolerance",
        "MedicationRequest",
        "Immunization",
        "Procedure",
        "Encounter",
        "DiagnosticReport",
        "DocumentReference",
        "Goal",
        "CareTeam",
        "Device",
        "ServiceRequest",
        "NutritionOrder",
        "Consent",
    ):
        response = nancy.get(f"{sandbox.fhir_base}/{rtype}?patient={pid}")
        assert response.status_code == 200, rtype
        bundle = response.json()
        assert bundle["type"] == "searchset"
        first = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == rtype)
        read = nancy.get(f"{sandbox.fhir_base}/{rtype}/{first['resource']['id']}")
        assert read.status_code == 200, rtype
        assert read.json() == first["resource"]
        assert first["fullUrl"] == f"{sandbox.fhir_base}/{rtype}/{first['resource']['id']}"


def test_referenced_practitioner_organization_location_are_readable(sandbox, smart, nancy):
    encounter = nancy.get(f"{sandbox.fhir_base}/Encounter?patient={nancy.token['patient']}").json()[
        "entry"
    ][1]["resource"]
    practitioner = encounter["participant"][0]["individual"]["reference"]
    organization = encounter["serviceProvider"]["reference"]
    # Without their scopes, references are refused like any other type (issue #20).
    denied = nancy.get(f"{sandbox.fhir_base}/{practitioner}")
    assert denied.status_code == 403
    assert denied.json() == INSUFFICIENT_SCOPE  # Cerner's shape, not an OperationOutcome

    refs = ["user/Practitioner.rs", "user/Organization.rs", "user/Location.rs"]
    launch = smart.launch(patient="nancy", scopes=[*FULL_SCOPES, *refs])
    assert launch.get(f"{sandbox.fhir_base}/{practitioner}").json()["resourceType"] == (
        "Practitioner"
    )
    assert launch.get(f"{sandbox.fhir_base}/{organization}").json()["resourceType"] == (
        "Organization"
    )
    assert launch.get(f"{sandbox.fhir_base}/Practitioner/999").status_code == 404


def test_patient_read_and_search(sandbox, nancy):
    pid = nancy.token["patient"]

    read = nancy.get(f"{sandbox.fhir_base}/Patient/{pid}").json()
    search = nancy.get(f"{sandbox.fhir_base}/Patient?_id={pid}").json()

    assert read["id"] == pid
    assert (
        read["identifier"][0]["type"]["coding"][0]["system"]
        == f"https://fhir.cerner.com/{sandbox.tenant}/codeSet/4"
    )
    assert search["total"] == 1
    assert nancy.get(f"{sandbox.fhir_base}/Patient?gender=female").status_code == 400


def test_binary_by_accept(sandbox, nancy):
    document = nancy.get(
        f"{sandbox.fhir_base}/DocumentReference?patient={nancy.token['patient']}"
    ).json()["entry"][0]["resource"]
    attachment = document["content"][0]["attachment"]
    url = attachment["url"]
    assert url.startswith(f"{sandbox.fhir_base}/Binary/")

    as_fhir = nancy.get(url)
    raw = nancy.get(url, headers={"Accept": attachment["contentType"]})
    refused = nancy.get(url, headers={"Accept": "application/json"})

    assert as_fhir.json()["resourceType"] == "Binary"
    assert as_fhir.json()["contentType"] == attachment["contentType"]
    assert base64.b64decode(as_fhir.json()["data"]) == raw.content
    assert raw.headers["Content-Type"].startswith(attachment["contentType"])
    if attachment["contentType"] == "application/pdf":
        assert raw.content.startswith(b"%PDF-1.4")
    assert refused.status_code == 406


def test_binary_needs_a_document_scope(smart, sandbox, nancy):
    url = nancy.get(
        f"{sandbox.fhir_base}/DocumentReference?patient={nancy.token['patient']}"
    ).json()["entry"][0]["resource"]["content"][0]["attachment"]["url"]
    binary_only = smart.launch(scopes=["launch/patient", "patient/Binary.r"])

    assert binary_only.get(url).json() == INSUFFICIENT_SCOPE


def test_writes_are_refused(sandbox, nancy):
    response = nancy.oauth.post(
        f"{sandbox.fhir_base}/Observation", json={"resourceType": "Observation"}, timeout=10
    )

    assert response.status_code == 405


def test_unknown_resource_is_404(sandbox, nancy):
    assert nancy.get(f"{sandbox.fhir_base}/Condition/p99999999").status_code == 404
    assert nancy.get(f"{sandbox.fhir_base}/Condition/p19999999").status_code == 404
