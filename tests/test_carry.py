"""Carrying (issue 24) with real parts: the extraction core against the simulator on v1 and v3, and the
pipeline on the emulator stack with INCREMENTAL=on for five weeks of a school where half a class is inactive
each week, a staff action the verification sample catches, carrying switched off and on, and re-runs.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cademi_sim.builder import School, rising_progress
from cademi_sim.scenario import load
from cademi_sim.truth import expected_rows
from devstack.here import services_here
from devstack.stack import LocalStack
from progress_monitor.carrying import rule, store
from progress_monitor.commands.replay import replay_history
from progress_monitor.contracts.messages import ProgressTask
from progress_monitor.contracts.objects import CarriedValue, CarryPlan
from progress_monitor.contracts.values import RunId
from progress_monitor.pipeline import loader
from progress_monitor.pipeline.extraction import PieceExtraction
from progress_monitor.platform import warehouse
from tests.pipeline_world import start_stack
from tests.scenarios import school
from tests.test_cademi_v3 import v3_client

pytestmark = pytest.mark.integration

# -- the extraction core against the simulator ------------------------------------------------------------


def _extract(client: Any, plan: CarryPlan, products: tuple[int, ...]) -> tuple[PieceExtraction, list[Any]]:
    task = ProgressTask(RunId(date(2026, 3, 9)), 5001, products)
    piece = PieceExtraction(client, task, (1001, 1002, 1003), budget_s=60, workers=2, carry=plan)
    return piece, list(piece.records())


def _plan(values: dict[int, dict[int, float]], sample: frozenset[int] = frozenset()) -> CarryPlan:
    return CarryPlan(
        {u: {p: CarriedValue(t, 0, 0, "2026-03-02") for p, t in products.items()} for u, products in values.items()},
        sample,
    )


@pytest.mark.parametrize("api", ["v1", "v3"])
def test_a_carried_call_is_not_made_and_its_rows_name_their_observation(simulator: Any, api: str) -> None:
    sim = simulator(school(n_students=3, products=(101, 102)), week=1)
    client = sim.client() if api == "v1" else v3_client(sim)
    # 1001: both products carryable; 1002: only 101 (on v3 its one call answers both, so it is read whole)
    plan = _plan({1001: {101: 1.0, 102: 2.0}, 1002: {101: 3.0}})
    piece, records = _extract(client, plan, (101, 102))
    counters = sim.admin.counters()
    calls = counters.get("progresso_por_produto", 0) + counters.get("v3/progress", 0)
    assert (calls, piece.calls_saved) == ((3, 3) if api == "v1" else (2, 1))
    carried = {(r.user_id, r.product_id): (r.total, r.carried_from) for r in records if r.carried_from}
    expected = {(1001, 101): (1.0, "2026-03-02"), (1001, 102): (2.0, "2026-03-02")}
    assert carried == (expected | {(1002, 101): (3.0, "2026-03-02")} if api == "v1" else expected)
    assert [(r.user_id, r.product_id) for r in records] == [(u, p) for u in (1001, 1002, 1003) for p in (101, 102)]
    assert piece.carried == len(carried)


def test_a_sampled_student_is_read_and_a_mismatch_stops_carrying(simulator: Any) -> None:
    sim = simulator(school(n_students=3, products=(101,)), week=1)
    served = float(school(n_students=3, products=(101,))["progress"][0]["total"][1].rstrip("%"))
    # 1001 is sampled and its carried value is stale (a staff action): read, stored as read, carrying stops
    plan = _plan({1001: {101: served - 5}, 1002: {101: 9.0}, 1003: {101: 9.0}}, frozenset({1001}))
    task = ProgressTask(RunId(date(2026, 3, 9)), 5001, (101,))
    # one worker and a window of two: 1002 and 1003 start only after 1001's answer was compared
    piece = PieceExtraction(sim.client(), task, (1001, 1002, 1003), budget_s=60, workers=1, carry=plan)
    piece.window = 1
    records = list(piece.records())
    assert piece.mismatches == [(1001, 101)] and piece.carry_checked == 1
    assert records[0].total == served and records[0].carried_from is None  # the read value, never the carried
    assert piece.carried == 0 and all(r.carried_from is None for r in records)
    assert sim.admin.counters()["progresso_por_produto"] == 3


# -- the pipeline on the stack ------------------------------------------------------------------------------

WEEKS = ["2026-09-07", "2026-09-14", "2026-09-21", "2026-09-28", "2026-10-05"]
BIG, SMALL = 8101, 8102
BIG_PRODUCTS, SMALL_PRODUCTS = (401, 402, 403), (401, 402)
BIG_CLASS = list(range(5001, 5021))
SMALL_CLASS = list(range(6001, 6007))
NULL_ACCESS, MALFORMED, FUTURE, BACKWARDS = 5017, 5018, 5019, 5020  # inactive after week 0, never trusted
UNTRUSTED = (NULL_ACCESS, MALFORMED, FUTURE, BACKWARDS)
STAFF_TARGET = 6001  # inactive from week 3, when staff completes product 401 for them
STAFF_WEEK = 3


def active(user: int, week: int) -> bool:
    """Half the big class opens Cademi each week (alternating); the small class always, but its first student
    stops at week 3; the untrusted listings' students never come back (only BACKWARDS, in week 1)."""
    if week == 0:
        return True
    if user in UNTRUSTED:
        return user == BACKWARDS and week == 1
    if user in SMALL_CLASS:
        return not (user == STAFF_TARGET and week >= STAFF_WEEK)
    return (user + week) % 2 == 0


def last_access(user: int, week: int) -> str | None:
    if user == NULL_ACCESS:
        return None
    if user == MALFORMED:
        return "ontem"
    if user == FUTURE:
        return "2099-01-01 10:00:00"
    if user == BACKWARDS and week >= 2:  # earlier than what week 1 reported
        return f"{date.fromisoformat(WEEKS[1]) - timedelta(days=4)} 10:00:00"
    seen = max(w for w in range(week + 1) if active(user, w))
    return f"{date.fromisoformat(WEEKS[seen]) - timedelta(days=2)} 10:00:00"  # school time, before that Monday


def carry_world() -> dict[str, Any]:
    school = School(WEEKS, api_key="carry-test-key", rate=(150, 9000), breach="429")
    for p in BIG_PRODUCTS:
        school.product(p, aulas=20)
    school.track("t3", "Trilha 3", dict.fromkeys(BIG_PRODUCTS, 8))
    school.track("t2", "Trilha 2", dict.fromkeys(SMALL_PRODUCTS, 8))
    school.tag(BIG, "Turma grande", track="t3", turma="2026-08", start_date="2026-08-03")
    school.tag(SMALL, "Turma pequena", track="t2", turma="2026-08", start_date="2026-08-03")
    for tag, products, members in ((BIG, BIG_PRODUCTS, BIG_CLASS), (SMALL, SMALL_PRODUCTS, SMALL_CLASS)):
        for uid in members:
            studied = [sum(active(uid, v) for v in range(w + 1)) for w in range(len(WEEKS))]
            school.student(
                uid,
                tag,
                nome=f"Aluno {uid}",
                email=f"aluno{uid}@example.com",
                last_access=[last_access(uid, w) for w in range(len(WEEKS))],
                progress=[
                    rising_progress(uid, p, [min(100.0, 4.0 * n + (uid % 5) + k) for n in studied])
                    for k, p in enumerate(products)
                ],
            )
    for p in school.progress:
        school.grant(p["user"], p["product"])
    staff = {"user": STAFF_TARGET, "product": 401, "week": STAFF_WEEK, "total": "100.0%", "assistidas": 20}
    school.extra["staff_actions"] = [{**staff, "completas": 20}]
    return school.build()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = start_stack(tmp_path_factory.mktemp("carry"), carry_world(), incremental="on")
    yield stack
    stack.stop()


def rows(week: str) -> dict[tuple[int, int, int], dict[str, Any]]:
    found = warehouse.query(
        services_here(), "SELECT * FROM `${progress_history}` WHERE snapshot_date = @d", d=date.fromisoformat(week)
    )
    return {(r["tag_id"], r["user_id"], r["product_id"]): r for r in found}


def differences_from_truth(stack: LocalStack, week: int) -> tuple[list[Any], list[Any], list[Any]]:
    """(missing, extra, wrong) keys of the week's history against the scenario's ground truth."""
    expected = {k[1:]: v for k, v in expected_rows(load(stack.scenario_path), week).items()}
    actual = {k: (r["status"], r["total"], r["assistidas"], r["completas"]) for k, r in rows(WEEKS[week]).items()}
    missing, extra = set(expected) - set(actual), set(actual) - set(expected)
    wrong = {k for k in set(expected) & set(actual) if expected[k] != actual[k]}
    return sorted(missing)[:5], sorted(extra)[:5], sorted(wrong)[:5]


def assert_equals_truth(stack: LocalStack, week: int) -> None:
    assert differences_from_truth(stack, week) == ([], [], [])


def run(stack: LocalStack, week: int, rerun: str | None = None) -> dict[str, Any]:
    stack.admin().reset()
    row = stack.wait_run(stack.trigger(date.fromisoformat(WEEKS[week]), rerun=rerun), timeout=240)
    assert row["status"] == "succeeded", row
    return row


def full_read_calls() -> int:
    return len(BIG_CLASS) * len(BIG_PRODUCTS) + len(SMALL_CLASS) * len(SMALL_PRODUCTS)


def expected_carried(week: int) -> set[tuple[int, int, int]]:
    """What the rule must carry in a week of the big class: its inactive students with a trusted listing, but
    the ones the run's deterministic sample verifies (the small class has none to carry before week 3)."""
    skippable = [u for u in BIG_CLASS if u not in UNTRUSTED and not active(u, week)]
    sampled = rule.sample(RunId(date.fromisoformat(WEEKS[week])), BIG, skippable, 0.05)
    return {(BIG, u, p) for u in skippable if u not in sampled for p in BIG_PRODUCTS}


@dataclass(frozen=True)
class CarriedWeek:
    """What one weekly run with carrying on did, read right after it (the next run resets the counters)."""

    week: int
    run: dict[str, Any]
    history: dict[tuple[int, int, int], dict[str, Any]]
    progress_calls: int
    differences: tuple[list[Any], list[Any], list[Any]]
    switched_off: bool


@pytest.fixture(scope="module")
def four_weeks(stack: LocalStack) -> list[CarriedWeek]:
    """Weeks 0-3 with carrying on, once per module: the staff action of week 3 turns carrying off, which the
    tests after the first one start from."""
    weeks = []
    for week in range(STAFF_WEEK + 1):
        row = run(stack, week)
        weeks.append(
            CarriedWeek(
                week,
                row,
                rows(WEEKS[week]),
                stack.admin().counters()["progresso_por_produto"],
                differences_from_truth(stack, week),
                store.status(services_here())["switched_off"],
            )
        )
    return weeks


def test_four_weeks_carrying_equal_the_ground_truth_and_the_sample_catches_a_staff_action(
    four_weeks: list[CarriedWeek],
) -> None:
    """Weeks 0-3 with carrying on: exact every week, with the staff action of week 3 caught by the sample."""
    for seen in four_weeks[:STAFF_WEEK]:
        week, row = seen.week, seen.run
        assert seen.differences == ([], [], [])
        carried = {k for k, r in seen.history.items() if r["carried_from"]}
        assert carried == (expected_carried(week) if week else set())
        assert row["rows_carried"] == row["calls_saved"] == len(carried)  # v1: one call per pair
        assert seen.progress_calls == full_read_calls() - len(carried)
        assert row["carry_mismatches"] == 0 and row["carry_checked"] == (3 if week else 0)  # 1 sampled x 3
        assert not seen.switched_off
        for key in carried:  # each names the run that read it, and this student did not study since
            source = RunId.parse(seen.history[key]["carried_from"])
            assert source.snapshot_date < date.fromisoformat(WEEKS[week]) and not active(key[1], week)
    # Week 3: the small class's only inactive student is verified, and staff changed their progress.
    staff = four_weeks[STAFF_WEEK]
    assert staff.differences == ([], [], [])  # the read value is stored, never the carried one
    assert staff.run["carry_mismatches"] == 1 and staff.run["carry_checked"] >= 2
    assert staff.history[(SMALL, STAFF_TARGET, 401)]["carried_from"] is None
    assert staff.switched_off
    # The bad listings (null, malformed, in the future, moving backwards) were never trusted.
    for seen in four_weeks[1:]:
        assert not any(r["carried_from"] for k, r in seen.history.items() if k[1] in UNTRUSTED)


def test_switched_off_reads_everyone_until_turned_back_on_and_a_rerun_reads_everything(
    stack: LocalStack, four_weeks: list[CarriedWeek]
) -> None:
    assert four_weeks[STAFF_WEEK].switched_off and store.status(services_here())["switched_off"]
    row = run(stack, 4)  # half the big class is inactive, but carrying is off
    assert_equals_truth(stack, 4)
    assert row["rows_carried"] == 0 and stack.admin().counters()["progresso_por_produto"] == full_read_calls()

    assert store.switch_on(services_here()) and not store.status(services_here())["switched_off"]
    row = run(stack, 4, rerun="again")  # an operator asking again means read, carrying on or not
    assert row["rows_carried"] == 0 and stack.admin().counters()["progresso_por_produto"] == full_read_calls()
    assert_equals_truth(stack, 4)

    # A carried row never replaces an observed one: week 2 read again, then its carried shards loaded after.
    run(stack, 2, rerun="reread")
    assert not any(r["carried_from"] for r in rows(WEEKS[2]).values())
    replay_history(services_here(), date.fromisoformat(WEEKS[2]), date.fromisoformat(WEEKS[2]))
    assert not any(r["carried_from"] for r in rows(WEEKS[2]).values())
    assert_equals_truth(stack, 2)


# -- the history rule with carried rows, over random interleavings ------------------------------------------

RULE_WEEK = date(2026, 8, 31)  # a Monday no run of this stack writes
T0 = datetime(2026, 8, 31, 12, 0, tzinfo=UTC)
RANK = {"ok": 2, "no_access": 1, "failed": 0}
rule_users = itertools.count(950_000)


@dataclass(frozen=True)
class Seen:
    status: str
    carried: bool  # only an ok observation is ever carried
    minute: int

    def row(self, user_id: int) -> dict[str, Any]:
        ok = self.status == "ok"
        return {
            "snapshot_date": RULE_WEEK.isoformat(),
            "tag_id": BIG,
            "user_id": user_id,
            "product_id": 401,
            "status": self.status,
            "total": float(self.minute % 100) if ok else None,
            "assistidas": 1 if ok else None,
            "completas": 1 if ok else None,
            "error": "erro" if self.status == "failed" else None,
            "run_id": f"{RULE_WEEK.isoformat()}-m{self.minute}",
            "extracted_at": (T0 + timedelta(minutes=self.minute)).isoformat(),
            "carried_from": "2026-08-24" if self.carried else None,
        }


seen_lists = st.lists(
    st.builds(Seen, status=st.sampled_from(list(RANK)), carried=st.booleans(), minute=st.integers(0, 10_000)).map(
        lambda s: Seen(s.status, s.carried and s.status == "ok", s.minute)
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda s: s.minute,
)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(observations=seen_lists, order=st.randoms(use_true_random=False))
# a re-extraction finds a product revoked after a carried week: the read no_access replaces the carried ok
@example(observations=[Seen("ok", True, 5), Seen("no_access", False, 1)], order=random.Random(0))
# and a failed attempt never replaces a carried ok
@example(observations=[Seen("ok", True, 1), Seen("failed", False, 5)], order=random.Random(0))
def test_a_carried_row_never_replaces_a_read_one_whatever_the_order(
    stack: LocalStack, observations: list[Seen], order: Any
) -> None:
    user = next(rule_users)
    arrivals = list(observations)
    order.shuffle(arrivals)
    for i, seen in enumerate(arrivals):  # one shard each, merged by the loader's own MERGE
        staging = loader._staging_table(
            services_here(), "progress", f"gs://rule/{user}/{i}", 1, loader.staging_fields("progress")
        )
        try:
            services_here().bigquery.insert_rows_json(staging, [seen.row(user)])
            warehouse.query(
                services_here(),
                loader.MERGE_PROGRESS,
                sql_vars={"staging": staging},
                shard=f"rule-{user}-{i}",
                now=datetime.now(UTC),
                tag_id=BIG,
                snapshot_date=RULE_WEEK,
                today=date.today() + timedelta(days=7),
            )
        finally:
            loader._drop(services_here(), staging)
    found = warehouse.query(
        services_here(),
        "SELECT * FROM `${progress_history}` WHERE snapshot_date = @d AND user_id = @u",
        d=RULE_WEEK,
        u=user,
    )
    # the rule: a failed attempt below everything; a read observation above every carried one; then status, time
    best = max(observations, key=lambda s: (s.status != "failed", not s.carried, RANK[s.status], s.minute))
    assert len(found) == 1
    assert (found[0]["run_id"], found[0]["carried_from"]) == (best.row(user)["run_id"], best.row(user)["carried_from"])
