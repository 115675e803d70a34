"""Shared fixtures: a Cademi simulator process per scenario, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.auth import crypt

from cademi_sim.admin import SimulatorAdmin
from devstack.procs import Child, start_simulator
from devstack.stack import LocalStack
from progress_monitor.cademi.ratelimit import RateLimiter
from progress_monitor.cademi.v1 import CademiClient
from tests import tag_stack


@dataclass
class RunningSimulator:
    child: Child
    admin: SimulatorAdmin
    base_url: str
    api_key: str

    def client(self, *, rate: tuple[float, float] = (1000, 60000), **kwargs: Any) -> CademiClient:
        """A client with fast retries (tests must not sleep for long)."""
        options: dict[str, Any] = {"backoff_base_s": 0.01, "backoff_cap_s": 0.05, "read_timeout_s": 5.0}
        options.update(kwargs)
        return CademiClient(self.base_url, self.api_key, RateLimiter(*rate), **options)


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Callable[..., RunningSimulator]]:
    """Factory: start a simulator on a scenario dict; every one started is stopped by PID at teardown."""
    started: list[Child] = []

    def start(scenario: dict[str, Any], week: int = 0, extra_args: list[str] | None = None) -> RunningSimulator:
        path = tmp_path / f"scenario-{len(started)}.json"
        path.write_text(json.dumps(scenario), encoding="utf-8")
        child = start_simulator(path, week=week, admin_token="test-admin", extra_args=extra_args)
        started.append(child)
        return RunningSimulator(
            child,
            SimulatorAdmin(child.info["port"], "test-admin"),
            child.info["base_url"],
            scenario["api_key"],
        )

    yield start
    for child in started:
        child.stop()


@pytest.fixture(scope="session")
def iap_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[crypt.Signer, Path]:
    return tag_stack.make_iap_key(tmp_path_factory.mktemp("iap"))


@pytest.fixture(scope="session")
def add_tag_stack(tmp_path_factory: pytest.TempPathFactory, iap_key: tuple[crypt.Signer, Path]) -> Iterator[LocalStack]:
    """One stack for test_add_tag.py and test_add_tag_fuzz.py; the latter, which runs last, stops it when done
    (so it never runs beside another module's stack), and the session's end stops it otherwise."""
    stack = tag_stack.start(tmp_path_factory.mktemp("tagstack"), iap_key[1])
    yield stack
    stack.stop()
