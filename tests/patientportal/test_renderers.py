"""The API's orjson renderer gives DRF's JSONRenderer's bytes and errors (NaN and the spelling of
float exponents aside)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.utils.translation import gettext_lazy
from rest_framework.renderers import JSONRenderer as DRFJSONRenderer

from patientportal.core.api.renderers import JSONRenderer

UTC = dt.UTC
SAMPLES: list[Any] = [
    {},
    [],
    {"a": 1, "b": [1, 2.5, -0.0, 0.1, 36.6, 1234.5678, True, False, None], "c": "x"},
    {"when": dt.datetime(2024, 3, 1, 9, 30, 0, 250000, tzinfo=UTC)},
    {"when": dt.datetime(2024, 3, 1, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5)))},
    {"naive": dt.datetime(2024, 3, 1, 9, 30), "day": dt.date(2024, 3, 1)},
    {"time": dt.time(9, 30, 15, 120), "span": dt.timedelta(hours=1, seconds=3)},
    {"amount": Decimal("12.50"), "id": uuid.UUID("7b0e4b8e-9a55-4c1e-9d0f-2f1c1b7a9e01")},
    {"lazy": gettext_lazy("Not found.")},
    {"text": 'Température, 体温, emoji 🩺, quote " backslash \\ tab \t newline \n nul \x00'},
    {"separators": "line\u2028paragraph\u2029end", "control": "\x1f"},
    {"nested": {"deep": [{"k": [1, {"x": "y"}]}]}, "tuple": (1, 2)},
    {"big": 2**63 - 1, "negative": -(2**63)},
    {"huge": 2**70},  # beyond 64 bits: DRF's path
    {1: "integer key"},  # non-string key: DRF's path
]


@pytest.mark.parametrize("data", SAMPLES, ids=range(len(SAMPLES)))
def test_same_bytes_as_drf(data):
    assert JSONRenderer().render(data) == DRFJSONRenderer().render(data)


def test_exponent_floats_same_values():
    """orjson spells small exponents its way (1e-7, not 1e-07): the same numbers."""
    data = {"v": [1e16, 1.0e-7, 6.02e23, -2.5e-300]}
    ours = JSONRenderer().render(data)
    assert ours == b'{"v":[1e+16,1e-7,6.02e+23,-2.5e-300]}'
    assert json.loads(ours) == json.loads(DRFJSONRenderer().render(data)) == data


def test_indent_is_drfs_pretty_print():
    data = {"a": [1, 2], "when": dt.datetime(2024, 1, 1, tzinfo=UTC)}
    ours = JSONRenderer().render(data, "application/json; indent=4")
    assert ours == DRFJSONRenderer().render(data, "application/json; indent=4")
    assert b"\n    " in ours


def test_none_is_empty_body():
    assert JSONRenderer().render(None) == b""


def test_unserialisable_raises_like_drf():
    with pytest.raises(TypeError):
        DRFJSONRenderer().render({"x": object()})
    with pytest.raises(TypeError):
        JSONRenderer().render({"x": object()})


def test_nan_renders_null_instead_of_failing():
    with pytest.raises(ValueError, match="Out of range float"):
        DRFJSONRenderer().render({"v": float("nan")})
    assert JSONRenderer().render({"v": float("nan"), "w": float("inf")}) == b'{"v":null,"w":null}'


def test_api_uses_it(settings):
    assert settings.REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"] == [
        "patientportal.core.api.renderers.JSONRenderer"
    ]
