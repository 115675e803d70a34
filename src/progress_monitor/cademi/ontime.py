"""A Cademi call is written on time or not at all: its budget slot is checked at the last moment before the
request's first byte is written, after the connection is open, and a slot found past is given up for the next.

Cademi judges the *arrival* of a request, so the budget's promise must hold where the request leaves, not
where the slot was handed out. At 2 req/s and a 3 % margin any three slots span 1.03 s: 30 ms of slack over
Cademi's one-second window, half of it for how late a request may leave (`Slot.tolerance`), half for the way
to the server. Between the slot and the write a thread may wait for the CPU or the interpreter lock and a
pooled connection may be opened: on the 2-core local stack that took up to 11 ms on top of the 15 ms a slot
may already be late when handed out (71 ms under heavier load), eating the other half (issue 30, 8(f)). So the
client prepares the request before it takes a slot, hands the slot to the connection that will carry the call
(`pending`), and the connection checks it in `request()`, after connecting and just before writing: a slot
past its tolerance is replaced by the budget's next one, the connection held open meanwhile. What is left
between the check and the bytes is a few Python statements.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import requests
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from progress_monitor.cademi.ratelimit import CallBudget, Slot


class _Pending(threading.local):
    """The slot of the call this thread is about to send, the budget to replace it from, and who hears of it."""

    slot: Slot | None = None
    budget: CallBudget | None = None
    missed: Callable[[], None] | None = None


_pending = _Pending()


@contextmanager
def pending(budget: CallBudget, slot: Slot, missed: Callable[[], None]) -> Iterator[None]:
    """Within the block, the next request this thread writes through an `OnTimeAdapter` uses `slot`, or, if
    it has passed by then, the budget's next slot on time (`missed` is called for each slot given up)."""
    _pending.slot, _pending.budget, _pending.missed = slot, budget, missed
    try:
        yield
    finally:
        _pending.slot, _pending.budget, _pending.missed = None, None, None


def on_time() -> None:
    """Block until this thread's pending call may be written now (nothing pending: return at once)."""
    slot, budget, missed = _pending.slot, _pending.budget, _pending.missed
    _pending.slot = None  # one check per request: a body written after its headers is the same request
    if slot is None or budget is None:
        return
    while slot.missed():
        if missed is not None:
            missed()
        slot = budget.acquire()


class _OnTimeHTTPConnection(HTTPConnection):
    def request(self, method: str, url: str, body: Any = None, headers: Any = None, **options: Any) -> None:
        if self.sock is None:
            self.connect()  # before the check: opening the connection is not time between the check and the write
        on_time()
        super().request(method, url, body=body, headers=headers, **options)


class _OnTimeHTTPSConnection(HTTPSConnection):
    def request(self, method: str, url: str, body: Any = None, headers: Any = None, **options: Any) -> None:
        if self.sock is None:
            self.connect()
        on_time()
        super().request(method, url, body=body, headers=headers, **options)


class _OnTimeHTTPPool(HTTPConnectionPool):
    ConnectionCls = _OnTimeHTTPConnection


class _OnTimeHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _OnTimeHTTPSConnection


class OnTimeAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter whose connections check the thread's pending slot just before writing a request."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _OnTimeHTTPPool, "https": _OnTimeHTTPSPool}
