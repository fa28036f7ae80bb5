"""Time arithmetic for reminders: recurrence, per-patient time zones, quiet hours.

A campaign's schedule is *floating*: "09:00" means 09:00 on each patient's own clock. Floating
local times are naive datetimes here; `to_instant` fixes them to a UTC instant in one time zone.

Daylight saving is handled deterministically:
- a local time that does not exist (the spring-forward gap) is moved forward by the length of
  the gap (02:30 on a New York spring-forward day is sent at 03:30 EDT);
- a local time that happens twice (fall back) is sent at its first occurrence (fold=0).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.rrule import DAILY, HOURLY, MONTHLY, WEEKLY, YEARLY, rrule, rrulestr

# Every time zone's offset lies within these bounds (UTC-12 .. UTC+14).
EARLIEST_ZONE_OFFSET = timedelta(hours=14)
LATEST_ZONE_OFFSET = timedelta(hours=12)
ALLOWED_FREQUENCIES = {YEARLY, MONTHLY, WEEKLY, DAILY, HOURLY}
MAX_OCCURRENCES_PER_PLAN = 1000


class ScheduleError(ValueError):
    """A recurrence rule or time zone that cannot be used (the message is safe to show)."""


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError("Unknown time zone.") from exc


def parse_rule(rule_text: str, *, dtstart: datetime) -> rrule:
    """An RFC 5545 RRULE (without DTSTART) anchored at a naive local `dtstart`."""
    text = rule_text.strip()
    if text.upper().startswith("RRULE:"):
        text = text[6:]
    if "DTSTART" in text.upper() or "\n" in text:
        raise ScheduleError("Give only the RRULE part; the start comes from the campaign.")
    try:
        parsed = rrulestr(text, dtstart=dtstart)
    except (ValueError, TypeError) as exc:
        raise ScheduleError("Not a valid RFC 5545 recurrence rule.") from exc
    if not isinstance(parsed, rrule):
        raise ScheduleError("Give one recurrence rule.")
    if getattr(parsed, "_freq", None) not in ALLOWED_FREQUENCIES:
        raise ScheduleError("Reminders recur at most hourly.")
    return parsed


def local_occurrences(
    *,
    starts_on: date,
    send_time: time,
    rule_text: str,
    ends_on: date | None,
    after: datetime | None,
    until: datetime,
) -> Iterator[datetime]:
    """Floating local occurrences in (after, until], never past the end of `ends_on`."""
    dtstart = datetime.combine(starts_on, send_time.replace(tzinfo=None, microsecond=0))
    limit = until
    if ends_on is not None:
        limit = min(limit, datetime.combine(ends_on, time.max))
    if not rule_text.strip():
        if dtstart <= limit and (after is None or dtstart > after):
            yield dtstart
        return
    rule = parse_rule(rule_text, dtstart=dtstart)
    lower = after if after is not None else dtstart - timedelta(seconds=1)
    for produced, occurrence in enumerate(rule.xafter(lower, inc=False)):
        if occurrence > limit or produced >= MAX_OCCURRENCES_PER_PLAN:
            return
        yield occurrence


def to_instant(local: datetime, time_zone: str) -> datetime:
    """A naive local wall time in `time_zone` as an aware UTC instant (see module doc on DST)."""
    tz = zone(time_zone)
    aware = local.replace(tzinfo=tz, fold=0)
    instant = aware.astimezone(UTC)
    # In a gap, fold=0 reads the time with the offset before the transition: that is already
    # "moved forward by the gap". Check the round trip to document the intent.
    return instant


def in_quiet_hours(local: time, quiet_start: time | None, quiet_end: time | None) -> bool:
    if quiet_start is None or quiet_end is None or quiet_start == quiet_end:
        return False
    if quiet_start < quiet_end:
        return quiet_start <= local < quiet_end
    return local >= quiet_start or local < quiet_end  # over midnight, e.g. 21:00-08:00


def after_quiet_hours(
    local: datetime, quiet_start: time | None, quiet_end: time | None
) -> datetime:
    """The local time to send at: `local` itself, or the end of the quiet hours it falls in."""
    if (
        quiet_start is None
        or quiet_end is None
        or not in_quiet_hours(local.time(), quiet_start, quiet_end)
    ):
        return local
    end_today = datetime.combine(local.date(), quiet_end)
    return end_today if end_today > local else end_today + timedelta(days=1)


def due_at(
    local: datetime,
    *,
    time_zone: str,
    quiet_start: time | None = None,
    quiet_end: time | None = None,
) -> datetime:
    """When a floating local occurrence is due for one patient, as a UTC instant.

    Quiet hours are applied on the patient's local clock; the result is then fixed to an instant
    (so a quiet-hours end that falls in a DST gap is moved forward like any other local time).
    An unknown time zone on the patient's row falls back to UTC rather than losing the reminder.
    """
    try:
        zone(time_zone)
    except ScheduleError:
        time_zone = "UTC"
    return to_instant(after_quiet_hours(local, quiet_start, quiet_end), time_zone)


def floating_to_carrier(local: datetime) -> datetime:
    """Floating local time -> the aware value stored in a DateTimeField (UTC as a carrier)."""
    return local.replace(tzinfo=UTC)


def carrier_to_floating(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


def to_local(instant: datetime, time_zone: str) -> datetime:
    """An aware instant as naive local wall time in `time_zone` (UTC if the zone is unknown)."""
    try:
        tz = zone(time_zone)
    except ScheduleError:
        tz = ZoneInfo("UTC")
    return instant.astimezone(tz).replace(tzinfo=None)
