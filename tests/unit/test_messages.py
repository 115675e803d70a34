"""The message contracts: every body round-trips through its builder and parser, and a hostile value at any
field is a PermanentError naming that field (never a TypeError, a KeyError or a guess)."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, date, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from progress_monitor.contracts.messages import (
    CLICK_ACTIONS,
    ClassListTask,
    ClickTask,
    DigestTask,
    ProgressTask,
    ScheduleRequest,
    parse_slack_task,
)
from progress_monitor.contracts.objects import (
    digest_claim_name,
    lane_claim_name,
    lane_published_name,
    manifest_body,
    parse_lane_object,
    parse_manifest_body,
    parse_roster_body,
    roster_body,
)
from progress_monitor.contracts.values import RunId, Status
from progress_monitor.errors import PermanentError

MONDAY = date(2026, 10, 5)
CLICK = ClickTask(MONDAY, 5012, 205, "contatado", "slack:UTUTOR01", "CTUTORS01", "1712345678.000100")
LIST = ClassListTask(5012, "https://hooks.slack.com/commands/T1/2/x", "UCOORD01", "CTUTORS01")
# Values no field of ours accepts: wrong types, Unicode digits, whitespace, floats, booleans, huge or nested.
HOSTILE: list[Any] = [
    None,
    True,
    12.9,
    "",
    " 205\n",
    "٢٠٥",
    "２０５",
    "2026-10-05\n",
    "20261005",
    "2026-W41-1",
    [],
    ["contatado"],
    {"a": 1},
    "x" * 5000,
    -1,
    10**30,
    "slack:U1> <!channel",
]


def body(message: Any) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(message.encode())
    return decoded


@pytest.mark.parametrize("task", [DigestTask(RunId(MONDAY)), DigestTask(RunId(MONDAY, "fix-1")), CLICK, LIST])
def test_every_slack_task_round_trips_through_its_body(task: Any) -> None:
    assert parse_slack_task(body(task)) == task
    assert task.attributes()["kind"] == task.KIND


@pytest.mark.parametrize(("task", "field"), [(CLICK, f) for f in body(CLICK) if f != "kind"])
def test_a_hostile_value_in_any_click_field_is_refused_by_name(task: ClickTask, field: str) -> None:
    for value in HOSTILE:
        raw = {**body(task), field: value}
        if raw[field] == body(task)[field]:
            continue
        with pytest.raises(PermanentError, match=field):
            parse_slack_task(raw)


@pytest.mark.parametrize("field", ["tag_id", "response_url", "requester", "channel"])
def test_a_hostile_value_in_any_list_field_is_refused_by_name(field: str) -> None:
    for value in HOSTILE:
        if field == "response_url" and isinstance(value, str) and 0 < len(value) <= 2000:
            continue  # any text: the worker checks it is Slack's (settings), not the contract
        if field == "channel" and value == "":
            continue  # a direct message
        with pytest.raises(PermanentError, match=field):
            parse_slack_task({**body(LIST), field: value})


@pytest.mark.parametrize("run_id", ["2026-10-05\n", "2026-10-06", None, 20261005, "2026-W41-1", "２０２６-10-05"])
def test_a_digest_task_with_a_malformed_run_id_is_refused_by_name(run_id: Any) -> None:
    with pytest.raises(PermanentError, match="run_id"):
        parse_slack_task({"kind": "digest", "run_id": run_id})


@pytest.mark.parametrize("kind", ["digests", "", None, ["digest"], {"k": 1}, 7])
def test_an_unknown_slack_task_kind_is_refused(kind: Any) -> None:
    with pytest.raises(PermanentError, match="kind"):
        parse_slack_task({"kind": kind, "run_id": "2026-10-05"})


@given(
    week=st.dates(date(2020, 1, 1), date(2040, 12, 31)),
    tag=st.integers(1, 10**9 - 1),
    user=st.integers(1, 10**12),
    action=st.sampled_from(CLICK_ACTIONS),
    tutor=st.from_regex(r"[UW][A-Z0-9]{2,20}", fullmatch=True),
    channel=st.from_regex(r"[CG][A-Z0-9]{2,20}", fullmatch=True),
    ts=st.from_regex(r"[0-9]{9,12}\.[0-9]{1,9}", fullmatch=True),
)
@settings(max_examples=200, deadline=None)
def test_any_well_formed_click_round_trips(
    week: date, tag: int, user: int, action: str, tutor: str, channel: str, ts: str
) -> None:
    click = ClickTask(week, tag, user, action, f"slack:{tutor}", channel, ts)
    assert parse_slack_task(body(click)) == click


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "kind",
                "run_id",
                "week",
                "tag_id",
                "user_id",
                "action",
                "tutor",
                "channel",
                "message_ts",
                "response_url",
                "requester",
                "extra",
            ]
        ),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
            max_leaves=8,
        ),
    )
)
@settings(max_examples=300, deadline=None)
def test_any_json_object_is_a_task_or_a_permanent_error(raw: dict[str, Any]) -> None:
    """Whatever arrives on the topic: parsed, or refused as permanent (dead-lettered once), never a crash."""
    with contextlib.suppress(PermanentError):
        parse_slack_task(raw)


# -- the schedule and progress topics ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [
        ScheduleRequest(),
        ScheduleRequest(health_check=True),
        ScheduleRequest(week=date(2026, 10, 7), rerun="fix-1", tag_ids=frozenset({5012, 5013})),
    ],
)
def test_a_schedule_request_round_trips(request_: ScheduleRequest) -> None:
    assert ScheduleRequest.from_json(body(request_)) == request_


def test_the_run_of_a_schedule_request_is_its_weeks_monday_or_the_publish_times() -> None:
    published = datetime(2026, 10, 12, 11, 0, tzinfo=UTC)
    assert ScheduleRequest(week=date(2026, 10, 8)).run_id("America/Sao_Paulo", published) == RunId(MONDAY)
    assert ScheduleRequest(rerun="x").run_id("America/Sao_Paulo", published) == RunId(date(2026, 10, 12), "x")


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"week": "20261005"}, "week"),
        ({"week": "2026-W41-1"}, "week"),
        ({"week": 20261005}, "week"),
        ({"health_check": "yes"}, "health_check"),
        ({"tag_ids": [12.9]}, "tag_ids"),
        ({"tag_ids": [0]}, "tag_ids"),
    ],
)
def test_a_malformed_schedule_request_is_refused_by_name(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(PermanentError, match=field):
        ScheduleRequest.from_json(raw)


def test_a_progress_task_names_its_start_and_its_topic() -> None:
    task = ProgressTask(RunId(MONDAY), 5012, (101,), piece=1, start_index=40)
    assert body(task)["start_index"] == 40 and ProgressTask.TOPIC == "progress_topic"


# -- objects -------------------------------------------------------------------------------------------------


def test_lane_objects_parse_back_to_their_tag() -> None:
    run = RunId(MONDAY, "again")
    assert parse_lane_object(lane_claim_name(run, 5012)) == (5012, False)
    assert parse_lane_object(lane_published_name(run, 5012)) == (5012, True)
    assert parse_lane_object("lanes/snapshot_date=2026-10-05/run=2026-10-05/tags.json") is None


def test_roster_and_manifest_bodies_round_trip() -> None:
    moment = datetime(2026, 10, 4, 12, 0, tzinfo=UTC)
    assert parse_roster_body(roster_body((3, 1, 2), {1: moment})) == ((3, 1, 2), {1: moment})
    assert parse_manifest_body(manifest_body([(5012, (101, 102))])) == [(5012, (101, 102))]
    for bad in (b'{"user_ids": [1, 1]}', b'{"user_ids": [true]}', b'{"user_ids": ["1"]}', b"[]"):
        with pytest.raises(ValueError):
            parse_roster_body(bad)


def test_a_digest_claim_is_named_only_for_a_channel_id() -> None:
    assert digest_claim_name(MONDAY, "CTUTORS01") == "slack/digests/2026-10-05/CTUTORS01.json"
    with pytest.raises(PermanentError):
        digest_claim_name(MONDAY, "../../progress/x")


def test_statuses_rank_for_the_history_rule() -> None:
    assert sorted(Status, key=lambda s: s.rank) == [Status.FAILED, Status.NO_ACCESS, Status.OK]
    assert Status.sql_list() == "('ok', 'no_access', 'failed')"
