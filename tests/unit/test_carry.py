"""The carry rule (carrying/rule.py), case by case: when a student's progress call is skipped and when it is read."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from progress_monitor.carrying import rule
from progress_monitor.carrying.rule import Previous, Reason, decide
from progress_monitor.carrying.store import plan_for_piece
from progress_monitor.contracts.carry_plan import CarriedValue, CarryPlan
from progress_monitor.contracts.messages import ProgressTask
from progress_monitor.contracts.objects import ShardMeta, parse_progress_shard
from progress_monitor.contracts.objects import progress_shard_name as shard_name
from progress_monitor.contracts.values import RunId
from progress_monitor.platform.shard_store import Roster
from progress_monitor.settings import Settings, SettingsError
from tests.unit.offline import offline_services

TZ = "America/Sao_Paulo"  # UTC-3: a run's snapshot time is 03:00 UTC on its Monday
WEEK = date(2026, 10, 26)  # this run's snapshot Monday
LAST_WEEK = date(2026, 10, 19)
LAST_RUN = "2026-10-19"
LAST_RUN_START = datetime(2026, 10, 19, 3, 0, tzinfo=UTC)
BEFORE = LAST_RUN_START - timedelta(days=2)  # studied before last week's run started


def ok(source_run: str = LAST_RUN, known_access: datetime | None = BEFORE, total: float | None = 40.0) -> Previous:
    return Previous("ok", total, 8, 7, source_run, known_access)


def decided(last_access: datetime | None, previous: Previous | None, weeks: int = 4) -> Reason:
    return decide(last_access, previous, snapshot_date=WEEK, tz=TZ, full_read_weeks=weeks)


# -- one case at a time ---------------------------------------------------------------------------------------


def test_no_access_since_the_last_observations_run_started_is_carried() -> None:
    assert decided(BEFORE, ok()) is Reason.CARRY


def test_the_start_is_the_snapshot_time_in_the_schools_time_zone_not_utc_midnight() -> None:
    assert decided(LAST_RUN_START - timedelta(seconds=1), ok(known_access=None)) is Reason.CARRY
    assert decided(LAST_RUN_START, ok(known_access=None)) is Reason.ACCESSED_SINCE  # not strictly earlier: read
    assert decided(datetime(2026, 10, 19, 1, 0, tzinfo=UTC), ok(known_access=None)) is Reason.CARRY  # Sunday 22:00


def test_any_access_after_the_run_started_reads() -> None:
    assert decided(LAST_RUN_START + timedelta(hours=5), ok()) is Reason.ACCESSED_SINCE
    assert decided(datetime(2026, 10, 25, 23, 0, tzinfo=UTC), ok()) is Reason.ACCESSED_SINCE


def test_a_last_access_later_than_this_runs_own_start_reads() -> None:
    # a local run of a past week sees accesses "in its future"; a cloud run sees this morning's: both read
    assert decided(datetime(2026, 10, 27, 12, 0, tzinfo=UTC), ok()) is Reason.ACCESSED_SINCE


def test_an_unknown_last_access_reads() -> None:
    # null, malformed and future values never reach the rule: last_accesses() leaves them out (unknown)
    assert decided(None, ok()) is Reason.UNKNOWN_ACCESS


def test_a_last_access_moving_backwards_reads() -> None:
    seen = BEFORE
    assert decided(seen - timedelta(minutes=1), ok(known_access=seen)) is Reason.ACCESS_MOVED_BACK
    assert decided(seen, ok(known_access=seen)) is Reason.CARRY  # unchanged: the inactive student


def test_no_earlier_observation_reads() -> None:
    # first week in the class, a class change (rows of another class are never looked up), or nothing in N weeks
    assert decided(BEFORE, None) is Reason.NO_OBSERVATION


@pytest.mark.parametrize("status", ["failed", "no_access"])
def test_an_earlier_failed_or_no_access_row_reads(status: str) -> None:
    assert decided(BEFORE, Previous(status, None, None, None, LAST_RUN, BEFORE)) is Reason.NOT_OK


def test_an_ok_row_without_values_reads() -> None:
    assert decided(BEFORE, ok(total=None)) is Reason.NOT_OK


@pytest.mark.parametrize("source", ["garbage", "2026-10-20", "2026-10-26", "2026-11-02"])
def test_an_observation_that_is_not_an_earlier_run_reads(source: str) -> None:
    assert decided(BEFORE, ok(source_run=source)) is Reason.NO_OBSERVATION


def test_a_carried_row_carries_from_the_run_that_read_it() -> None:
    # last week's row was itself carried from 2026-10-05's read: the cutoff is that run's start
    carried = ok(source_run="2026-10-05", known_access=None)
    between = datetime(2026, 10, 10, 12, 0, tzinfo=UTC)  # after 10-05's start, before 10-19's
    assert decided(between, carried) is Reason.ACCESSED_SINCE
    assert decided(datetime(2026, 10, 4, 12, 0, tzinfo=UTC), carried) is Reason.CARRY


def test_an_observation_read_by_a_rerun_names_its_run() -> None:
    assert decided(BEFORE, ok(source_run="2026-10-19-fix1")) is Reason.CARRY


def test_a_full_read_is_due_every_n_weeks() -> None:
    three_weeks = ok(source_run="2026-10-05", known_access=None)
    four_weeks = ok(source_run="2026-09-28", known_access=None)
    early = datetime(2026, 9, 20, tzinfo=UTC)
    assert decided(early, three_weeks) is Reason.CARRY
    assert decided(early, four_weeks) is Reason.FULL_READ_DUE
    assert decided(early, ok(), weeks=1) is Reason.FULL_READ_DUE  # N = 1: never carry


# -- the plan of a tag --------------------------------------------------------------------------------------

RUN = RunId(WEEK)


def make_plan(
    units: list[tuple[int, ...]], previous: dict[tuple[int, int], Previous], accesses: dict[int, datetime]
) -> CarryPlan:
    found, _ = rule.plan(
        run_id=RUN,
        tag_id=7001,
        roster=[*sorted(accesses), 999],
        units=units,
        last_access_at=accesses,
        previous=previous,
        tz=TZ,
        full_read_weeks=4,
        sample_share=0.05,
    )
    return found


def test_on_v1_each_product_is_decided_on_its_own() -> None:
    previous = {(1, 101): ok(), (1, 102): Previous("failed", None, None, None, LAST_RUN, BEFORE)}
    found = make_plan([(101,), (102,)], previous, {1: BEFORE})
    assert found.carried == {1: {101: CarriedValue(40.0, 8, 7, LAST_RUN)}}


def test_on_v3_a_student_is_skipped_only_when_every_product_qualifies() -> None:
    previous = {(1, 101): ok(), (1, 102): Previous("failed", None, None, None, LAST_RUN, BEFORE)}
    previous |= {(2, 101): ok(), (2, 102): ok()}
    found = make_plan([(101, 102)], previous, {1: BEFORE, 2: BEFORE})
    assert set(found.carried) == {2} and set(found.carried[2]) == {101, 102}


def test_nothing_in_a_listing_carries_another_students_or_products_observation() -> None:
    # student 2's listing says inactive, but the only observation is student 1's; 103 was never observed
    found = make_plan([(101,), (103,)], {(1, 101): ok()}, {1: BEFORE, 2: BEFORE})
    assert found.carried == {1: {101: CarriedValue(40.0, 8, 7, LAST_RUN)}}


def test_at_least_one_student_per_tag_is_verified_when_any_is_skippable() -> None:
    found = make_plan([(101,)], {(1, 101): ok()}, {1: BEFORE})
    assert found.sample == {1}
    assert rule.skipped_units(found, 1, [(101,)]) == []  # a sampled student is read


def test_nothing_skippable_samples_nobody() -> None:
    assert make_plan([(101,)], {}, {1: BEFORE}).sample == frozenset()


@pytest.mark.parametrize(("skippable", "size"), [(0, 0), (1, 1), (19, 1), (20, 1), (21, 2), (100, 5), (101, 6)])
def test_the_sample_is_five_percent_rounded_up(skippable: int, size: int) -> None:
    assert rule.sample_size(skippable, 0.05) == size


@given(st.sets(st.integers(1, 10**6), min_size=1, max_size=300), st.text("abcdefghij", min_size=1, max_size=8))
def test_the_sample_is_seeded_by_the_run_id(users: set[int], label: str) -> None:
    first = rule.sample(RUN, 7001, users, 0.05)
    assert first == rule.sample(RUN, 7001, sorted(users, reverse=True), 0.05)  # order of the roster is irrelevant
    assert first <= users and len(first) == rule.sample_size(len(users), 0.05)
    if len(users) >= 40:  # another run verifies other students (not always all different)
        assert any(rule.sample(RunId(WEEK, label + str(i)), 7001, users, 0.05) != first for i in range(5))


# -- when a run reads everyone ------------------------------------------------------------------------------

TASK = ProgressTask(RUN, 7001, (101, 102))


@pytest.mark.parametrize(
    ("incremental", "run_id"),
    [("off", RUN), ("on", RunId(WEEK, "fix1"))],  # carrying off; a re-run label or re-extraction
)
def test_a_run_reads_everyone_when_off_or_asked_again(incremental: str, run_id: RunId) -> None:
    cfg = Settings(incremental=incremental)
    task = ProgressTask(run_id, 7001, (101, 102))
    roster = Roster((1, 2), {1: BEFORE, 2: BEFORE})
    # returns before any history or bucket is read (None would fail on first use)
    assert plan_for_piece(offline_services(cfg), task, roster, [(101,), (102,)]) == CarryPlan()


def test_settings_refuse_bad_carrying_values() -> None:
    for env in ({"INCREMENTAL": "yes"}, {"CARRY_SAMPLE_SHARE": "0"}, {"CARRY_FULL_READ_WEEKS": "0"}):
        with pytest.raises(SettingsError):
            Settings.from_env({**env, "SECRETS_BACKEND": "env"})
    assert Settings.from_env({"SECRETS_BACKEND": "env"}).incremental == "off"


# -- the contracts -----------------------------------------------------------------------------------------


def test_a_carry_plan_round_trips_and_junk_is_refused() -> None:
    found = CarryPlan({5: {101: CarriedValue(12.5, 3, 2, "2026-10-19-fix1")}}, frozenset({5}))
    assert CarryPlan.from_body(found.to_body()) == found
    for junk in (b"[]", b'{"carried": {"x": {}}, "sample": []}', b'{"carried": {"5": {"101": [1, 2]}}, "sample": []}'):
        with pytest.raises(ValueError):
            CarryPlan.from_body(junk)
    bad_run = b'{"carried": {"5": {"101": [1.0, 2, 3, "last week"]}}, "sample": []}'
    with pytest.raises(ValueError):
        CarryPlan.from_body(bad_run)


def test_shard_metadata_carries_the_carry_counts_and_reads_old_shards_as_zero() -> None:
    meta = ShardMeta(TASK, 10, 0, 0, 5, 4, 0, None, carried=6, calls_saved=6, carry_checked=2, carry_mismatches=1)
    name = parse_progress_shard(shard_name(TASK))
    assert name is not None
    assert ShardMeta.from_metadata(meta.to_metadata(), name) == meta
    old = {k: v for k, v in meta.to_metadata().items() if k not in ShardMeta.CARRY_COUNTS}
    assert ShardMeta.from_metadata(old, name).carried == 0


# -- the simulator's activity and the staff-action fault ----------------------------------------------------


def test_in_the_demo_school_progress_moves_only_with_the_last_access_and_about_half_are_inactive() -> None:
    from cademi_sim import demo

    scenario = demo.generate()
    weeks = len(scenario["weeks"])
    progress: dict[int, list[dict[str, Any]]] = {}
    for entry in scenario["progress"]:
        progress.setdefault(entry["user"], []).append(entry)
    listed = [u for u in scenario["users"] if "ultimo_acesso_em" in u]
    for week in range(1, weeks):
        still = [u for u in listed if u["ultimo_acesso_em"][week] == u["ultimo_acesso_em"][week - 1]]
        for user in still:  # not in Cademi this week: nothing of theirs changed
            for entry in progress.get(user["id"], []):
                assert all(entry[k][week] == entry[k][week - 1] for k in ("total", "assistidas", "completas"))
        assert 0.4 <= len(still) / len(listed) <= 0.7, (week, len(still))


def test_a_staff_action_changes_progress_from_its_week_on_without_moving_the_last_access() -> None:
    from cademi_sim.scenario import ScenarioError, parse
    from tests.scenarios import school

    raw = school(n_students=2, products=(101,), weeks=("2026-03-02", "2026-03-09", "2026-03-16"))
    raw["users"][0]["ultimo_acesso_em"] = ["2026-02-28 10:00:00"] * 3
    action = {"user": 1001, "product": 101, "week": 1, "total": "100%", "assistidas": 20, "completas": 20}
    found = parse({**raw, "staff_actions": [action]})
    assert [found.served_progress(1001, 101, w)["total"] for w in range(3)] == ["7.5%", "100%", "100%"]  # type: ignore[index]
    assert found.served_progress(1002, 101, 1) == parse(raw).served_progress(1002, 101, 1)
    for bad, field in (({**action, "product": 999}, "staff_actions[0]"), ({**action, "week": 3}, "week")):
        with pytest.raises(ScenarioError, match=field.replace("[", r"\[").replace("]", r"\]")):
            parse({**raw, "staff_actions": [bad]})


def test_a_future_malformed_or_null_last_access_is_unknown_so_the_student_is_read() -> None:
    from progress_monitor.contracts.cademi import Student
    from progress_monitor.stages.extract import last_accesses

    def student(user_id: int, last: str | None) -> Student:
        return Student(user_id, "Aluno", "a@example.com", None, None, last)

    listed = [student(1, "2026-10-17 10:00:00"), student(2, "2099-01-01 10:00:00"), student(3, "ontem")]
    listed.append(student(4, None))
    found = last_accesses(Settings(), listed, {}, datetime.now(UTC))
    assert set(found) == {1}  # the others are unknown, never guessed
    previous = {(u, 101): ok() for u in (1, 2, 3, 4)}
    plan_found = make_plan([(101,)], previous, dict(found))
    assert set(plan_found.carried) | plan_found.sample == {1}


@given(
    weeks=st.integers(1, 30),
    full_read_weeks=st.integers(1, 8),
    sampled=st.lists(st.booleans(), min_size=30, max_size=30),
)
def test_a_student_who_never_studies_is_read_at_least_every_n_weeks(
    weeks: int, full_read_weeks: int, sampled: list[bool]
) -> None:
    """Issue 30 finding 8b, the assurance `carrying status` reports: whatever the sample does, a carried student
    is read at least every `full_read_weeks` weeks, so a change Cademi made without moving the last access
    stays unseen that long at most."""
    first = date(2026, 1, 5)
    last_access = datetime(2025, 12, 1, tzinfo=UTC)  # never moves
    previous: Previous | None = None
    reads = [0]  # week 0: the first observation is read
    for week in range(1, weeks + 1):
        snapshot = first + timedelta(weeks=week)
        reason = decide(last_access, previous, snapshot_date=snapshot, tz=TZ, full_read_weeks=full_read_weeks)
        if reason is not Reason.CARRY or sampled[week - 1]:
            reads.append(week)  # read by the rule or by the sample
        source = RunId(first + timedelta(weeks=reads[-1]))
        previous = Previous("ok", 40.0, 4, 3, str(source), known_access=last_access)
    assert all(b - a <= full_read_weeks for a, b in itertools.pairwise(reads))
    assert weeks - reads[-1] < full_read_weeks
