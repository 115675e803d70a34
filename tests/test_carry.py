"""Carrying (issue 24) with real parts: the extraction core against the simulator on v1 and v3, and the
pipeline on the emulator stack with INCREMENTAL=on for five weeks of a school where half a class is inactive
each week, a staff action the verification sample catches, carrying switched off and on, and re-runs.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest

from cademi_sim.builder import School, rising_progress
from progress_monitor.carrying import rule
from progress_monitor.contracts.carry_plan import CarriedValue, CarryPlan
from progress_monitor.contracts.messages import ProgressTask
from progress_monitor.contracts.values import RunId
from progress_monitor.pipeline.extraction import PieceExtraction
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


# -- the carrying school (its weeks run in process: tests/stages/test_carrying.py) --------------------------

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


def full_read_calls() -> int:
    return len(BIG_CLASS) * len(BIG_PRODUCTS) + len(SMALL_CLASS) * len(SMALL_PRODUCTS)


def expected_carried(week: int) -> set[tuple[int, int, int]]:
    """What the rule must carry in a week of the big class: its inactive students with a trusted listing, but
    the ones the run's deterministic sample verifies (the small class has none to carry before week 3)."""
    skippable = [u for u in BIG_CLASS if u not in UNTRUSTED and not active(u, week)]
    sampled = rule.sample(RunId(date.fromisoformat(WEEKS[week])), BIG, skippable, 0.05)
    return {(BIG, u, p) for u in skippable if u not in sampled for p in BIG_PRODUCTS}
