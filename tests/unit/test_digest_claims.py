"""The digest's decision for a channel whose claim exists (tutors/digest.py next_step), pure: a digest is never
posted twice for a week and channel, an unconfirmed post is never repeated, a late task of an earlier run never
overwrites a later run's figures, and a claim left by a dead delivery is taken over only after its lease."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from progress_monitor.contracts.values import RunId
from progress_monitor.tutors.claims import DONE, Step, next_step

RUN = RunId(date(2026, 6, 8))
RERUN = RunId(date(2026, 6, 8), "rerun")
NOW = datetime(2026, 6, 8, 12, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)

bodies = st.fixed_dictionaries(
    {
        "run_id": st.sampled_from([str(RUN), str(RERUN), "garbage", None]),
        "status": st.sampled_from([None, "updating", "unconfirmed", *DONE]),
        "ts": st.sampled_from([None, "", "1717845600.000001"]),
        "claimed_at": st.sampled_from(
            [(NOW - timedelta(minutes=m)).isoformat() for m in (0, 4, 6, 600)] + ["not a time", "2026-06-08T12:00"]
        ),
    }
)


def step(body: dict[str, Any], run: RunId = RUN, later: bool = False) -> Step:
    return next_step(body, run, NOW, LEASE, lambda _: later)


@given(bodies, st.sampled_from([RUN, RERUN]), st.booleans())
def test_the_decision_for_any_claim(body: dict[str, Any], run: RunId, later: bool) -> None:
    got = step(body, run, later)
    same_run = body["run_id"] == str(run)
    if body["status"] == "unconfirmed":
        assert got in (Step.SKIP, Step.RECORD_UNCONFIRMED)  # Slack may have posted it: never again
        assert (got is Step.RECORD_UNCONFIRMED) == same_run
    if same_run and body["status"] in DONE and body["ts"]:
        assert got is Step.SKIP  # this run's digest is in the channel
    if body["ts"] and not same_run and not later:
        assert got is Step.SKIP  # a late task of an earlier run changes nothing
    if got is Step.TAKE_OVER:
        assert not body["ts"]  # posting a new message only where none is known
    if got is Step.UPDATE:
        assert body["ts"] and (same_run or later)


def test_a_claim_being_worked_on_waits_for_its_lease_then_is_taken_over() -> None:
    working = {"run_id": str(RUN), "status": None, "ts": None}
    assert step({**working, "claimed_at": (NOW - timedelta(minutes=4)).isoformat()}, RERUN) is Step.WAIT
    assert step({**working, "claimed_at": (NOW - timedelta(minutes=6)).isoformat()}, RERUN) is Step.TAKE_OVER
    assert step({**working, "claimed_at": "not a time"}, RERUN) is Step.TAKE_OVER  # protects nothing
    updating = {"run_id": str(RUN), "status": "updating", "ts": "1.2", "claimed_at": NOW.isoformat()}
    assert step(updating, RERUN, later=True) is Step.WAIT
    refused = {"run_id": str(RUN), "status": "refused", "ts": None, "claimed_at": NOW.isoformat()}
    assert step(refused) is Step.TAKE_OVER  # asked again after the cause was fixed


def test_a_re_run_updates_the_posted_message_and_an_earlier_run_does_not() -> None:
    posted = {"run_id": str(RUN), "status": "posted", "ts": "1.2", "claimed_at": NOW.isoformat()}
    assert step(posted, RERUN, later=True) is Step.UPDATE
    assert step(posted, RERUN, later=False) is Step.SKIP
