"""The three stages in process (world.py): what a weekly run records, and what a duplicate delivery, a
redelivered task or a repeated finalize event must not change."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import fields, replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from functions_framework import create_app

from cademi_sim.truth import expected_rows
from progress_monitor.cademi.budget import FleetBudget
from progress_monitor.contracts.messages import ProgressTask, ScheduleRequest
from progress_monitor.contracts.objects import SHARDS, STATE, bucket_of, parse_contacts, parse_progress_shard
from progress_monitor.settings import Settings
from tests import test_tutors
from tests.scenarios import school
from tests.stages.world import World

ROOT = Path(__file__).resolve().parents[2]


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


def test_finalize_events_in_both_shapes_through_the_adapter_add_no_rows(
    make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch
) -> None:
    """load_history as deployed (functions-framework's test client on functions/load_history/main.py, its
    Services built from the environment): fake-gcs-server's Pub/Sub notification twice, then Eventarc's
    CloudEvent, for a shard already loaded; nothing is merged again and the loads ledger keeps one row."""
    world = make_world(school(n_students=3))
    world.run_week(0)
    week = world.scenario.weeks[0]
    before = history(world, week)
    [shard] = [b for b in world.svc.shards.list_blobs(prefix="progress/")]
    for field in fields(Settings):  # nothing another test left in this process reaches the adapter
        monkeypatch.delenv(field.name.upper(), raising=False)
    for name, value in world.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:9")  # a finished run's reload publishes nothing
    adapter = ROOT / "functions" / "load_history" / "main.py"
    client = create_app("load_history", str(adapter), "cloudevent").test_client()
    bucket = world.cfg.shards_bucket
    notification = {  # fake-gcs-server's Pub/Sub notification, as a push subscription delivers it
        "message": {
            "data": base64.b64encode(json.dumps({"name": shard.name, "bucket": bucket}).encode()).decode(),
            "attributes": {
                "eventType": "OBJECT_FINALIZE",
                "bucketId": bucket,
                "objectId": shard.name,
                "objectGeneration": str(shard.generation),
                "payloadFormat": "JSON_API_V1",
            },
            "messageId": "dup-1",
            "publishTime": "2026-03-02T12:00:00Z",
        },
        "subscription": "projects/local-project/subscriptions/load_history-push",
    }
    for _ in range(2):
        assert client.post("/projects/local-project/topics/shard-events", json=notification).status_code == 200
    eventarc = {"bucket": bucket, "name": shard.name, "generation": str(shard.generation)}
    headers = {
        "ce-id": "dup-2",
        "ce-specversion": "1.0",
        "ce-source": f"//storage.googleapis.com/projects/_/buckets/{bucket}",
        "ce-type": "google.cloud.storage.object.v1.finalized",
        "Content-Type": "application/json",
    }
    assert client.post("/", json=eventarc, headers=headers).status_code == 200
    assert history(world, week) == before == truth(world, 0)
    ledger = world.rows("SELECT COUNT(*) AS n FROM `${loads}` WHERE shard = @s", s=shard.name)
    assert ledger == [{"n": 1}]


def test_only_loadable_objects_reach_the_loader_and_the_run_state_lives_in_its_own_bucket(
    make_world: Callable[..., World],
) -> None:
    """load_history's trigger fires for every object finalized in the shards bucket (issue 31): two weekly runs
    with carrying on, digests posted and the school-wide budget held in Cloud Storage write every kind of run
    state (rosters, lanes, carry plans, digest claims, the budget object) to the state bucket, and the shards
    bucket receives nothing but progress shards and contacts files, each of which the loader loads."""
    world = make_world(test_tutors.tutors_world(), incremental="on")
    world.svc = replace(world.svc, cademi_budget=FleetBudget(world.svc.state, 0.001, 0.05))
    finalized: list[str] = []
    finalize = world.finalize

    def recording(prefix: str = "") -> list[str]:
        done = finalize(prefix)
        finalized.extend(done)
        return done

    world.finalize = recording  # type: ignore[method-assign]
    for week in (0, 1):
        world.run_week(week)

    def kinds(names: list[str]) -> set[str]:
        return {name.split("/", 1)[0] + "/" for name in names}

    shards = [b.name for b in world.svc.shards.list_blobs()]
    state = [b.name for b in world.svc.state.list_blobs()]
    assert kinds(finalized) == {"progress/", "contacts/"}
    assert [n for n in finalized if not (parse_progress_shard(n) or parse_contacts(n))] == []
    assert kinds(shards) == {"progress/"}  # the contacts files were merged, then deleted
    assert kinds(state) == {"rosters/", "lanes/", "carry/", "slack/", "budget/"}
    assert {bucket_of(n) for n in shards + finalized} == {SHARDS}
    assert {bucket_of(n) for n in state} == {STATE}
    ledger = {r["shard"] for r in world.rows("SELECT shard FROM `${loads}` WHERE STARTS_WITH(shard, 'progress/')")}
    assert ledger == {n for n in finalized if n.startswith("progress/")} == set(shards)
