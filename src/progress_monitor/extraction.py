"""Extraction core: one tag, one snapshot week, streamed as student x product records in pieces."""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from typing import Any

from progress_monitor.cademi import (
    CademiBusinessError,
    CademiClient,
    CademiConfigError,
    CademiError,
    CallStats,
    Student,
)

log = logging.getLogger(__name__)

STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_NO_ACCESS = "no_access"


class ContinuationError(ValueError):
    """A continuation message is malformed; it cannot be resumed."""


@dataclass(frozen=True)
class ProgressRecord:
    """One student x product observation of one snapshot week."""

    snapshot_date: date
    run_id: str
    tag_id: int
    user_id: int
    product_id: int
    status: str
    total: float | None
    assistidas: int | None
    completas: int | None
    error: str | None
    extracted_at: datetime

    def to_json(self) -> dict[str, Any]:
        row = asdict(self)
        row["snapshot_date"] = self.snapshot_date.isoformat()
        row["extracted_at"] = self.extracted_at.isoformat()
        return row


@dataclass(frozen=True)
class Continuation:
    """Where the next piece resumes: the roster frozen by piece 0 and the index of its next student."""

    tag_id: int
    run_id: str
    snapshot_date: date
    piece: int
    next_index: int
    user_ids: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "tag_id": self.tag_id,
            "run_id": self.run_id,
            "snapshot_date": self.snapshot_date.isoformat(),
            "piece": self.piece,
            "next_index": self.next_index,
            "user_ids": list(self.user_ids),
        }

    @classmethod
    def from_json(cls, raw: Any) -> Continuation:
        """Validate an untrusted continuation payload."""
        if isinstance(raw, str | bytes):
            try:
                raw = json.loads(raw)
            except ValueError as exc:
                raise ContinuationError("continuation is not JSON") from exc
        if not isinstance(raw, dict):
            raise ContinuationError("continuation is not an object")
        try:
            user_ids = raw["user_ids"]
            cont = cls(
                tag_id=_positive_int(raw["tag_id"], "tag_id"),
                run_id=_run_id(raw["run_id"]),
                snapshot_date=date.fromisoformat(str(raw["snapshot_date"])),
                piece=_positive_int(raw["piece"], "piece"),
                next_index=_positive_int(raw["next_index"], "next_index"),
                user_ids=tuple(_positive_int(u, "user_ids[]") for u in user_ids),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ContinuationError(f"invalid continuation: {exc}") from exc
        if not cont.next_index < len(cont.user_ids):
            raise ContinuationError("continuation next_index is past the end of its roster")
        if len(set(cont.user_ids)) != len(cont.user_ids):
            raise ContinuationError("continuation roster repeats a user id")
        return cont


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer")
    return value


def _run_id(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 64:
        raise ValueError("run_id must be a non-empty string of at most 64 characters")
    return value


class PieceExtraction:
    """Extract one piece of a tag: iterate `records()`, then read `continuation` (None when done).

    Piece 0 lists the tag's students (exposed as `students`, for the contact table) and freezes the roster;
    later pieces read the roster from their continuation, so no student is lost or repeated across pieces.
    Progress calls run on a small thread pool, all through the client's one rate limiter; records are
    yielded in roster x product order and at most `window` calls are in flight, so memory stays bounded.
    The time budget is checked before each student is started, and a student is never split.
    """

    def __init__(
        self,
        client: CademiClient,
        *,
        tag_id: int,
        product_ids: Sequence[int],
        snapshot_date: date,
        run_id: str,
        budget_s: float,
        workers: int = 4,
        start: Continuation | None = None,
        stats: CallStats | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not product_ids:
            raise ValueError("a track needs at least one product")
        if start is not None and (start.tag_id, start.run_id) != (tag_id, run_id):
            raise ContinuationError("continuation belongs to another tag or run")
        self.client = client
        self.tag_id = tag_id
        self.product_ids = tuple(product_ids)
        self.snapshot_date = snapshot_date
        self.run_id = run_id
        self.budget_s = budget_s
        self.workers = max(1, workers)
        self.window = max(2 * self.workers, len(self.product_ids))
        self.start = start
        self.piece = start.piece if start else 0
        self.students: list[Student] = []
        self.continuation: Continuation | None = None
        self.students_done = 0
        self.stats = stats or CallStats()  # this piece's own API calls, retries and breaches
        self._clock = clock

    def records(self) -> Iterator[ProgressRecord]:
        """Stream the piece's records; sets `continuation` when the budget ran out first."""
        deadline = self._clock() + self.budget_s
        if self.start is None:
            self.students = list(self.client.iter_tag_students(self.tag_id, self.stats))
            user_ids: tuple[int, ...] = tuple(s.user_id for s in self.students)
            index = 0
        else:
            user_ids, index = self.start.user_ids, self.start.next_index
        pending: deque[tuple[int, list[Future[ProgressRecord]]]] = deque()
        in_flight = 0
        executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=f"tag{self.tag_id}")
        try:
            while True:
                # Start whole students while the window has room and the budget lasts (always >= 1 per piece).
                while index < len(user_ids) and in_flight + len(self.product_ids) <= self.window:
                    if self._clock() >= deadline and (self.students_done or pending):
                        break
                    user_id = user_ids[index]
                    futures = [executor.submit(self._fetch, user_id, p) for p in self.product_ids]
                    pending.append((user_id, futures))
                    in_flight += len(futures)
                    index += 1
                if not pending:
                    break
                _, futures = pending.popleft()
                for future in futures:
                    yield future.result()
                in_flight -= len(futures)
                self.students_done += 1
        finally:
            for _, futures in pending:
                for future in futures:
                    future.cancel()
            executor.shutdown(wait=True, cancel_futures=True)
        if index < len(user_ids):
            self.continuation = Continuation(
                tag_id=self.tag_id,
                run_id=self.run_id,
                snapshot_date=self.snapshot_date,
                piece=self.piece + 1,
                next_index=index,
                user_ids=user_ids,
            )

    def _fetch(self, user_id: int, product_id: int) -> ProgressRecord:
        status, error = STATUS_OK, None
        total: float | None = None
        assistidas: int | None = None
        completas: int | None = None
        try:
            progress = self.client.progress(user_id, product_id, self.stats)
            total, assistidas, completas = progress.total, progress.assistidas, progress.completas
        except CademiConfigError:
            raise  # a wrong key or URL fails the whole piece; nothing half-written
        except CademiBusinessError as exc:
            status, error = STATUS_NO_ACCESS, exc.msg[:200]
        except CademiError as exc:
            status, error = STATUS_FAILED, str(exc)[:300]
            log.warning(
                "progress extraction failed for user %d product %d: %s",
                user_id,
                product_id,
                error,
                extra={"run_id": self.run_id, "tag_id": self.tag_id, "piece": self.piece},
            )
        return ProgressRecord(
            snapshot_date=self.snapshot_date,
            run_id=self.run_id,
            tag_id=self.tag_id,
            user_id=user_id,
            product_id=product_id,
            status=status,
            total=total,
            assistidas=assistidas,
            completas=completas,
            error=error,
            extracted_at=datetime.now(UTC),
        )
