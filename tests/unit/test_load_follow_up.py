"""The load stage's decision after a merge (stages/load.py follow_up): reports and digests follow the load that
finishes a run, once; a later load (replay, duplicate, a shard an erasure rewrote) never posts a digest."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import given
from hypothesis import strategies as st

from progress_monitor.contracts.values import RunId
from progress_monitor.pipeline.runs import FINISHED, RunState
from progress_monitor.stages.load import FollowUp, follow_up

WEEK = date(2026, 6, 8)
STATUSES = st.sampled_from([None, "running", "failed", *FINISHED])
WEEKS = st.sampled_from([None, WEEK - timedelta(days=7), WEEK, WEEK + timedelta(days=7)])


def test_the_load_that_finishes_the_newest_week_rebuilds_the_reports_and_asks_for_the_digests() -> None:
    run = RunId(WEEK)
    assert follow_up(run, RunState("succeeded", False, WEEK), 0) == FollowUp(True, True)
    assert follow_up(run, RunState("incomplete", False, WEEK), 3) == FollowUp(True, True)


def test_a_past_week_finishing_late_rebuilds_the_reports_and_posts_nothing() -> None:
    run = RunId(WEEK)
    assert follow_up(run, RunState("succeeded", False, WEEK + timedelta(days=7)), 5) == FollowUp(True, False)


def test_a_reload_of_a_finished_run_rebuilds_the_reports_only_when_it_changed_the_history() -> None:
    run = RunId(WEEK)
    assert follow_up(run, RunState("succeeded", True, WEEK), 0) == FollowUp(False, False)
    assert follow_up(run, RunState("succeeded", True, WEEK), 4) == FollowUp(True, False)


@given(STATUSES, st.booleans(), WEEKS, st.integers(0, 50))
def test_digests_only_once_per_run_only_for_the_newest_week_and_never_before_it_finished(
    status: str | None, refreshed: bool, newest: date | None, merged: int
) -> None:
    then = follow_up(RunId(WEEK), RunState(status, refreshed, newest), merged)
    if then.request_digests:
        assert then.refresh_reports and status in FINISHED and not refreshed
        assert newest is None or newest <= WEEK
    if status not in FINISHED:
        assert then == FollowUp(False, False)
