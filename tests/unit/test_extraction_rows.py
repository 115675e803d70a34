"""One builder for every ProgressRecord: read and carried rows come out of `PieceExtraction.row`, field for field
the rows the two former builders (`_record`, `_carried_record`) wrote."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

from progress_monitor.contracts.cademi import CallStats, Progress, Student, Tag
from progress_monitor.contracts.carry_plan import CarriedValue, CarryPlan
from progress_monitor.contracts.messages import ProgressTask
from progress_monitor.contracts.values import RunId, Status
from progress_monitor.errors import CademiBusinessError, CademiError, CademiMalformedError, CademiUnavailableError
from progress_monitor.pipeline.extraction import PieceExtraction, ProgressRecord

TASK = ProgressTask(RunId(date(2026, 3, 9)), 5001, (101, 102))
SEEN = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EARLIER = CarriedValue(total=40.0, assistidas=4, completas=3, source_run="2026-03-02")
ANSWERS: dict[int, dict[int, Progress | CademiError]] = {
    1001: {101: Progress(40.0, 4, 3), 102: CademiBusinessError(409, "sem acesso ao produto", "/p")},
    1003: {101: CademiMalformedError("total='abc' is not a percentage"), 102: CademiUnavailableError("down")},
}


class Answers:
    """A v1-shaped source (one call per product) answering from ANSWERS."""

    def __init__(self) -> None:
        self.stats = CallStats()

    def iter_tag_students(self, tag_id: int, stats: CallStats | None = None) -> Iterator[Student]:
        return iter(())

    def progress_units(self, product_ids: tuple[int, ...]) -> list[tuple[int, ...]]:
        return [(p,) for p in product_ids]

    def student_progress(
        self, user_id: int, product_ids: tuple[int, ...], stats: CallStats | None = None
    ) -> dict[int, Progress | CademiError]:
        return {p: ANSWERS[user_id][p] for p in product_ids}

    def list_tags(self) -> list[Tag]:
        return []


def former(user_id: int, product_id: int, status: Status, **fields: Any) -> ProgressRecord:
    """A row as the former builders wrote it, every field spelled out."""
    row = ProgressRecord(
        snapshot_date=date(2026, 3, 9),
        run_id="2026-03-09",
        tag_id=5001,
        user_id=user_id,
        product_id=product_id,
        status=status,
        total=None,
        assistidas=None,
        completas=None,
        error=None,
        extracted_at=SEEN,
        last_access_at=SEEN,
        carried_from=None,
    )
    return dataclasses.replace(row, **fields)


def test_read_and_carried_rows_come_from_one_builder_unchanged() -> None:
    plan = CarryPlan(carried={1002: {101: EARLIER, 102: EARLIER}})
    piece = PieceExtraction(
        Answers(),
        TASK,
        (1001, 1002, 1003),
        budget_s=60,
        workers=2,
        last_access_at={1001: SEEN, 1002: SEEN, 1003: SEEN},
        carry=plan,
    )
    rows = [dataclasses.replace(r, extracted_at=SEEN) for r in piece.records()]
    assert rows == [
        former(1001, 101, Status.OK, total=40.0, assistidas=4, completas=3),
        former(1001, 102, Status.NO_ACCESS, error="sem acesso ao produto"),
        former(1002, 101, Status.OK, total=40.0, assistidas=4, completas=3, carried_from="2026-03-02"),
        former(1002, 102, Status.OK, total=40.0, assistidas=4, completas=3, carried_from="2026-03-02"),
        former(1003, 101, Status.FAILED, error="total='abc' is not a percentage"),
        former(1003, 102, Status.FAILED, error="down"),
    ]
    assert piece.carried == 2 and piece.calls_saved == 2
    # A carried row is the read row of the same observation but for the run it names.
    read, carried = rows[0].to_json(), rows[2].to_json()
    assert read.keys() == carried.keys()
    assert {k for k in read if read[k] != carried[k]} == {"user_id", "carried_from"}
