"""The three stages in process (world.py): what a weekly run records, and what a duplicate delivery, a
redelivered task or a repeated finalize event must not change."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from cademi_sim.truth import expected_rows
from progress_monitor.contracts.messages import ProgressTask, ScheduleRequest
from tests.scenarios import school
from tests.stages.world import World


def history(world: World, week: date) -> dict[tuple[int, int], tuple[Any, ...]]:
    found = world.rows("SELECT * FROM `${progress_history}` WHERE snapshot_date = @d", d=week)
    return {(r["user_id"], r["product_id"]): (r["status"], r["total"], r["assistidas"], r["completas"]) for r in found}


def truth(world: World, week: int) -> dict[tuple[int, int], tuple[Any, ...]]:
    return {(user, product): row for (_, _, user, product), row in expected_rows(world.scenario, week).items()}


def test_two_weekly_runs_record_exactly_what_the_api_served(make_world: Callable[..., World]) -> None:
    world = make_world(school(n_students=4))
    for week in (0, 1):
        world.run_week(week)
        assert history(world, world.scenario.weeks[week]) == truth(world, week)
    run = world.rows("SELECT status, records_loaded FROM `${runs}` WHERE run_id = @r", r="2026-03-09")
    assert run == [{"status": "succeeded", "records_loaded": 8}]


def test_duplicate_deliveries_change_nothing(make_world: Callable[..., World]) -> None:
    """The schedule delivered twice makes one run; a progress task redelivered writes no second shard; a
    finalize event repeated loads nothing twice."""
    world = make_world(school(n_students=3))
    world.week(0)
    world.publish(ScheduleRequest(week=world.scenario.weeks[0]))
    world.publish(ScheduleRequest(week=world.scenario.weeks[0]))
    world.deliver(skip=lambda m: m.topic == world.cfg.progress_topic)
    assert len(world.sent(ProgressTask)) == 1  # the second schedule found the run already fanned out
    task = world.publisher.messages[-1]
    world.publisher.messages.append(task)  # its first delivery (held back above)
    world.deliver()
    shards = [b.name for b in world.svc.shards.list_blobs(prefix="progress/")]
    world.publisher.messages.append(task)  # Pub/Sub redelivers the same task
    world.deliver()
    assert [b.name for b in world.svc.shards.list_blobs(prefix="progress/")] == shards
    world.finalize()
    first = history(world, world.scenario.weeks[0])
    world.loaded.clear()  # every finalize event again
    world.finalize()
    assert history(world, world.scenario.weeks[0]) == first == truth(world, 0)
    count = world.rows("SELECT COUNT(*) AS n FROM `${progress_history}`")[0]["n"]
    assert count == len(first)
