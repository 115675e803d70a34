"""The school-wide Cademi budget, held by construction whatever the number of processes.

Cademi allows 2 requests per second for the whole school. Cloud Run's instance cap is per revision and soft
(a deploy during a run, or a surge, briefly runs two instances), a duplicate delivery runs a second piece, and
the add_tag form calls Cademi too: a limiter per process cannot hold the school's budget. So every call's
start is a *slot* of one sequence spaced `interval` apart, and the sequence lives in one small object in
Cloud Storage (`budget/cademi.json`: the next free slot). A process claims the next few slots with a write
conditioned on the object's generation, so no two callers ever hold the same slot.

Within a process the slots are handed out in order, and a slot is used only on time: a thread that wakes up
late (a loaded machine, a paused instance) skips to its next slot instead of crowding the caller after it, and
the client checks the slot again when the request is written (`ontime.py`), since Cademi judges arrivals.
After a breach (Cademi answered 429) every claimant widens the spacing for a while: the run slows, it does
not hammer.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from google.api_core import exceptions
from google.cloud import storage  # type: ignore[attr-defined]

from progress_monitor.cademi.ratelimit import WIDEN_FACTOR, WIDEN_FOR_S, Slot
from progress_monitor.contracts.objects import BUDGET_OBJECT
from progress_monitor.errors import TransientError
from progress_monitor.platform.access import needs

log = logging.getLogger(__name__)
BATCH_SECONDS = 4.0  # slots claimed at once: few writes to the object (Cloud Storage allows ~1/s per object)
MAX_BATCH = 40  # at the fast rates of local tests, smaller batches so two processes interleave finely
LEAD_S = 0.25  # a batch starts this far ahead of now, so its first slot is not past when the claim returns
MAX_CLAIM_ATTEMPTS = 20


class BudgetUnavailableError(TransientError):
    """The budget object could not be read or claimed: the piece is retried later, no call is made."""


@dataclass(frozen=True)
class BudgetState:
    next_slot: float  # epoch seconds: the first slot nobody holds
    widen_until: float = 0.0

    def to_json(self) -> bytes:
        return json.dumps({"next_slot": self.next_slot, "widen_until": self.widen_until}).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> BudgetState:
        try:
            value = json.loads(raw)
            return cls(float(value["next_slot"]), float(value.get("widen_until", 0.0)))
        except (ValueError, KeyError, TypeError):
            log.error("the budget object is unreadable; starting a new sequence")
            return cls(0.0)


class FleetBudget:
    """Hands out call slots claimed from the shared budget object (the `acquire` / `breached` interface of
    `ratelimit.RateLimiter`)."""

    def __init__(
        self,
        bucket: storage.Bucket,
        interval: float,
        late_tolerance_s: float,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`late_tolerance_s`: how late a slot may still be used (`ratelimit.late_tolerance`: half the
        slack the safety margin leaves in the tighter of Cademi's two windows); a later one is skipped."""
        if interval <= 0 or late_tolerance_s < 0:
            raise ValueError("interval must be positive and the tolerance not negative")
        self.bucket = bucket
        self.object_name = BUDGET_OBJECT
        self.interval = interval
        self.late_tolerance_s = late_tolerance_s
        self.batch = max(1, min(MAX_BATCH, math.ceil(BATCH_SECONDS / interval)))
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._slots: deque[float] = deque()
        self.claims = 0
        self.skipped = 0

    @property
    def rate(self) -> float:
        return 1.0 / self.interval

    def acquire(self) -> Slot:
        """Block until this caller's slot; every caller of every process gets a different slot."""
        while True:
            with self._lock:
                if not self._slots:
                    self._claim()
                slot = Slot(self._slots.popleft(), self.late_tolerance_s, self._clock)
            wait = slot.at - self._clock()
            if wait > 0:
                self._sleep(wait)
            if not slot.missed():
                return slot
            with self._lock:
                self.skipped += 1  # woke too late: using it would crowd the next slot, maybe another process's

    def breached(self) -> None:
        """Cademi answered 429: widen every claimant's spacing for a while, starting after a pause."""
        now = self._clock()

        def widen(state: BudgetState) -> BudgetState:
            return BudgetState(max(state.next_slot, now + self.interval * WIDEN_FACTOR), now + WIDEN_FOR_S)

        self._update(widen)
        with self._lock:
            self._slots.clear()  # the slots held were spaced for a budget the server has just refused

    def _claim(self) -> None:
        now = self._clock()
        claimed: list[float] = []

        def take(state: BudgetState) -> BudgetState:
            interval = self.interval * (WIDEN_FACTOR if state.widen_until > now else 1.0)
            # A guard between batches: the last slot of another process may be used a little late.
            first = max(now + LEAD_S, state.next_slot + self.late_tolerance_s)
            claimed[:] = [first + i * interval for i in range(self.batch)]
            return BudgetState(first + self.batch * interval, state.widen_until)

        self._update(take)
        self._slots.extend(claimed)
        self.claims += 1

    @needs("objects.read {BUDGET_OBJECT}", "objects.rewrite {BUDGET_OBJECT}")
    def _update(self, change: Callable[[BudgetState], BudgetState]) -> None:
        """Read-modify-write of the budget object, conditioned on its generation (retried on a race)."""
        blob = self.bucket.blob(self.object_name)
        for attempt in range(MAX_CLAIM_ATTEMPTS):
            try:
                current = self.bucket.get_blob(self.object_name)
                if current is None:
                    state, generation = BudgetState(0.0), 0
                else:
                    state, generation = BudgetState.from_json(current.download_as_bytes()), int(current.generation)
                blob.upload_from_string(
                    change(state).to_json(), content_type="application/json", if_generation_match=generation
                )
                return
            except (exceptions.PreconditionFailed, exceptions.NotFound):
                self._sleep(0.01 * (attempt + 1))  # another claimant wrote first: read again
            except exceptions.TooManyRequests:
                self._sleep(0.2 * (attempt + 1))
            except exceptions.GoogleAPIError as exc:
                raise BudgetUnavailableError(f"Cademi budget object unavailable: {type(exc).__name__}") from exc
        raise BudgetUnavailableError("Cademi budget object: too many concurrent claims")
