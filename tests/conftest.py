"""Shared fixtures: a Cademi simulator process per scenario, over real HTTP on 127.0.0.1; the suite's workers
and the shuffled order of the pure tests."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from google.auth import crypt

from cademi_sim.admin import SimulatorAdmin
from devstack.procs import Child, start_simulator
from progress_monitor.cademi.ratelimit import RateLimiter
from progress_monitor.cademi.v1 import CademiClient
from tests import tag_stack

# Each pytest-xdist worker hands out its own slice of ports, so two workers' stacks never race for one.
if "PYTEST_XDIST_WORKER" in os.environ:
    _worker = int(os.environ["PYTEST_XDIST_WORKER"].removeprefix("gw"))
    os.environ["DEVSTACK_PORT_SLICE"] = f"{_worker}/{os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1')}"

TESTS = Path(__file__).parent
PURE = TESTS / "unit"
# The longest modules on processes first, so the two workers finish together (xdist's loadscope takes whole
# modules in this order, with --no-loadscope-reorder); a scheduling hint, never a dependency.
LONGEST_FIRST = (
    "test_pipeline.py",
    "test_fleet.py",
    "test_resilience.py",
    "test_soak.py",
    "add_tag",
    "test_tutors.py",
    "test_pipeline_v3.py",
    "test_terraform_refusals.py",
    "test_terraform_plan.py",
    "stages",
)

# Hypothesis draws the same cases on every run and machine (no example database, no wall-clock deadline): a
# property that fails, fails every time; `HYPOTHESIS_PROFILE=explore` draws new cases, e.g. in a soak.
hypothesis.settings.register_profile("repeatable", derandomize=True, database=None, deadline=None)
hypothesis.settings.register_profile("explore", deadline=None)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--shuffle-seed", type=int, default=None, help="the seed of the pure tests' shuffled order")


def pytest_configure(config: pytest.Config) -> None:
    """One seed per session: chosen by the controller (or given), handed to every worker, printed."""
    worker_input = getattr(config, "workerinput", None)
    if worker_input is not None:
        config.stash[SEED] = int(worker_input["shuffle_seed"])
    else:
        given = config.getoption("--shuffle-seed")
        config.stash[SEED] = given if given is not None else random.SystemRandom().randrange(2**32)


SEED = pytest.StashKey[int]()


def pytest_configure_node(node: Any) -> None:  # pytest-xdist: every worker shuffles alike
    node.workerinput["shuffle_seed"] = node.config.stash[SEED]


def pytest_report_header(config: pytest.Config) -> str:
    return f"pure tests (tests/unit) shuffled: reproduce with --shuffle-seed={config.stash[SEED]}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest modules first (LONGEST_FIRST). The pure tests run in a random order (no test may rely on
    another's leftovers): the modules shuffled, and the tests within each (kept together, so a module's fixtures
    are set up once). The tests on processes keep their order (a module's stack is shared by its tests, which
    read the weeks its fixture ran)."""

    def rank(item: pytest.Item) -> int:
        first = item.path.relative_to(TESTS).parts[0]
        return LONGEST_FIRST.index(first) if first in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each module's tests keep their order
    slots = [i for i, item in enumerate(items) if item.path.is_relative_to(PURE)]
    modules: dict[Path, list[pytest.Item]] = {}
    for i in slots:
        modules.setdefault(items[i].path, []).append(items[i])
    shuffle = random.Random(config.stash[SEED]).shuffle
    order = list(modules.values())
    shuffle(order)
    for tests in order:
        shuffle(tests)
    for slot, item in zip(slots, [item for tests in order for item in tests], strict=True):
        items[slot] = item


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
