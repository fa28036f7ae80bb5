"""The security suite's fixtures: fhirlink's consenting patients, test health system and fake
Cerner (tests/fhirlink/conftest.py), for the launch attack tests."""

from tests.fhirlink.conftest import (  # noqa: F401 (pytest fixtures, found by name)
    connect,
    consenting_patient,
    ehr,
    health_system,
    other_patient,
    sandbox_connect,
)
