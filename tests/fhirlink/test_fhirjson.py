"""`fhirjson`: orjson's speed, the standard library's values."""

from __future__ import annotations

import json
import math

import pytest

from fhirlink import fhirjson

CASES = [
    b'{"resourceType":"Observation","valueQuantity":{"value":36.6}}',
    b'{"a":123456789012345678901234567890}',  # beyond 64 bits: orjson would round it
    b'{"a":-9223372036854775809,"b":18446744073709551615}',
    b'{"a":"9999999999999999999 in a string"}',
    b'{"a":NaN,"b":Infinity,"c":-Infinity}',  # not JSON, but `json` reads it
    b'{"a":"\\ud800 lone surrogate"}',
    b'{"a":"Temp\xc3\xa9rature \xf0\x9f\xa9\xba \\u2028","b":[1.5e300,1e-05,null,true]}',
]


@pytest.mark.parametrize("raw", CASES)
def test_loads_gives_what_json_gives(raw):
    expected = json.loads(raw)
    got = fhirjson.loads(raw)
    # json.dumps tells an int from a float, and every digit.
    assert json.dumps(got, sort_keys=True) == json.dumps(expected, sort_keys=True)


@pytest.mark.parametrize("raw", [b"", b"{", b'{"a":1}x', b"\xff"])
def test_loads_refuses_what_is_not_json(raw):
    with pytest.raises((json.JSONDecodeError, UnicodeDecodeError)):
        fhirjson.loads(raw)


@pytest.mark.parametrize("raw", CASES)
def test_canonical_reads_back_to_the_same_value(raw):
    value = json.loads(raw)
    canonical = fhirjson.canonical(value)
    canonical.decode("utf-8")  # valid UTF-8, lone surrogates included (escaped)
    back = fhirjson.loads(canonical)
    assert json.dumps(back, sort_keys=True) == json.dumps(value, sort_keys=True)


def test_canonical_is_sorted_compact_utf8_and_keeps_nan():
    value = {"b": [1, {"d": "é", "c": None}], "a": 0.5}
    assert fhirjson.canonical(value) == '{"a":0.5,"b":[1,{"c":null,"d":"é"}]}'.encode()
    assert math.isnan(fhirjson.loads(fhirjson.canonical({"a": float("nan")}))["a"])
    assert fhirjson.canonical({"a": 2**70}) == b'{"a":1180591620717411303424}'
