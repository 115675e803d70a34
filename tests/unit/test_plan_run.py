"""Which run a schedule message asks for: the week in the school's time zone, re-runs and tag filters."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from progress_monitor.contracts.events import PubSubMessage
from progress_monitor.contracts.values import RunId, monday_of
from progress_monitor.errors import PermanentError
from progress_monitor.pipeline.runs import extraction_refusal
from progress_monitor.settings import Settings
from progress_monitor.stages.schedule import RunPlan, plan_run

CFG = Settings()  # America/Sao_Paulo, the real Cademi
SIMULATED = Settings(cademi_base_url="http://127.0.0.1:8081/api/v1")  # can serve any week of its scenario
NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


def message(body: dict[str, Any] | None = None, published: str | None = None) -> PubSubMessage:
    when = datetime.fromisoformat(published) if published else None
    return PubSubMessage("m-1", json.dumps(body or {}).encode(), {}, when)


@pytest.mark.parametrize(
    ("published", "week"),
    [
        ("2026-11-23T11:00:00+00:00", date(2026, 11, 23)),  # Monday 08:00 in São Paulo: the scheduled slot
        ("2026-11-23T03:30:00+00:00", date(2026, 11, 23)),  # Monday 00:30 in São Paulo
        ("2026-11-23T02:30:00+00:00", date(2026, 11, 16)),  # still Sunday 23:30 in São Paulo: last week
        ("2026-11-29T23:00:00+00:00", date(2026, 11, 23)),  # Sunday 20:00: the week's last hours
        # Brazil's last daylight-saving period (UTC-2 from 2018-11-04 to 2019-02-16): the zone's rules apply.
        ("2018-11-05T02:30:00+00:00", date(2018, 11, 5)),  # Monday 00:30 under DST (Sunday 23:30 without)
        ("2019-02-18T02:30:00+00:00", date(2019, 2, 11)),  # Sunday 23:30 just after DST ended
    ],
)
def test_the_week_is_the_publish_times_week_in_sao_paulo(published: str, week: date) -> None:
    handled = datetime.fromisoformat(published)  # delivered at once, as the schedule message is
    assert plan_run(CFG, message(published=published), now=handled) == RunPlan(RunId(week))


def test_the_same_slot_redelivered_a_day_later_is_the_same_run() -> None:
    slot = message(published="2026-11-23T11:00:00+00:00")
    later = datetime(2026, 11, 24, 11, 0, tzinfo=UTC)
    assert plan_run(CFG, slot, now=NOW) == plan_run(CFG, slot, now=later)


def test_without_a_publish_time_the_current_week_is_used() -> None:
    assert plan_run(CFG, message(), now=NOW).run_id == RunId(date(2026, 11, 23))


def test_week_rerun_and_tags_are_read_from_the_body() -> None:
    plan = plan_run(CFG, message({"week": "2026-11-26", "rerun": "fix-1", "tag_ids": [7001, 7002]}), now=NOW)
    assert plan == RunPlan(RunId(date(2026, 11, 23), "fix-1"), frozenset({7001, 7002}))


def test_a_past_week_is_refused_unless_cademi_is_the_simulator() -> None:
    """Cademi serves today's progress: a past week would file it under an old date (replay rebuilds the past)."""
    for body, published in (({"week": "2026-01-05", "rerun": "x"}, None), ({}, "2026-11-16T11:00:00+00:00")):
        with pytest.raises(PermanentError):
            plan_run(CFG, message(body, published), now=NOW)
    assert plan_run(SIMULATED, message({"week": "2026-01-05"}), now=NOW).run_id == RunId(date(2026, 1, 5))


def test_a_future_week_is_refused() -> None:
    with pytest.raises(PermanentError):
        plan_run(CFG, message({"week": "2026-11-30"}), now=NOW)
    with pytest.raises(PermanentError):
        plan_run(SIMULATED, message(published="2026-11-30T12:00:00+00:00"), now=NOW)


@given(st.dates(date(2026, 1, 1), date(2027, 12, 31)), st.datetimes(datetime(2026, 1, 1), datetime(2027, 12, 31)))
def test_one_rule_decides_which_weeks_the_schedule_resume_and_extraction_may_extract(week: date, at: datetime) -> None:
    """Issue 30 finding 7: the schedule, a piece's extraction, the daily resume and the replay command share
    `extraction_refusal`: the current week always; a past one only from the simulator; a future one never."""
    now = at.replace(tzinfo=UTC)
    current = monday_of(now, CFG.timezone)
    monday = week - timedelta(days=week.weekday())
    assert (extraction_refusal(CFG, monday, now) is None) == (monday == current)
    assert (extraction_refusal(SIMULATED, monday, now) is None) == (monday <= current)
    if monday <= current and monday != current:
        with pytest.raises(PermanentError):
            plan_run(CFG, message({"week": monday.isoformat()}), now=now)
        assert plan_run(SIMULATED, message({"week": monday.isoformat()}), now=now).run_id == RunId(monday)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"week": "next monday"}, "week"),
        ({"week": "2026-02-30"}, "week"),
        ({"rerun": "Again"}, "rerun"),
        ({"rerun": "x" * 21}, "rerun"),
        ({"rerun": 5}, "rerun"),
        ({"rerun": "abc\n"}, "rerun"),  # "$" would have let the newline through into the run id
        ({"week": "２０２６-11-23"}, "week"),  # full-width digits
        ({"week": "2026-11-23\n"}, "week"),
        ({"tag_ids": "7001"}, "tag_ids"),
        ({"tag_ids": [7001, "7002"]}, "tag_ids"),
        ({"tag_ids": [True]}, "tag_ids"),
    ],
)
def test_malformed_schedule_fields_are_refused_by_name(body: dict[str, Any], field: str) -> None:
    with pytest.raises(PermanentError, match=field):
        plan_run(CFG, message(body), now=NOW)
