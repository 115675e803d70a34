"""The extract stage's decisions (pipeline/extraction.py PieceExtraction), pure: a tag cut into pieces by the time
budget yields every roster student's rows exactly once, whole, in roster order; each answer becomes the status
it means; carried students make no call; an outage (students in a row failing every call) writes nothing."""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from progress_monitor.cademi.v1 import _redact_path
from progress_monitor.contracts.cademi import CallStats, Progress, Student, Tag
from progress_monitor.contracts.carry_plan import CarriedValue, CarryPlan
from progress_monitor.contracts.messages import ProgressTask
from progress_monitor.contracts.values import RunId, Status
from progress_monitor.errors import (
    CademiBusinessError,
    CademiError,
    CademiMalformedError,
    CademiOutageError,
    CademiUnavailableError,
)
from progress_monitor.pipeline.extraction import PieceExtraction, ProgressRecord
from progress_monitor.privacy import erasures

PRODUCTS = (101, 102)
RUN = RunId(date(2026, 3, 9))
ANSWER_KINDS = st.sampled_from(["ok", "no_access", "malformed", "down"])
EXPECTED = {"ok": Status.OK, "no_access": Status.NO_ACCESS, "malformed": Status.FAILED, "down": Status.FAILED}


def answer(kind: str, user_id: int) -> Progress | CademiError:
    if kind == "ok":
        return Progress(float(user_id % 100), user_id % 7, user_id % 5)
    if kind == "no_access":
        return CademiBusinessError(409, "sem acesso ao produto", "/p")
    if kind == "malformed":
        return CademiMalformedError("total='abc' is not a percentage")
    return CademiUnavailableError("down")


class Source:
    """A Cademi source answering from a table (v1-shaped: one call per product, or v3: one per student)."""

    def __init__(self, answers: dict[tuple[int, int], str], per_student: bool) -> None:
        self.answers = answers
        self.per_student = per_student
        self.calls: list[tuple[int, tuple[int, ...]]] = []

    def iter_tag_students(self, tag_id: int, stats: CallStats | None = None) -> Iterator[Student]:
        return iter(())

    def progress_units(self, product_ids: tuple[int, ...]) -> list[tuple[int, ...]]:
        return [product_ids] if self.per_student else [(p,) for p in product_ids]

    def student_progress(
        self, user_id: int, product_ids: tuple[int, ...], stats: CallStats | None = None
    ) -> dict[int, Progress | CademiError]:
        self.calls.append((user_id, product_ids))
        return {p: answer(self.answers[(user_id, p)], user_id) for p in product_ids}

    def list_tags(self) -> list[Tag]:
        return []


@given(
    roster=st.lists(st.integers(1, 10_000), min_size=1, max_size=25, unique=True),
    kinds=st.lists(ANSWER_KINDS, min_size=50, max_size=50),
    budget=st.integers(0, 6),
    per_student=st.booleans(),
)
def test_pieces_cover_the_roster_exactly_once_whole_and_in_order(
    roster: list[int], kinds: list[str], budget: int, per_student: bool
) -> None:
    answers = {(u, p): kinds[(2 * i + j) % len(kinds)] for i, u in enumerate(roster) for j, p in enumerate(PRODUCTS)}
    # No outage here: a student failing every call is followed by one who answers (outage_students is large).
    source = Source(answers, per_student)
    rows: list[ProgressRecord] = []
    task = ProgressTask(RUN, 5001, PRODUCTS)
    pieces = 0
    while True:
        clock = functools.partial(next, itertools.count(0.0, 1.0))  # one tick per look at the budget
        piece = PieceExtraction(source, task, roster, budget_s=budget, workers=2, outage_students=10_000, clock=clock)
        got = list(piece.records())
        pieces += 1
        assert got, "a piece always extracts at least one student"
        assert len({r.user_id for r in got}) == piece.students_done
        rows += got
        if piece.next_index is None:
            break
        assert piece.next_index == task.start_index + piece.students_done
        task = task.next(piece.next_index)
    assert [(r.user_id, r.product_id) for r in rows] == [(u, p) for u in roster for p in PRODUCTS]
    assert [r.status for r in rows] == [EXPECTED[answers[(r.user_id, r.product_id)]] for r in rows]
    assert all((r.total is not None) == (r.status == Status.OK) for r in rows)
    assert len(source.calls) == len(roster) * (1 if per_student else len(PRODUCTS))
    assert pieces <= len(roster)


def test_carried_students_make_no_call_and_a_run_of_students_failing_every_call_is_an_outage() -> None:
    roster = [1, 2, 3, 4, 5]
    read_at = datetime(2026, 3, 2, 12, 5, tzinfo=UTC)
    earlier = CarriedValue(total=40.0, assistidas=4, completas=3, source_run="2026-03-02", observed_at=read_at)
    source = Source({(u, p): "ok" for u in roster for p in PRODUCTS}, per_student=False)
    plan = CarryPlan(carried={2: {101: earlier, 102: earlier}})
    piece = PieceExtraction(source, ProgressTask(RUN, 5001, PRODUCTS), roster, budget_s=60, carry=plan)
    rows = list(piece.records())
    assert {u for u, _ in source.calls} == {1, 3, 4, 5} and piece.calls_saved == 2 and piece.carried == 2
    assert [r.carried_from for r in rows if r.user_id == 2] == ["2026-03-02", "2026-03-02"]
    # issue 30 finding 8d: a carried row says when its value was read, not that a read happened now
    assert [r.extracted_at for r in rows if r.user_id == 2] == [read_at, read_at]
    assert all(r.extracted_at > read_at for r in rows if r.user_id != 2)
    assert CarryPlan.from_body(plan.to_body()) == plan

    down = Source({(u, p): "down" for u in roster for p in PRODUCTS}, per_student=False)
    outage = PieceExtraction(down, ProgressTask(RUN, 5001, PRODUCTS), roster, budget_s=60, outage_students=3)
    with pytest.raises(CademiOutageError):
        list(outage.records())


def test_a_sampled_student_whose_read_fails_is_counted_and_another_carried_student_is_read_instead() -> None:
    """Issue 30 finding 8c: a failed read verifies nothing; it is counted, and the sample does not shrink."""
    roster = list(range(1, 31))
    answers = {(u, p): "ok" for u in roster for p in PRODUCTS} | {(1, p): "down" for p in PRODUCTS}
    source = Source(answers, per_student=False)
    unchanged = {u: CarriedValue(float(u % 100), u % 7, u % 5, "2026-03-02") for u in roster}  # what Cademi serves
    plan = CarryPlan(carried={u: dict.fromkeys(PRODUCTS, unchanged[u]) for u in roster}, sample=frozenset({1}))
    piece = PieceExtraction(source, ProgressTask(RUN, 5001, PRODUCTS), roster, budget_s=60, workers=1, carry=plan)
    list(piece.records())
    assert piece.carry_unverified == 2  # both of student 1's products
    [drawn] = piece.sample - {1}
    assert {u for u, _ in source.calls} == {1, drawn}  # the drawn student was read, not carried
    assert piece.carry_checked == 2 and not piece.mismatches  # and compared: two pairs, both as carried


def test_logs_name_a_student_by_a_keyed_hash_and_paths_without_the_student(caplog: pytest.LogCaptureFixture) -> None:
    """Issue 30 finding 4: a log line never holds the id (it would join the pseudonym an erasure leaves)."""
    key = b"privacy-key"
    source = Source({(1, 101): "down", (1, 102): "malformed"}, per_student=False)
    piece = PieceExtraction(
        source,
        ProgressTask(RUN, 5001, PRODUCTS),
        [1],
        budget_s=60,
        outage_students=10,
        student_ref=lambda u: erasures.log_ref(key, u),
    )
    with caplog.at_level(logging.WARNING):
        list(piece.records())
    failures = [r for r in caplog.records if r.msg.startswith("progress extraction failed")]
    assert len(failures) == 2
    for record in failures:
        assert isinstance(record.args, tuple) and record.args[0] == erasures.log_ref(key, 1)
        assert 1 not in record.args  # the product id is there, the student id is not
    assert erasures.log_ref(key, 1) != erasures.log_ref(b"another key", 1) and erasures.log_ref(None, 1) == "s:?"
    assert _redact_path("/usuario/progresso_por_produto/7654321/102") == "/usuario/progresso_por_produto/<user>/102"
    assert _redact_path("/usuario/lista_por_tag/5001") == "/usuario/lista_por_tag/5001"
    assert _redact_path("/users/usr_42/progress") == "/users/<user>/progress"
