"""The messages, object names, metadata and events the stages exchange: round trips and refusals."""

from __future__ import annotations

import base64
import json
from datetime import date
from typing import Any

import pytest
from cloudevents.http import CloudEvent

from progress_monitor.contracts.events import ObjectRef, event_as_message, pubsub_message, storage_object
from progress_monitor.contracts.messages import ProgressTask
from progress_monitor.contracts.objects import (
    BUDGET_OBJECT,
    CARRY_OFF_OBJECT,
    ERASURES_KEYCHECK,
    SHARDS,
    STATE,
    ShardMeta,
    ShardName,
    bucket_of,
    carry_plan_name,
    contacts_name,
    digest_claim_name,
    erasure_name,
    lane_claim_name,
    lane_manifest_name,
    lane_published_name,
    lanes_prefix,
    parse_contacts,
    parse_progress_shard,
    progress_shard_name,
    roster_name,
)
from progress_monitor.contracts.values import RunId, parse_uint
from progress_monitor.errors import PermanentError

MONDAY = date(2026, 9, 7)


# -- RunId -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["2026-09-07", "2026-09-07-again", "2026-09-07-a", "2026-09-07-" + "x" * 20])
def test_run_ids_round_trip(text: str) -> None:
    assert str(RunId.parse(text)) == text


def test_a_run_id_holds_its_week_and_label() -> None:
    assert RunId.parse("2026-09-07-fix1") == RunId(MONDAY, "fix1")
    assert RunId.parse("2026-09-07").label is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2026-09-08",  # a Tuesday: runs are named by their week's Monday
        "2026-13-07",
        "2026-09-07-",
        "2026-09-07-Again",
        "2026-09-07--x",
        "2026-09-07-" + "x" * 21,
        "2026-09-07/../x",
        "garbage",
        None,
        20260907,
    ],
)
def test_malformed_run_ids_are_refused(text: object) -> None:
    with pytest.raises(ValueError):
        RunId.parse(text)
    assert RunId.parse_or_none(text) is None


# -- ProgressTask ----------------------------------------------------------------------------------------


def test_a_progress_task_round_trips_through_its_message() -> None:
    task = ProgressTask(RunId(MONDAY, "again"), 7001, (101, 102), piece=3, start_index=42)
    assert ProgressTask.from_json(json.loads(task.encode())) == task
    assert task.attributes() == {"run_id": "2026-09-07-again", "tag_id": "7001", "piece": "3"}


def test_the_next_task_continues_the_same_tag_one_piece_later() -> None:
    task = ProgressTask(RunId(MONDAY), 7001, (101, 102), piece=3, start_index=42)
    assert task.next(50) == ProgressTask(RunId(MONDAY), 7001, (101, 102), piece=4, start_index=50)


def test_a_task_published_before_the_rename_is_read_from_its_next_index() -> None:
    raw = {"run_id": "2026-09-07", "tag_id": 7001, "product_ids": [101], "piece": 2, "next_index": 42}
    assert ProgressTask.from_json(raw).start_index == 42


def test_a_piece_zero_task_may_omit_piece_and_start_index() -> None:
    raw = {"run_id": "2026-09-07", "snapshot_date": "2026-09-07", "tag_id": 7001, "product_ids": [101]}
    assert ProgressTask.from_json(raw) == ProgressTask(RunId(MONDAY), 7001, (101,))


GOOD = {"run_id": "2026-09-07", "snapshot_date": "2026-09-07", "tag_id": 7001, "product_ids": [101], "piece": 0}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"run_id": "garbage"}, "run_id"),
        ({"run_id": None}, "run_id"),
        ({"snapshot_date": "2026-09-14"}, "snapshot_date"),
        ({"tag_id": -4}, "tag_id"),
        ({"tag_id": "7001"}, "tag_id"),
        ({"tag_id": True}, "tag_id"),
        ({"product_ids": []}, "product_ids"),
        ({"product_ids": "101"}, "product_ids"),
        ({"product_ids": [101, 101]}, "product_ids"),
        ({"product_ids": [0]}, "product_ids"),
        ({"product_ids": list(range(1, 102))}, "product_ids"),
        ({"piece": 10000}, "piece"),
        ({"start_index": -1}, "start_index"),
        ({"start_index": 1.5}, "start_index"),
        ({"start_index": " 205\n"}, "start_index"),
        ({"next_index": -1}, "next_index"),  # the name tasks published before the rename carry
    ],
)
def test_a_malformed_task_is_refused_by_name(change: dict[str, Any], field: str) -> None:
    with pytest.raises(PermanentError, match=field):
        ProgressTask.from_json({**GOOD, **change})


# -- ShardMeta -------------------------------------------------------------------------------------------

TASK = ProgressTask(RunId(MONDAY, "again"), 7001, (101, 102), piece=2, start_index=10)
NAME = ShardName(TASK.run_id, TASK.tag_id, TASK.piece)


@pytest.mark.parametrize("next_index", [None, 25])
def test_shard_metadata_round_trips_through_string_values(next_index: int | None) -> None:
    meta = ShardMeta(
        TASK, records=30, failed=1, no_access=2, students=15, api_calls=33, rate_limited=0, next_index=next_index
    )
    stored = meta.to_metadata()
    assert all(isinstance(v, str) for v in stored.values())
    back = ShardMeta.from_metadata(stored, NAME)
    assert back == meta and back.last_piece == (next_index is None)
    assert back.counts()["api_calls"] == 33


@pytest.mark.parametrize(
    "change",
    [
        {"records": ""},
        {"failed": "-1"},
        {"api_calls": "1e3"},
        {"last_piece": "maybe"},
        {"last_piece": "false"},  # not the last piece, yet no next_index
        {"piece": "3"},  # says another piece than its name
        {"run_id": "2026-09-07"},
        {"product_ids": "101,x"},
    ],
)
def test_malformed_shard_metadata_is_refused(change: dict[str, str]) -> None:
    stored = {**ShardMeta(TASK, 30, 1, 2, 15, 33, 0, None).to_metadata(), **change}
    with pytest.raises(PermanentError, match=r"shard metadata|task field"):
        ShardMeta.from_metadata(stored, NAME)


def test_missing_shard_metadata_is_refused() -> None:
    with pytest.raises(PermanentError):
        ShardMeta.from_metadata(None, NAME)


# -- object names ----------------------------------------------------------------------------------------


def test_object_names_are_deterministic_and_parse_back() -> None:
    name = progress_shard_name(TASK)
    assert name == "progress/snapshot_date=2026-09-07/run=2026-09-07-again/tag=7001/piece=0002.ndjson"
    assert parse_progress_shard(name) == NAME
    assert roster_name(TASK.run_id, 7001) == "rosters/snapshot_date=2026-09-07/run=2026-09-07-again/tag=7001.json"
    contacts = contacts_name(TASK.run_id, 7001)
    assert parse_contacts(contacts) == ShardName(TASK.run_id, 7001)
    assert parse_progress_shard(contacts) is None and parse_contacts(name) is None


def test_lane_objects_live_under_their_run_and_are_not_shards() -> None:
    run = RunId(MONDAY, "again")
    names = [lane_manifest_name(run), lane_claim_name(run, 7001), lane_published_name(run, 7001)]
    assert all(n.startswith(lanes_prefix(run)) for n in names)
    assert lanes_prefix(run) == "lanes/snapshot_date=2026-09-07/run=2026-09-07-again/"
    assert lanes_prefix(RunId(MONDAY)) not in lanes_prefix(run)  # another run of the week is another prefix
    assert not any(parse_progress_shard(n) or parse_contacts(n) for n in names)


def test_the_shards_bucket_holds_the_loadable_objects_and_the_state_bucket_every_other() -> None:
    """load_history's trigger fires for every object finalized in the shards bucket: only what it loads is there."""
    run = RunId(MONDAY, "again")
    loadable = [progress_shard_name(TASK), contacts_name(run, 7001)]
    state = [
        roster_name(run, 7001),
        lane_manifest_name(run),
        lane_claim_name(run, 7001),
        lane_published_name(run, 7001),
        BUDGET_OBJECT,
        carry_plan_name(run, 7001),
        CARRY_OFF_OBJECT,
        digest_claim_name(MONDAY, "C0TUTORS"),
        erasure_name("0" * 64),
        ERASURES_KEYCHECK,
    ]
    assert [bucket_of(n) for n in loadable] == [SHARDS, SHARDS]
    assert all(parse_progress_shard(n) or parse_contacts(n) for n in loadable)
    assert [bucket_of(n) for n in state] == [STATE] * len(state)
    with pytest.raises(ValueError, match="no bucket"):
        bucket_of("exports/x.json")


@pytest.mark.parametrize(
    "name",
    [
        "rosters/snapshot_date=2026-09-07/run=2026-09-07/tag=7001.json",
        "progress/snapshot_date=2026-09-14/run=2026-09-07/tag=7001/piece=0000.ndjson",  # run of another week
        "progress/snapshot_date=2026-09-07/run=2026-09-07-BAD/tag=7001/piece=0000.ndjson",
        "progress/snapshot_date=2026-09-07/run=2026-09-07/tag=7001/piece=0.ndjson",
        "progress/snapshot_date=2026-09-07/run=2026-09-07/tag=7001/piece=0000.ndjson.tmp",
        "progress/snapshot_date=2026-09-08/run=2026-09-08/tag=7001/piece=0000.ndjson",  # not a Monday
        "../progress/snapshot_date=2026-09-07/run=2026-09-07/tag=7001/piece=0000.ndjson",
    ],
)
def test_other_objects_are_not_taken_for_shards(name: str) -> None:
    assert parse_progress_shard(name) is None


# -- events ----------------------------------------------------------------------------------------------


def pubsub_event(data: bytes | str, attributes: dict[str, str] | None = None) -> CloudEvent:
    encoded = data if isinstance(data, str) else base64.b64encode(data).decode()
    message = {
        "data": encoded,
        "attributes": attributes or {},
        "messageId": "m-1",
        "publishTime": "2026-09-07T12:00:00.123Z",
    }
    return CloudEvent(
        {"type": "google.cloud.pubsub.topic.v1.messagePublished", "source": "//pubsub"},
        {"message": message, "subscription": "projects/p/subscriptions/s"},
    )


def test_a_pubsub_push_is_decoded() -> None:
    message = pubsub_message(pubsub_event(b'{"week": "2026-09-07"}', {"run_id": "2026-09-07"}))
    assert message.json() == {"week": "2026-09-07"} and message.attributes == {"run_id": "2026-09-07"}
    assert message.message_id == "m-1" and message.publish_time is not None
    assert message.publish_time.isoformat() == "2026-09-07T12:00:00.123000+00:00"


def test_an_empty_message_body_is_an_empty_object() -> None:
    assert pubsub_message(pubsub_event(b"")).json() == {}


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (pubsub_event("not base64!!"), "base64"),
        (CloudEvent({"type": "t", "source": "s"}, {"nothing": 1}), "no Pub/Sub message"),
        (CloudEvent({"type": "t", "source": "s"}, "just text"), "not JSON"),
    ],
)
def test_malformed_pushes_are_refused_by_name(event: CloudEvent, reason: str) -> None:
    with pytest.raises(PermanentError, match=reason):
        pubsub_message(event)


@pytest.mark.parametrize(
    ("body", "reason"),
    [(b"\x00not json", "not JSON"), (b"[1, 2]", "not a JSON object"), (b" " * (64 * 1024 + 1), "larger")],
)
def test_malformed_message_bodies_are_refused_by_name(body: bytes, reason: str) -> None:
    with pytest.raises(PermanentError, match=reason):
        pubsub_message(pubsub_event(body)).json()


def test_both_finalize_event_shapes_give_the_same_object() -> None:
    eventarc = CloudEvent(
        {"type": "google.cloud.storage.object.v1.finalized", "source": "//storage"},
        {"bucket": "progress-shards", "name": "progress/x.ndjson", "generation": "1712"},
    )
    notification = pubsub_event(
        json.dumps({"name": "progress/x.ndjson"}).encode(),
        {
            "eventType": "OBJECT_FINALIZE",
            "bucketId": "progress-shards",
            "objectId": "progress/x.ndjson",
            "objectGeneration": "1712",
        },
    )
    expected = ObjectRef("progress-shards", "progress/x.ndjson", 1712)
    assert storage_object(eventarc) == expected and storage_object(notification) == expected


def test_other_storage_notifications_are_ignored() -> None:
    deleted = pubsub_event(b"{}", {"eventType": "OBJECT_DELETE", "bucketId": "b", "objectId": "o"})
    assert storage_object(deleted) is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"bucket": "b", "generation": "1"}, "bucket or object name"),
        ({"bucket": "", "name": "o", "generation": "1"}, "bucket or object name"),
        ({"bucket": "b", "name": "o", "generation": "-1"}, "generation"),
        ({"bucket": "b", "name": "o"}, "generation"),
        ([1, 2], "not an object"),
    ],
)
def test_malformed_finalize_events_are_refused_by_name(data: Any, reason: str) -> None:
    event = CloudEvent({"type": "google.cloud.storage.object.v1.finalized", "source": "//storage"}, data)
    with pytest.raises(PermanentError, match=reason):
        storage_object(event)


# -- strict parsers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["²", "٣", "３", "12\n", "", "-1", " 1", "1 ", "1_000", "0x10", "1" * 13, None, 7])
def test_parse_uint_refuses_anything_but_ascii_digits(text: Any) -> None:
    assert parse_uint(text) is None


def test_parse_uint_reads_ascii_digits_up_to_its_length() -> None:
    assert parse_uint("0") == 0 and parse_uint("007") == 7 and parse_uint("9" * 12) == 10**12 - 1
    assert parse_uint("1" * 20, max_digits=20) == int("1" * 20)


@pytest.mark.parametrize("text", ["2026-09-07\n", "2026-09-07-abc\n", "٢٠٢٦-09-07", "2026-09-07-Abc", " 2026-09-07"])
def test_run_ids_with_newlines_or_non_ascii_digits_are_refused(text: str) -> None:
    assert RunId.parse_or_none(text) is None


def test_a_shard_name_with_a_trailing_newline_is_not_a_shard() -> None:
    name = progress_shard_name(ProgressTask(RunId(date(2026, 9, 7)), 7001, (101,)))
    assert parse_progress_shard(name) is not None
    assert parse_progress_shard(name + "\n") is None


def test_an_undecodable_event_is_still_kept_for_the_dead_letter_topic() -> None:
    event = CloudEvent({"type": "t", "source": "//s/x", "id": "ev-1"}, "{not json")
    message = event_as_message(event)
    assert message.message_id == "ev-1" and message.data == b"{not json" and message.attributes == {}
