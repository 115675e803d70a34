"""The fleet under Cloud Run's rules: no tag lost to a busy instance, and the school's budget held by any
number of processes (devstack.front admits what Cloud Run would; budget.py holds the budget)."""

from __future__ import annotations

import json
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import requests

from cademi_sim.scenario import load
from cademi_sim.truth import expected_rows
from devstack.here import services_here
from devstack.stack import LocalStack
from tests.scenarios import school
from tests.slack import slash_command
from tests.truth import history

pytestmark = pytest.mark.integration
WEEK = "2026-03-02"


def many_tags(tags: int, students: int, rate: float) -> dict[str, Any]:
    """A school of `tags` classes of the same track, as scenarios.school builds one."""
    scenario = school(n_students=students * tags, products=(101, 102), weeks=(WEEK,))
    users = [u["id"] for u in scenario["users"]]
    scenario["tags"] = [{"id": 5001 + t, "nome": f"Turma {t}"} for t in range(tags)] + [{"id": 5999, "nome": "x"}]
    scenario["memberships"] = [
        {"user": uid, "tag": 5001 + i // students, "from_week": 0, "to_week": None} for i, uid in enumerate(users)
    ]
    scenario["registry"]["tags"] = [
        {"tag_id": 5001 + t, "track": "trilha", "turma": "2026-03", "start_date": WEEK} for t in range(tags)
    ]
    scenario["rate_limit"] = {"per_second": rate, "per_minute": rate * 60, "breach": "429"}
    scenario["latency_ms"] = {"mean": 20, "jitter": 10}
    return scenario


def start(tmp: Path, scenario: dict[str, Any], **options: Any) -> LocalStack:
    path = tmp / "scenario.json"
    path.write_text(json.dumps(scenario))
    stack = LocalStack.start(tmp, path, **options)
    stack.use_here()
    return stack


def wait_for(predicate: Any, timeout: float) -> Any:
    """The predicate's first truthy value within `timeout` seconds (None if it never comes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.5)
    return None


def front_stats(stack: LocalStack) -> dict[str, int]:
    stats: dict[str, int] = requests.get(
        f"{stack.endpoints['functions']['extract_progress']}/__front/stats", timeout=5
    ).json()
    return stats


def assert_history_is_the_scenario(stack: LocalStack) -> None:
    expected = expected_rows(load(stack.scenario_path), 0, set())
    assert history(services_here()) == expected  # history() also fails on a duplicated row


@pytest.mark.parametrize(
    ("concurrency", "lanes_on"),
    [(2, True), (1, False)],
    ids=["one-instance-of-2", "one-instance-of-1-without-lanes"],
)
def test_eight_tags_through_a_busy_instance_lose_no_delivery(tmp_path: Path, concurrency: int, lanes_on: bool) -> None:
    """Pieces hold their slot for seconds, and the front's queue timeout (scaled down from Cloud Run's ~10 s) is
    shorter than a piece: a task that finds no free slot is refused with 429 and spends a delivery attempt.
    With lanes, no task ever waits. Without them (every tag published at once) deliveries are refused: the
    Pub/Sub emulator pushes at most two messages at a time (the cloud, many more), so that control runs on one
    slot."""
    env = {} if lanes_on else {"EXTRACTION_LANES": "8"}
    stack = start(
        tmp_path,
        many_tags(8, 12, 30),
        piece_budget_s=2.0,
        progress_instances=1,
        progress_concurrency=concurrency,
        front_queue_s=0.5,
        ack_deadline_s=60,
        extra_env=env,
    )
    try:
        run_id = stack.trigger(date.fromisoformat(WEEK))
        if not lanes_on:  # the control: deliveries refused, the behaviour lanes prevent; seen once, it is shown
            assert wait_for(lambda: front_stats(stack)["refused"] > 0, timeout=240), front_stats(stack)
            return
        row = stack.wait_run(run_id, timeout=300)
        stats = front_stats(stack)
        assert row["status"] == "succeeded" and row["tags_done"] == 8
        assert stats["max_in_flight"] <= concurrency and stats["refused"] == 0, stats
        assert stack.dead_letters() == []
        assert_history_is_the_scenario(stack)
    finally:
        stack.stop()


def slack_register(stack: LocalStack, tag_id: int) -> requests.Response:
    return slash_command(stack, f"adicionar {tag_id} trilha 2026-04 {WEEK}")


@pytest.mark.parametrize("budget", ["gcs", "process"])
def test_two_instances_with_duplicate_deliveries_hold_the_school_budget(tmp_path: Path, budget: str) -> None:
    """Two processes of extract_progress, every message delivered twice, and a registration in Slack during
    the run: the fleet-wide budget keeps Cademi's counter of breaches at zero; switched off (a limiter per
    process), the same run breaches, so this test can fail."""
    env = {"CADEMI_FLEET_BUDGET": budget, "CADEMI_RATE_SAFETY": "0.1"}  # loopback jitter on a loaded machine
    stack = start(
        tmp_path, many_tags(4, 6, 8), piece_budget_s=3.0, progress_instances=2, progress_concurrency=2, extra_env=env
    )
    try:
        stack.duplicate_deliveries(True)
        admin = stack.admin()
        admin.reset()
        run_id = stack.trigger(date.fromisoformat(WEEK))
        time.sleep(3)
        answer = slack_register(stack, 5999)
        assert answer.status_code == 200
        if budget == "process":  # the control: a limiter per process breaches; seen once, the point is made
            breached = wait_for(lambda: admin.counters().get("breaches", 0) > 0, timeout=120)
            assert breached, admin.counters()  # two limiters, twice the school's rate
            return
        assert "5999" in answer.json()["text"], answer.text
        row = stack.wait_run(run_id, timeout=300)
        assert row["status"] == "succeeded" and row["tags_done"] == 4
        counters = admin.counters()
        assert counters.get("tag", 0) >= 1  # the registration checked the tag with Cademi, within the budget
        assert counters.get("breaches", 0) == 0, counters
        assert row["rate_limited"] == 0
        assert_history_is_the_scenario(stack)
    finally:
        stack.stop()
