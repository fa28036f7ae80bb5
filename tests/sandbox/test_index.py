"""The sandbox's index: a date-filtered search slices the time-sorted index before filtering,
and returns exactly what filtering every row would."""

from __future__ import annotations

import pytest

from fhirlink.sandbox.conf import DEMO_TENANT, LARGE_PATIENT
from fhirlink.sandbox.fhir.index import rows_for
from fhirlink.sandbox.fhir.search import build_predicate, ts_range

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "dates",
    [
        ["ge2020-01-01", "lt2020-02-01"],
        ["le2019-06-30T12:00:00Z", "gt2019-06-01T00:00:00Z"],
        ["2021-03"],
        ["lt1990"],
        ["ge2031-01-01"],  # after every row: empty
        ["le2020-01-01", "ge2020-02-01"],  # an empty range
    ],
)
def test_a_date_window_is_sliced_then_filtered_to_the_same_rows(dates):
    q = {"date": dates}
    key, predicate = build_predicate("Observation", q)
    bounds = ts_range("Observation", q)
    assert bounds is not None
    scanned, scanned_keys = rows_for(
        DEMO_TENANT, LARGE_PATIENT, "Observation", ("scan", *key), predicate, 0
    )
    sliced, sliced_keys = rows_for(
        DEMO_TENANT, LARGE_PATIENT, "Observation", ("slice", *key), predicate, 0, bounds
    )
    assert list(sliced) == list(scanned)
    assert sliced_keys == scanned_keys


def test_only_filters_on_the_clinical_time_bound_the_slice():
    assert ts_range("Observation", {"_lastUpdated": ["ge2020-01-01"]}) is None
    assert ts_range("Goal", {"date": ["ge2020-01-01"]}) is None  # Goal's date is target + 180d
    assert ts_range("Observation", {"date": ["ge2020-01-01T00:00:00Z"]}) == (1577836800, 2**62)
    assert ts_range("Observation", {"date": ["2020-01-01"]}) == (1577836800, 1577923199)
