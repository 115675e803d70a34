"""The school-wide budget object (budget.py) against fake-gcs-server: claimants in two "processes" never
share a slot, slots keep their spacing, and a breach widens everyone's spacing."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from devstack.emulators import fake_gcs_binary
from devstack.procs import free_port, spawn, wait_for_port
from progress_monitor.cademi.budget import FleetBudget
from progress_monitor.cademi.ratelimit import WIDEN_FACTOR

pytestmark = pytest.mark.integration
TOLERANCE = 0.003  # a slot used at most 3 ms late


@pytest.fixture
def bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[storage.Bucket]:
    port = free_port()
    gcs = spawn(
        "fake-gcs",
        [
            str(fake_gcs_binary()),
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-backend",
            "memory",
            "-log-level",
            "warn",
        ],
        tmp_path,
    )
    try:
        wait_for_port(gcs, port)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
        client = storage.Client(project="local-project", credentials=AnonymousCredentials())
        yield client.create_bucket("budget-test")
    finally:
        gcs.stop()


class Recorder:
    """A FleetBudget's clock and sleep, recording when each caller was let through."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.lock = threading.Lock()

    def run(self, budget: FleetBudget, calls: int) -> None:
        for _ in range(calls):
            budget.acquire()
            with self.lock:
                self.starts.append(time.time())


def test_two_processes_worth_of_claimants_share_one_spaced_sequence(bucket: storage.Bucket) -> None:
    interval = 0.05
    # Two budgets over the same object are two processes; three threads each are their pieces' workers.
    budgets = [FleetBudget(bucket, interval, TOLERANCE), FleetBudget(bucket, interval, TOLERANCE)]
    recorder = Recorder()
    threads = [threading.Thread(target=recorder.run, args=(b, 15)) for b in budgets for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    starts = sorted(recorder.starts)
    assert len(starts) == 90
    assert all(b.claims > 0 for b in budgets)  # both processes claimed from the one object
    # Every start is a distinct slot of one sequence: no two closer than the spacing allows (a slot may be used
    # TOLERANCE late), and 90 starts take at least 89 intervals, as one process alone would.
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= interval - TOLERANCE - 0.002, min(gaps)
    assert starts[-1] - starts[0] >= 89 * interval


def test_unlimited_claimants_would_have_collided(bucket: storage.Bucket) -> None:
    """The control: the same load with a budget object each (no shared sequence) starts calls together."""
    budgets = [FleetBudget(bucket, 0.05, TOLERANCE), FleetBudget(bucket, 0.05, TOLERANCE)]
    budgets[1].object_name = "budget/other.json"
    recorder = Recorder()
    threads = [threading.Thread(target=recorder.run, args=(b, 10)) for b in budgets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    starts = sorted(recorder.starts)
    assert min(b - a for a, b in itertools.pairwise(starts)) < 0.05 * 0.5


def test_a_breach_widens_every_claimants_spacing(bucket: storage.Bucket) -> None:
    interval = 0.05
    first, second = FleetBudget(bucket, interval, TOLERANCE), FleetBudget(bucket, interval, TOLERANCE)
    first.acquire()
    first.breached()  # the other process hears of it through the object
    recorder = Recorder()
    recorder.run(second, 12)
    gaps = [b - a for a, b in itertools.pairwise(recorder.starts)]
    assert min(gaps) >= interval * WIDEN_FACTOR - TOLERANCE - 0.002, gaps
