"""Issue 30, 8(f): Cademi judges when a call *arrives*, so the budget's spacing must hold at the write, not only
when a slot is handed out. A Cademi stand-in in a thread of the test process stamps every arrival with the
test's clock and judges it with the simulator's own sliding windows (`SimState.admit`); the clock moves only
when the client sleeps for its slot or when the test says time passes: a thread waiting for the CPU before its
request leaves, or a connection being opened. No wall-clock timing is asserted.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import urllib3.connection
from google.api_core import exceptions
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cademi_sim import v1 as sim_v1
from cademi_sim.scenario import parse
from cademi_sim.state import SimState
from progress_monitor.cademi.budget import FleetBudget
from progress_monitor.cademi.ratelimit import CallBudget, RateLimiter
from progress_monitor.cademi.v1 import CademiClient
from tests.scenarios import school
from tests.unit.offline import ManualClock

PER_SECOND, PER_MINUTE, SAFETY = 2.0, 120.0, 0.03  # Cademi's limit and the settings' default margin
INTERVAL = max(1 / PER_SECOND, 60 / PER_MINUTE) * (1 + SAFETY)
TOLERANCE = (PER_SECOND * INTERVAL - 1) / 2  # ratelimit.late_tolerance: 15 ms
STUDENTS = (1001, 1002, 1003)
PRODUCTS = (101, 102)


class _Blob:
    def __init__(self, bucket: MemoryBucket) -> None:
        self.bucket = bucket
        self.generation = bucket.generation

    def download_as_bytes(self) -> bytes:
        return self.bucket.data

    def upload_from_string(self, data: bytes, content_type: str, if_generation_match: int) -> None:
        if if_generation_match != self.bucket.generation:
            raise exceptions.PreconditionFailed("generation")
        self.bucket.data, self.bucket.generation = data, self.bucket.generation + 1


class MemoryBucket:
    """The budget object's bucket, in memory (the compare-and-swap is tests/test_budget.py's, on fake-gcs)."""

    def __init__(self) -> None:
        self.data, self.generation = b"", 0

    def blob(self, name: str) -> _Blob:
        return _Blob(self)

    def get_blob(self, name: str) -> _Blob | None:
        return _Blob(self) if self.generation else None


class Cademi(ThreadingHTTPServer):
    """Answers v1 progress calls as the simulator does, judging each arrival at the test clock's time."""

    daemon_threads = True

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        scenario = school(n_students=len(STUDENTS), products=PRODUCTS, rate=(PER_SECOND, PER_MINUTE))
        self.state = SimState(parse(scenario), "admin")
        self.arrivals: list[float] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    def reset(self) -> None:
        self.state = SimState(self.state.scenario, "admin")
        self.arrivals = []


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK wait between them
    server: Cademi

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        split = urlsplit(self.path)
        arrived = self.server.clock.time()
        self.server.arrivals.append(arrived)
        wait = self.server.state.admit(arrived, split.path)
        if wait is None:
            rel = split.path.removeprefix(sim_v1.API_PREFIX)
            status, body = sim_v1.route(self.server.state, rel, parse_qs(split.query))
        else:
            self.server.state.count("breaches")
            status, body, _ = sim_v1.breach(self.server.state, wait)
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture(scope="module")
def cademi() -> Iterator[Cademi]:
    server = Cademi(ManualClock(start=1_000_000.0))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def budget_of(kind: str, clock: ManualClock) -> CallBudget:
    if kind == "fleet":
        return FleetBudget(MemoryBucket(), INTERVAL, TOLERANCE, clock=clock.time, sleep=clock.sleep)
    return RateLimiter(PER_SECOND, PER_MINUTE, SAFETY, clock=clock.time, sleep=clock.sleep)


def run_calls(
    cademi: Cademi, monkeypatch: pytest.MonkeyPatch, kind: str, before_send: list[float], connect_s: float
) -> tuple[int, int]:
    """One client reads every student's progress in turn; the i-th request is held `before_send[i]` seconds
    between its slot and its way out (a thread waiting for the CPU), and opening a connection takes
    `connect_s`. Returns (arrivals, breaches) as the stand-in judged them."""
    clock = ManualClock(start=1_000_000.0)
    cademi.clock = clock
    cademi.reset()
    delays = iter(before_send)
    send = requests.adapters.HTTPAdapter.send
    connect = urllib3.connection.HTTPConnection.connect

    def held_send(self: requests.adapters.HTTPAdapter, *args: Any, **kwargs: Any) -> requests.Response:
        clock.sleep(next(delays, 0.0))
        return send(self, *args, **kwargs)

    def slow_connect(self: urllib3.connection.HTTPConnection) -> None:
        clock.sleep(connect_s)
        connect(self)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", held_send)
    monkeypatch.setattr(urllib3.connection.HTTPConnection, "connect", slow_connect)
    client = CademiClient(
        f"http://127.0.0.1:{cademi.server_address[1]}{sim_v1.API_PREFIX}",
        "test-key",
        budget_of(kind, clock),
        sleep=clock.sleep,
        backoff_base_s=1.0,
    )
    try:
        for user in STUDENTS:
            for product in PRODUCTS:
                client.progress(user, product)
    finally:
        client.close()
        monkeypatch.undo()
    return len(cademi.arrivals), cademi.state.counters["breaches"]


@pytest.mark.parametrize("kind", ["fleet", "process"])
def test_a_slow_connection_set_up_does_not_push_the_first_call_into_the_next_window(
    cademi: Cademi, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """The first call opens the connection, which takes 40 ms after its slot: sent then, it arrives 0.99 s
    before the call two slots later, and Cademi counts three calls in one second."""
    arrivals, breaches = run_calls(cademi, monkeypatch, kind, before_send=[], connect_s=0.04)
    assert (arrivals, breaches) == (len(STUDENTS) * len(PRODUCTS), 0)


@settings(max_examples=40)
@given(
    kind=st.sampled_from(["fleet", "process"]),
    before_send=st.lists(st.sampled_from([0.0, 0.002, 0.01, 0.02, 0.035, 0.2, 0.6]), max_size=8),
    connect_s=st.sampled_from([0.0, 0.005, 0.04]),
)
@example(kind="fleet", before_send=[0.0, 0.0, 0.0], connect_s=0.02)
@example(kind="fleet", before_send=[0.035], connect_s=0.0)
def test_whatever_holds_a_call_between_its_slot_and_its_write_no_window_is_exceeded(
    cademi: Cademi, kind: str, before_send: list[float], connect_s: float
) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        arrivals, breaches = run_calls(cademi, monkeypatch, kind, before_send, connect_s)
    assert breaches == 0
    assert arrivals == len(STUDENTS) * len(PRODUCTS)


def _classic(arrivals: list[float], per_second: int) -> list[bool]:
    """The simulator's sliding window as it was, for arrivals handled in time order."""
    window: list[float] = []
    admitted = []
    for now in arrivals:
        window = [t for t in window if now - t < 1.0]
        admitted.append(len(window) < per_second)
        if admitted[-1]:
            window.append(now)
    return admitted


@given(
    gaps=st.lists(st.integers(min_value=0, max_value=1200), min_size=1, max_size=14),
    order=st.randoms(use_true_random=False),
)
def test_the_simulator_judges_arrival_times_whatever_order_its_threads_take_them_up(
    gaps: list[int], order: random.Random
) -> None:
    """Arrivals (ms apart) handled in any order: no one-second window ever holds more than the limit admitted;
    handled in time order, the judgement is the classic sliding window's."""
    arrivals = list(itertools.accumulate(g / 1000 for g in gaps))
    scenario = school(n_students=1, rate=(PER_SECOND, PER_MINUTE))
    in_order = SimState(parse(scenario), "admin")
    assert [in_order.admit(t) is None for t in arrivals] == _classic(arrivals, int(PER_SECOND))
    shuffled = SimState(parse(scenario), "admin")
    handled = arrivals[:]
    order.shuffle(handled)
    admitted = sorted(t for t in handled if shuffled.admit(t) is None)
    assert all(b - a >= 1.0 for a, b in zip(admitted, admitted[int(PER_SECOND) :], strict=False))
