"""Recurrence, time zones, daylight saving and quiet hours: exact instants."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import pytest

from engagement import scheduling
from engagement.models import Delivery, Occurrence, ReminderPreference
from engagement.services import occurrence_expand, occurrences_plan
from tests.factories import PatientFactory


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def occurrences(**kwargs) -> list[datetime]:
    return list(scheduling.local_occurrences(after=None, until=datetime(2030, 1, 1), **kwargs))


class TestDaylightSaving:
    def test_nine_local_stays_nine_local_across_spring_forward_in_new_york(self):
        days = occurrences(
            starts_on=date(2026, 3, 7),
            send_time=time(9),
            rule_text="FREQ=DAILY;COUNT=3",
            ends_on=None,
        )
        instants = [scheduling.to_instant(day, "America/New_York") for day in days]
        # 7 March is EST (UTC-5); 8 March 02:00 clocks go forward to EDT (UTC-4).
        assert instants == [utc(2026, 3, 7, 14), utc(2026, 3, 8, 13), utc(2026, 3, 9, 13)]
        assert [scheduling.to_local(i, "America/New_York") for i in instants] == days

    def test_nine_local_stays_nine_local_across_fall_back_in_new_york(self):
        days = occurrences(
            starts_on=date(2026, 10, 31),
            send_time=time(9),
            rule_text="FREQ=DAILY;COUNT=2",
            ends_on=None,
        )
        instants = [scheduling.to_instant(day, "America/New_York") for day in days]
        assert instants == [utc(2026, 10, 31, 13), utc(2026, 11, 1, 14)]

    def test_a_nonexistent_local_time_moves_forward_by_the_gap(self):
        # 02:30 does not exist in New York on 8 March 2026: sent at 03:30 EDT.
        instant = scheduling.to_instant(datetime(2026, 3, 8, 2, 30), "America/New_York")
        assert instant == utc(2026, 3, 8, 7, 30)
        assert scheduling.to_local(instant, "America/New_York") == datetime(2026, 3, 8, 3, 30)

    def test_an_ambiguous_local_time_is_sent_at_its_first_occurrence(self):
        # 01:30 happens twice in New York on 1 November 2026: the first (EDT, UTC-4) wins.
        instant = scheduling.to_instant(datetime(2026, 11, 1, 1, 30), "America/New_York")
        assert instant == utc(2026, 11, 1, 5, 30)

    def test_london_and_new_york_switch_on_different_days(self):
        local = datetime(2026, 3, 10, 9, 0)  # NY already on EDT, London still on GMT
        assert scheduling.to_instant(local, "America/New_York") == utc(2026, 3, 10, 13)
        assert scheduling.to_instant(local, "Europe/London") == utc(2026, 3, 10, 9)

    def test_through_the_outbox_a_daily_nine_oclock_follows_new_york_clocks(
        self, make_campaign, grant_engagement
    ):
        patient = PatientFactory.create(time_zone="America/New_York")
        grant_engagement(patient)
        make_campaign(starts_on=date(2026, 3, 7), rrule="FREQ=DAILY;COUNT=3")
        occurrences_plan(now=utc(2026, 3, 10))
        for occurrence in Occurrence.objects.all():
            occurrence_expand(occurrence_id=occurrence.pk)
        due = sorted(Delivery.objects.filter(patient=patient).values_list("due_at", flat=True))
        assert due == [utc(2026, 3, 7, 14), utc(2026, 3, 8, 13), utc(2026, 3, 9, 13)]

    def test_an_unknown_patient_time_zone_falls_back_to_utc(self):
        assert scheduling.due_at(datetime(2026, 3, 10, 9), time_zone="Mars/Olympus") == utc(
            2026, 3, 10, 9
        )


class TestRecurrence:
    def test_the_end_date_is_inclusive_and_nothing_follows_it(self):
        days = occurrences(
            starts_on=date(2026, 3, 7),
            send_time=time(9),
            rule_text="FREQ=DAILY",
            ends_on=date(2026, 3, 10),
        )
        assert days == [datetime(2026, 3, d, 9) for d in (7, 8, 9, 10)]

    def test_weekly_on_given_days(self):
        days = occurrences(
            starts_on=date(2026, 3, 2),
            send_time=time(18, 30),
            rule_text="RRULE:FREQ=WEEKLY;BYDAY=MO,TH",
            ends_on=date(2026, 3, 12),
        )
        assert days == [
            datetime(2026, 3, 2, 18, 30),
            datetime(2026, 3, 5, 18, 30),
            datetime(2026, 3, 9, 18, 30),
            datetime(2026, 3, 12, 18, 30),
        ]

    def test_one_off_without_a_rule(self):
        days = occurrences(
            starts_on=date(2026, 3, 7), send_time=time(9), rule_text="", ends_on=None
        )
        assert days == [datetime(2026, 3, 7, 9)]

    @pytest.mark.parametrize(
        "rule",
        ["FREQ=MINUTELY", "FREQ=SECONDLY", "DTSTART:20260101T000000\nRRULE:FREQ=DAILY", "nonsense"],
    )
    def test_rules_that_are_refused(self, rule):
        with pytest.raises(scheduling.ScheduleError):
            scheduling.parse_rule(rule, dtstart=datetime(2026, 3, 7, 9))

    def test_planning_creates_each_occurrence_once_and_finishes_the_campaign(self, make_campaign):
        campaign = make_campaign(rrule="FREQ=DAILY", ends_on=date(2026, 3, 10))
        now = utc(2026, 3, 20)
        assert occurrences_plan(now=now) == 4
        assert occurrences_plan(now=now) == 0  # a second beat run adds nothing
        starts = list(
            Occurrence.objects.filter(campaign=campaign).values_list("local_start", flat=True)
        )
        assert starts == [utc(2026, 3, d, 9) for d in (7, 8, 9, 10)]  # floating, UTC carrier
        campaign.refresh_from_db()
        assert campaign.status == "finished"

    def test_an_occurrence_is_planned_14_hours_before_local_time(self, make_campaign):
        campaign = make_campaign(starts_on=date(2026, 3, 10))
        assert occurrences_plan(now=utc(2026, 3, 9, 18, 59)) == 0
        assert occurrences_plan(now=utc(2026, 3, 9, 19, 0)) == 1
        occurrence = Occurrence.objects.get(campaign=campaign)
        assert occurrence.expand_after == utc(2026, 3, 9, 19)


class TestQuietHours:
    def test_quiet_hours_over_midnight(self):
        assert scheduling.after_quiet_hours(datetime(2026, 6, 1, 23), time(22), time(8)) == (
            datetime(2026, 6, 2, 8)
        )
        assert scheduling.after_quiet_hours(datetime(2026, 6, 1, 7, 59), time(22), time(8)) == (
            datetime(2026, 6, 1, 8)
        )
        assert scheduling.after_quiet_hours(datetime(2026, 6, 1, 8), time(22), time(8)) == (
            datetime(2026, 6, 1, 8)
        )

    def test_quiet_hours_within_a_day(self):
        assert scheduling.after_quiet_hours(datetime(2026, 6, 1, 13), time(12), time(14)) == (
            datetime(2026, 6, 1, 14)
        )
        assert scheduling.after_quiet_hours(datetime(2026, 6, 1, 11), time(12), time(14)) == (
            datetime(2026, 6, 1, 11)
        )

    def test_one_occurrence_across_time_zones_and_quiet_hours(
        self, make_campaign, grant_engagement
    ):
        """07:30 local on 10 June 2026 for four patients in four zones."""
        new_york = PatientFactory.create(time_zone="America/New_York")
        ReminderPreference.objects.create(patient=new_york, quiet_start=time(22), quiet_end=time(8))
        tokyo = PatientFactory.create(time_zone="Asia/Tokyo")
        london = PatientFactory.create(time_zone="Europe/London")
        ReminderPreference.objects.create(patient=london, quiet_start=time(21), quiet_end=time(7))
        sydney = PatientFactory.create(time_zone="Australia/Sydney")
        ReminderPreference.objects.create(patient=sydney, quiet_start=time(7), quiet_end=time(9))
        for patient in (new_york, tokyo, london, sydney):
            grant_engagement(patient)
        campaign = make_campaign(starts_on=date(2026, 6, 10), send_time=time(7, 30))
        occurrences_plan(now=utc(2026, 6, 9, 18))
        occurrence = Occurrence.objects.get(campaign=campaign)
        occurrence_expand(occurrence_id=occurrence.pk)
        due = dict(Delivery.objects.values_list("patient_id", "due_at"))
        assert due == {
            new_york.pk: utc(2026, 6, 10, 12),  # quiet until 08:00 EDT
            tokyo.pk: utc(2026, 6, 9, 22, 30),  # 07:30 JST
            london.pk: utc(2026, 6, 10, 6, 30),  # 07:30 BST, after quiet hours
            sydney.pk: utc(2026, 6, 9, 23),  # quiet until 09:00 AEST
        }

    def test_quiet_hours_ending_in_a_dst_gap(self):
        due = scheduling.due_at(
            datetime(2026, 3, 8, 1, 30),
            time_zone="America/New_York",
            quiet_start=time(1),
            quiet_end=time(2, 30),
        )
        assert due == utc(2026, 3, 8, 7, 30)  # 02:30 does not exist: 03:30 EDT
