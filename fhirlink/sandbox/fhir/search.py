"""Cerner's search rules: required parameters, supported filters, _count, total, ordering."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .data import Row


class SearchError(Exception):
    def __init__(self, diagnostics: str, status: int = 400, code: str = "invalid") -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Spec:
    required: tuple[tuple[str, ...], ...]
    params: tuple[str, ...]
    count: tuple[int, int] | None = None  # (default, max) when _count is supported
    page_size: int = 50  # when it is not
    total: bool = False
    ascending: bool = False
    revinclude: bool = True


P = ("patient",)
PS = (("patient",), ("subject",), ("_id",))
PI = (("patient",), ("_id",))
SPECS: dict[str, Spec] = {
    "Observation": Spec(
        PS, ("category", "code", "date", "_lastUpdated", "_count", "_revinclude"), count=(50, 200)
    ),
    "Condition": Spec(
        PS, ("clinical-status", "category", "encounter", "_lastUpdated", "_revinclude"), total=True
    ),
    "AllergyIntolerance": Spec(PI, ("clinical-status", "_lastUpdated", "_revinclude")),
    "MedicationRequest": Spec(
        PI,
        ("status", "intent", "-timing-boundsPeriod", "_lastUpdated", "_count", "_revinclude"),
        count=(50, 100),
    ),
    "Immunization": Spec(PI, ("date", "_lastUpdated", "target-disease", "_revinclude"), total=True),
    "Procedure": Spec(PS, ("date", "_lastUpdated"), revinclude=False),
    "Encounter": Spec(
        (("patient",), ("subject",), ("_id",), ("account",), ("identifier",)),
        ("date", "status", "_count", "_lastUpdated", "_revinclude"),
        count=(50, 100),
        total=True,
        ascending=True,
    ),
    "DiagnosticReport": Spec(
        PI,
        ("encounter", "date", "_lastUpdated", "category", "code", "_count", "_revinclude"),
        count=(10, 100),
    ),
    "DocumentReference": Spec(
        PI,
        (
            "encounter",
            "type",
            "category",
            "date",
            "period",
            "_lastUpdated",
            "_count",
            "_revinclude",
        ),
        count=(10, 100),
    ),
    "CarePlan": Spec(
        (("patient", "category"), ("_id",)), ("date", "_count", "_revinclude"), count=(10, 100)
    ),
    "Goal": Spec(PI, ("target-date",), revinclude=False),
    "CareTeam": Spec(
        (("patient",), ("encounter",), ("_id",)), ("category", "status", "_revinclude")
    ),
    "Device": Spec(PI, ("_revinclude",), total=True),
    "ServiceRequest": Spec(PI, ("status", "_lastUpdated")),
    "NutritionOrder": Spec(PI, ("status",)),
    "Consent": Spec(PI, ("status",)),
    "Patient": Spec(
        (
            ("_id",),
            ("identifier",),
            ("name",),
            ("family",),
            ("given",),
            ("birthdate",),
            ("phone",),
            ("email",),
            ("address-postalcode",),
        ),
        ("gender", "_count", "_revinclude"),
        count=(20, 100),
        total=True,
    ),
    "Provenance": Spec((("_id",), ("target",)), (), revinclude=False),
    "Practitioner": Spec((("_id",),), (), revinclude=False),
    "Organization": Spec((("_id",),), (), revinclude=False),
    "Location": Spec((("_id",),), (), revinclude=False),
}
SUPPORTED_TYPES = (*SPECS, "Binary")
PAGING = ("-pageContext", "-pageDirection")


def _bounds(value: str) -> tuple[int, int, bool]:
    """(start, end) epoch seconds of a FHIR date/dateTime, and whether it had a time."""
    try:
        if len(value) == 4:
            start = datetime(int(value), 1, 1, tzinfo=UTC)
            return (
                int(start.timestamp()),
                int(start.replace(year=start.year + 1).timestamp()) - 1,
                False,
            )
        if len(value) == 7:
            y, m = int(value[:4]), int(value[5:7])
            start = datetime(y, m, 1, tzinfo=UTC)
            end = datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=UTC)
            return int(start.timestamp()), int(end.timestamp()) - 1, False
        if len(value) == 10:
            start = datetime.fromisoformat(value).replace(tzinfo=UTC)
            return int(start.timestamp()), int((start + timedelta(days=1)).timestamp()) - 1, False
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            raise ValueError("a time needs a zone")
        ts = int(moment.timestamp())
        return ts, ts, True
    except ValueError:
        raise SearchError(f"Invalid date value '{value}'.") from None


def _date_test(prefix: str, start: int, end: int) -> Callable[[int], bool]:
    def test(ts: int) -> bool:
        if prefix == "eq":
            return start <= ts <= end
        if prefix == "ge":
            return ts >= start
        if prefix == "gt":
            return ts > end
        if prefix == "le":
            return ts <= end
        return ts < start  # "lt"

    return test


def _field_in(field: str, wanted: set[str]) -> Callable[[Row], bool]:
    def test(row: Row) -> bool:
        return getattr(row, field) in wanted

    return test


def _code_in(wanted: set[str]) -> Callable[[Row], bool]:
    def test(row: Row) -> bool:
        return bool(wanted & set(row.code.split("|")))

    return test


def date_predicate(
    values: list[str],
    *,
    allowed: tuple[str, ...] = ("eq", "ge", "gt", "le", "lt"),
    time_required: bool = False,
    max_values: int = 2,
) -> Callable[[int], bool]:
    if len(values) > max_values:
        raise SearchError("Too many date values.")
    tests: list[Callable[[int], bool]] = []
    for raw in values:
        prefix = raw[:2] if raw[:2].isalpha() else "eq"
        value = raw[2:] if raw[:2].isalpha() else raw
        if prefix not in allowed:
            raise SearchError(f"The prefix '{prefix}' is not supported here.")
        start, end, has_time = _bounds(value)
        if time_required and not has_time:
            raise SearchError("A time is required on this date parameter.")
        tests.append(_date_test(prefix, start, end))
    return lambda ts: all(t(ts) for t in tests)


def ts_range(rtype: str, q: dict[str, list[str]]) -> tuple[int, int] | None:
    """Inclusive bounds on a row's clinical time (``Row.ts``) implied by the date filters, so
    an index sorted by it can be sliced before the predicate runs (the predicate still runs:
    this only skips rows that cannot match). None when no filter bounds ``ts``."""
    values = [*q.get("period", []), *q.get("-timing-boundsPeriod", [])]
    if rtype != "Goal":
        values += q.get("date", [])
    if not values:
        return None
    lo, hi = -(2**62), 2**62
    for raw in values:
        prefix = raw[:2] if raw[:2].isalpha() else "eq"
        try:
            start, end, _ = _bounds(raw[2:] if raw[:2].isalpha() else raw)
        except SearchError:
            return None  # build_predicate reports it
        if prefix in {"eq", "ge"}:
            lo = max(lo, start)
        if prefix == "gt":
            lo = max(lo, end + 1)
        if prefix in {"eq", "le"}:
            hi = min(hi, end)
        if prefix == "lt":
            hi = min(hi, start - 1)
    return lo, hi


def token_values(raw: str) -> set[str]:
    """``system|code`` or ``code``, comma-separated: the codes."""
    return {v.split("|")[-1] for v in raw.split(",") if v}


def build_predicate(
    rtype: str, q: dict[str, list[str]]
) -> tuple[tuple[Any, ...], Callable[[Row], bool] | None]:
    """(a cache key, a row predicate) for the filters in ``q``."""
    tests: list[Callable[[Row], bool]] = []
    if rtype == "Observation" and q.get("date") and q.get("_lastUpdated"):
        raise SearchError("date and _lastUpdated cannot be combined.")
    if q.get("date"):
        dp = date_predicate(q["date"])
        if rtype == "Goal":
            tests.append(lambda r: dp(r.ts + 180 * 86400))
        else:
            tests.append(lambda r: dp(r.ts))
    if q.get("period"):
        pp = date_predicate(q["period"])
        tests.append(lambda r: pp(r.ts))
    if q.get("target-date"):
        td = date_predicate(q["target-date"])
        tests.append(lambda r: td(r.ts + 180 * 86400))
    if q.get("_lastUpdated"):
        kwargs: dict[str, Any] = {}
        if rtype == "Immunization":
            kwargs["allowed"] = ("gt", "ge")
        if rtype == "MedicationRequest":
            kwargs["allowed"] = ("le", "ge")
            kwargs["time_required"] = True
        lp = date_predicate(q["_lastUpdated"], **kwargs)
        tests.append(lambda r: lp(r.lu))
    if q.get("-timing-boundsPeriod"):
        bp = date_predicate(q["-timing-boundsPeriod"], allowed=("ge",))
        tests.append(lambda r: bp(r.ts))
    for param in ("category", "clinical-status", "status", "type", "code"):
        if not q.get(param):
            continue
        wanted = token_values(",".join(q[param]))
        if param == "category":
            if rtype != "CarePlan":
                tests.append(_field_in("category", wanted))
        elif param in {"clinical-status", "status"}:
            tests.append(_field_in("status", wanted))
        else:
            if rtype == "Observation" and "85354-9" not in wanted:
                # Blood pressure only by its panel code, never by a component code.
                wanted = wanted - {"8480-6", "8462-4"}
            tests.append(_code_in(wanted))
    if q.get("intent") and "order" not in token_values(",".join(q["intent"])):
        tests.append(lambda r: False)
    if rtype == "CarePlan" and token_values(",".join(q.get("category", []))) - {"assess-plan"}:
        raise SearchError("CarePlan search by patient requires category=assess-plan.")
    key = tuple(sorted((k, tuple(v)) for k, v in q.items()))
    if not tests:
        return (), None
    return key, (lambda r: all(t(r) for t in tests))
