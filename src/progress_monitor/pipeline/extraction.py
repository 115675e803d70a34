"""Extraction core: one tag, one snapshot week, streamed as student x product records in pieces."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from typing import Any

from progress_monitor.carrying.rule import skipped_units
from progress_monitor.contracts.cademi import CademiSource, CallStats, Progress
from progress_monitor.contracts.carry_plan import CarriedValue, CarryPlan
from progress_monitor.contracts.messages import ProgressTask
from progress_monitor.contracts.values import Status
from progress_monitor.errors import (
    CademiBusinessError,
    CademiError,
    CademiOutageError,
    CademiUnavailableError,
    PermanentError,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProgressRecord:
    """One student x product observation of one snapshot week."""

    snapshot_date: date
    run_id: str
    tag_id: int
    user_id: int
    product_id: int
    status: Status
    total: float | None
    assistidas: int | None
    completas: int | None
    error: str | None
    extracted_at: datetime
    last_access_at: datetime | None = None  # the student's last access to Cademi, from the tag's listing
    carried_from: str | None = None  # carried: the run whose observation this repeats (no call was made)

    def to_json(self) -> dict[str, Any]:
        row = asdict(self)
        row["snapshot_date"] = self.snapshot_date.isoformat()
        row["extracted_at"] = self.extracted_at.isoformat()
        row["last_access_at"] = self.last_access_at.isoformat() if self.last_access_at else None
        return row


class PieceExtraction:
    """Extract one piece of a tag: iterate `records()`, then read `next_index` (None when the tag is done).

    The roster is the one piece 0 froze, so no student is lost or repeated across pieces. Progress calls run
    on a small thread pool, each taking a slot of the client's budget; a call answers one product (v1) or all
    of a student's (v3), as the source's `progress_units` says. Records are yielded in roster x product order
    and at most `window` calls are in flight, so memory stays bounded. The time budget is checked before
    each student is started (at least one per piece), and a student is never split across pieces.
    """

    def __init__(
        self,
        client: CademiSource,
        task: ProgressTask,
        roster: Sequence[int],
        *,
        budget_s: float,
        workers: int = 4,
        stats: CallStats | None = None,
        outage_students: int = 3,
        clock: Callable[[], float] = time.monotonic,
        last_access_at: Mapping[int, datetime] | None = None,
        carry: CarryPlan | None = None,
        student_ref: Callable[[int], str] = lambda _: "s:?",
    ) -> None:
        if not task.start_index < len(roster) and not (task.piece == 0 and not roster):
            raise PermanentError(f"task start_index {task.start_index} is outside the roster of {len(roster)}")
        self.client = client
        self.task = task
        self.roster = tuple(roster)
        self.budget_s = budget_s
        self.workers = max(1, workers)
        self.window = max(2 * self.workers, len(task.product_ids))
        self.next_index: int | None = None
        self.students_done = 0
        self.stats = stats or CallStats()  # this piece's own API calls, retries and breaches
        self.outage_students = outage_students
        self._unavailable: Counter[int] = Counter()  # per student: calls that failed transiently after retries
        self._unavailable_lock = threading.Lock()
        self._clock = clock
        self.last_access_at = last_access_at or {}
        self.carry = carry or CarryPlan()
        self.student_ref = student_ref  # how logs name a student (privacy/erasures.py log_ref): never the id
        self.carrying = bool(self.carry.carried)  # turned off for the rest of the piece by a mismatch
        self.carried = 0  # records written from an earlier observation
        self.calls_saved = 0
        self.carry_checked = 0  # sampled pairs compared with what would have been carried
        self.carry_unverified = 0  # sampled pairs whose read failed: nothing to compare
        self.sample = set(self.carry.sample)  # grows when a sampled read fails (another student is drawn)
        self._started = 0  # roster index of the next student to start
        self.mismatches: list[tuple[int, int]] = []  # (user, product) of each mismatch

    def records(self) -> Iterator[ProgressRecord]:
        """Stream the piece's records; sets `next_index` when the budget ran out before the roster did.

        Raises CademiOutageError when `outage_students` students in a row failed on every call: the caller
        writes nothing and the piece is retried later, so an outage never fills the history with failed rows."""
        deadline = self._clock() + self.budget_s
        products = self.task.product_ids
        units = self.client.progress_units(products)  # what one call answers: a product (v1), all (v3)
        index = self.task.start_index
        # Per started student: its units' futures, how many products it asked for and calls it made (not carried).
        pending: deque[tuple[list[Future[list[ProgressRecord]]], int, int]] = deque()
        in_flight = 0
        down_in_a_row = 0
        executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=f"tag{self.task.tag_id}")
        try:
            while True:
                # Start whole students while the window has room and the budget lasts (always >= 1 per piece).
                # Carried units make no call; the second bound keeps memory flat through a run of them.
                while index < len(self.roster) and in_flight + len(units) <= self.window:
                    if self._clock() >= deadline and (self.students_done or pending):
                        break
                    if len(pending) >= 4 * self.window:
                        break
                    user_id = self.roster[index]
                    carry = self.carrying and user_id not in self.sample
                    skip = skipped_units(self.carry, user_id, units) if carry else []
                    futures = [
                        _done(self._carried(user_id, unit))
                        if unit in skip
                        else executor.submit(self._fetch, user_id, unit)
                        for unit in units
                    ]
                    asked = sum(len(unit) for unit in units if unit not in skip)
                    pending.append((futures, asked, len(units) - len(skip)))
                    in_flight += len(units) - len(skip)
                    self.calls_saved += len(skip)
                    index += 1
                    self._started = index
                if not pending:
                    break
                futures, asked, calls = pending.popleft()
                student = [record for future in futures for record in future.result()]
                user_id = student[0].user_id
                if asked:  # a student carried whole made no call: it neither breaks nor extends a streak
                    down_in_a_row = down_in_a_row + 1 if self._all_unavailable(user_id, asked) else 0
                if down_in_a_row >= self.outage_students:
                    raise CademiOutageError(f"{down_in_a_row} students in a row failed on every call")
                if user_id in self.sample:
                    self._verify(user_id, student)
                yield from student
                in_flight -= calls
                self.students_done += 1
        finally:
            for futures, _, _ in pending:
                for future in futures:
                    future.cancel()
            executor.shutdown(wait=True, cancel_futures=True)
        self.next_index = index if index < len(self.roster) else None

    def _all_unavailable(self, user_id: int, asked: int) -> bool:
        with self._unavailable_lock:
            return self._unavailable[user_id] == asked

    def _carried(self, user_id: int, unit: tuple[int, ...]) -> list[ProgressRecord]:
        """This week's rows of a skipped call: the earlier observation, marked as carried from its run."""
        values = self.carry.carried[user_id]
        self.carried += len(unit)
        return [self.row(user_id, product, Status.OK, values[product]) for product in unit]

    def row(
        self,
        user_id: int,
        product_id: int,
        status: Status,
        values: Progress | CarriedValue | None = None,
        error: str | None = None,
    ) -> ProgressRecord:
        """The one builder of a record, read or carried: the piece's week, run and tag, the listing's last
        access; values carried from an earlier observation name the run that read them."""
        return ProgressRecord(
            snapshot_date=self.task.snapshot_date,
            run_id=str(self.task.run_id),
            tag_id=self.task.tag_id,
            user_id=user_id,
            product_id=product_id,
            status=status,
            total=None if values is None else values.total,
            assistidas=None if values is None else values.assistidas,
            completas=None if values is None else values.completas,
            error=error,
            extracted_at=_observed(values),
            last_access_at=self.last_access_at.get(user_id),
            carried_from=values.source_run if isinstance(values, CarriedValue) else None,
        )

    def _verify(self, user_id: int, student: list[ProgressRecord]) -> None:
        """A sampled student was read although the rule would carry them: compare. What was read is stored
        either way; a mismatch is logged (ids only) and ends carrying for the rest of this piece."""
        would_carry = self.carry.carried.get(user_id, {})
        unverified = 0
        for record in student:
            value = would_carry.get(record.product_id)
            if value is None:
                continue  # nothing to compare: not carried
            if record.status == Status.FAILED:
                unverified += 1  # the read failed: this pair verifies nothing
                continue
            self.carry_checked += 1
            observed = (record.status, record.total, record.assistidas, record.completas)
            if observed != (Status.OK, value.total, value.assistidas, value.completas):
                self.mismatches.append((user_id, record.product_id))
                self.carrying = False
                log.error(
                    "carry verification mismatch for student %s product %d: read differs from run %s's observation",
                    self.student_ref(user_id),
                    record.product_id,
                    value.source_run,
                    extra={"run_id": str(self.task.run_id), "tag_id": self.task.tag_id, "piece": self.task.piece},
                )
        if unverified:
            # Counted, and another carried student not yet started is read instead: a failing student never
            # silently shrinks the sample.
            self.carry_unverified += unverified
            self._draw_another()

    def _draw_another(self) -> None:
        for user_id in self.roster[self._started :]:
            if user_id in self.carry.carried and user_id not in self.sample:
                self.sample.add(user_id)
                return

    def _fetch(self, user_id: int, products: tuple[int, ...]) -> list[ProgressRecord]:
        """One call's worth of records (CademiConfigError propagates: a wrong key or URL fails the whole
        piece, nothing half-written)."""
        answers = self.client.student_progress(user_id, products, self.stats)
        return [self._record(user_id, p, answers[p]) for p in products]

    def _record(self, user_id: int, product_id: int, answer: Progress | CademiError) -> ProgressRecord:
        if isinstance(answer, Progress):
            return self.row(user_id, product_id, Status.OK, answer)
        if isinstance(answer, CademiBusinessError):
            return self.row(user_id, product_id, Status.NO_ACCESS, error=answer.msg[:200])
        error = str(answer)[:300]
        if isinstance(answer, CademiUnavailableError):
            with self._unavailable_lock:
                self._unavailable[user_id] += 1
        log.warning(
            "progress extraction failed for student %s product %d: %s",
            self.student_ref(user_id),
            product_id,
            error,
            extra={"run_id": str(self.task.run_id), "tag_id": self.task.tag_id, "piece": self.task.piece},
        )
        return self.row(user_id, product_id, Status.FAILED, error=error)


def _observed(values: Progress | CarriedValue | None) -> datetime:
    """When the row's value was read: now, or for a carried value when its run read it (no call was made)."""
    if isinstance(values, CarriedValue) and values.observed_at is not None:
        return values.observed_at
    return datetime.now(UTC)


def _done(records: list[ProgressRecord]) -> Future[list[ProgressRecord]]:
    """A carried unit as an already finished future, so records keep their roster order."""
    future: Future[list[ProgressRecord]] = Future()
    future.set_result(records)
    return future
