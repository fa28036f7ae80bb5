"""SMART scopes by the standard (issue #20): v1/v2, wildcards, the CapabilityStatement as the
authority and scopes_supported as a hint, granular category grants; Cerner's rules kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fhirlink.scopes import (
    BASE_SCOPES,
    compare_grant,
    effective_syntax,
    granted_categories,
    granted_resources,
    parse_resource_scope,
    requested_resources,
    requested_scopes,
    scope_plan,
)

LAB = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
VITALS = "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"
LIVE_CERNER = (
    Path(__file__).resolve().parents[3]
    / "shared/cerner-r4-examples/_observed-live/smart-configuration-fhir-myrecord-patient.json"
)


def test_parse_v1_v2_wildcard_and_granular():
    v1 = parse_resource_scope("patient/Observation.read")
    assert v1 is not None
    assert (v1.syntax, v1.reads, v1.categories) == ("v1", True, None)
    v2 = parse_resource_scope("user/Practitioner.rs")
    assert v2 is not None
    assert (v2.context, v2.resource, v2.syntax) == ("user", "Practitioner", "v2")
    wild = parse_resource_scope("patient/*.rs")
    assert wild is not None
    assert wild.resource == "*"
    granular = parse_resource_scope(f"patient/Observation.rs?category={LAB}")
    assert granular is not None
    assert granular.categories == frozenset({LAB})
    assert parse_resource_scope("patient/Observation.c") is not None
    assert parse_resource_scope("patient/Observation.c").reads is False  # type: ignore[union-attr]
    assert parse_resource_scope("patient/Observation.read?category=x") is None  # v1: no query
    assert parse_resource_scope("launch/patient") is None


def test_wildcards_only_server_gets_every_supported_type_per_type():
    """The issue's failure: patient/*.rs plus per-type .read forms, default v2 syntax."""
    listed = [*BASE_SCOPES, "patient/*.rs", "patient/Observation.read", "patient/Condition.read"]
    scopes, chosen = requested_scopes(
        resources=["Patient", "Observation", "Condition", "Goal"],
        supported_resources=["Patient", "Observation", "Condition"],
        scopes_supported=listed,
        syntax="v2",
    )
    assert scopes == [
        *BASE_SCOPES,
        "patient/Patient.rs",
        "patient/Observation.rs",
        "patient/Condition.rs",
    ]
    assert chosen == ["Patient", "Observation", "Condition"]


def test_v1_only_server_is_asked_in_v1_even_for_a_v2_registration():
    listed = [*BASE_SCOPES, "patient/*.read"]
    assert effective_syntax("v2", capabilities=["permission-v1"], scopes_supported=listed) == "v1"
    assert effective_syntax("v2", capabilities=None, scopes_supported=listed) == "v1"
    # Both advertised (Cerner): the registration decides.
    both = ["permission-v1", "permission-v2"]
    assert effective_syntax("v2", capabilities=both, scopes_supported=listed) == "v2"
    scopes, _ = requested_scopes(
        resources=["Observation"], supported_resources=None, scopes_supported=listed, syntax="v1"
    )
    assert scopes[4:] == ["patient/Observation.read"]


def test_scopes_supported_is_a_hint_and_the_capability_statement_the_authority():
    listed = ["patient/Observation.s", "patient/Binary.r", "user/Practitioner.rs"]
    choices = {
        c.resource: c
        for c in scope_plan(
            resources=["Observation", "Coverage", "Basic"],
            reference_resources=["Practitioner", "Binary", "Medication"],
            supported_resources=["Observation", "Coverage", "Practitioner", "Binary"],
            scopes_supported=listed,
            syntax="v2",
        )
    }
    assert choices["Observation"].scope == "patient/Observation.s"  # Cerner: no .rs
    assert choices["Coverage"].scope == "patient/Coverage.rs"  # not listed: still asked for
    assert choices["Coverage"].advertised == "not listed"
    assert choices["Basic"].scope is None  # not in the CapabilityStatement
    assert choices["Basic"].in_capability_statement is False
    assert choices["Practitioner"].scope == "user/Practitioner.rs"
    assert choices["Practitioner"].reference is True
    assert choices["Binary"].scope == "patient/Binary.r"
    assert choices["Medication"].scope is None


def test_only_the_read_part_of_a_listed_v2_form_is_asked_for():
    scopes, _ = requested_scopes(
        resources=["Observation"],
        supported_resources=None,
        scopes_supported=["patient/Observation.cruds"],
        syntax="v2",
    )
    assert scopes[4:] == ["patient/Observation.rs"]


@pytest.mark.skipif(not LIVE_CERNER.exists(), reason="../shared Cerner examples absent")
def test_cerner_live_list_no_wildcards_v2_and_v1():
    live = json.loads(LIVE_CERNER.read_text())
    types = ["Patient", "Observation", "Condition", "DocumentReference"]
    refs = ["Practitioner", "Organization", "Location", "Binary"]
    v2, _ = requested_scopes(
        resources=types,
        reference_resources=refs,
        supported_resources=None,
        scopes_supported=live["scopes_supported"],
        syntax=effective_syntax(
            "v2",
            capabilities=live["capabilities"],
            scopes_supported=live["scopes_supported"],
        ),
    )
    assert v2[4:] == [
        "patient/Patient.rs",
        "patient/Observation.s",
        "patient/Condition.rs",
        "patient/DocumentReference.rs",
        "user/Practitioner.rs",
        "user/Organization.rs",
        "user/Location.rs",
        "patient/Binary.r",
    ]
    assert not any("*" in s for s in v2)
    v1, _ = requested_scopes(
        resources=types,
        reference_resources=refs,
        supported_resources=None,
        scopes_supported=live["scopes_supported"],
        syntax="v1",
    )
    assert all(s.endswith(".read") for s in v1[4:])


def test_grants_wildcard_granular_and_declined():
    granted = (
        f"launch/patient openid patient/Observation.rs?category={LAB} "
        f"patient/Observation.rs?category={VITALS} patient/Condition.rs user/Practitioner.rs"
    ).split()
    assert granted_resources(granted) == ["Observation", "Condition", "Practitioner"]
    assert granted_categories(granted) == {"Observation": [LAB, VITALS]}
    assert compare_grant(
        requested=["Observation", "Condition", "Organization"], granted=granted
    ) == (["Observation", "Condition"], ["Organization"])
    # An unrestricted scope for the type wins over the granular ones.
    assert granted_categories([*granted, "patient/Observation.s"]) == {}
    # A granted wildcard covers every requested type.
    assert compare_grant(requested=["Observation", "Goal"], granted=["patient/*.read"]) == (
        ["Observation", "Goal"],
        [],
    )
    # Write-only and system scopes grant no reading.
    assert compare_grant(
        requested=["Observation", "Goal"], granted=["patient/Observation.c", "system/Goal.rs"]
    ) == ([], ["Observation", "Goal"])


def test_requested_resources_of_a_scope_string():
    assert requested_resources(
        "launch/patient openid patient/Observation.s user/Practitioner.rs patient/*.rs"
    ) == ["Observation", "Practitioner"]
