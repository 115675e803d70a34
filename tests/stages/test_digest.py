"""The tutors' digest in process (world.py), on the school of its stack test (tests/test_tutors.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from progress_monitor.contracts.messages import ClickTask, DigestTask
from progress_monitor.contracts.values import RunId
from progress_monitor.tutors.blocks import parse_button_value
from tests import test_tutors
from tests.stages.world import World
from tests.traces import mentions


def digests(world: World) -> dict[str, dict[str, Any]]:
    """The stand-in's messages by channel (one each, or the test fails)."""
    found = list(world.slack.messages.values())
    by_channel = {m["channel"]: m for m in found}
    assert len(by_channel) == len(found), "two messages for one channel"
    return by_channel


def test_one_digest_per_channel_and_a_repeated_request_posts_nothing(make_world: Callable[..., World]) -> None:
    world = make_world(test_tutors.tutors_world())
    world.run_week(1)
    posted = digests(world)
    assert set(posted) == {test_tutors.CHANNEL_A, test_tutors.CHANNEL_T1}
    world.publish(DigestTask(RunId(world.scenario.weeks[1])))
    world.publish(DigestTask(RunId(world.scenario.weeks[1])))
    world.deliver()
    assert {c: m["versions"] for c, m in digests(world).items()} == {c: 1 for c in posted}


def test_the_job_history_keeps_no_students_id_from_the_digests_and_the_clicks(make_world: Callable[..., World]) -> None:
    """BigQuery keeps every job's SQL and parameters for about 180 days, for whoever may list the project's jobs.
    A digest's record and a tutor's click name students; their ids must not sit there beside `posted_at` or
    `acted_at`, which an erasure leaves as they are (the history would match an id to its pseudonym). So no job
    of a week's run, its digests and a click carries a student's id as a parameter (docs/privacy.md)."""
    world = make_world(test_tutors.tutors_world())
    students = set(world.scenario.users_by_id)
    world.run_week(1)
    message = next(m for m in world.slack.messages.values() if m["channel"] == test_tutors.CHANNEL_A)
    buttons = [
        parse_button_value(e.get("value"))
        for b in message["blocks"]
        if b.get("type") == "actions"
        for e in b["elements"]
    ]
    week, tag, user = next(v for v in buttons if v is not None)
    world.publish(ClickTask(week, tag, user, "contatado", "slack:U0TUTOR", test_tutors.CHANNEL_A, message["ts"]))
    world.deliver()
    assert world.rows("SELECT user_id, tutor FROM `${tutor_actions}`") == [{"user_id": user, "tutor": "slack:U0TUTOR"}]
    channel = test_tutors.CHANNEL_A
    [record] = world.rows("SELECT students_listed FROM `${slack_digests}` WHERE channel_id = @c", c=channel)
    assert str(user) in record["students_listed"].split(",")
    jobs = world.jobs.new()
    staged = {j.target.rsplit("_", 1)[0] for j in jobs if j.kind == "load" and j.target.startswith("_staging_")}
    assert staged >= {"_staging_tutor_actions", "_staging_slack_digests"}  # the records' loads are seen too
    assert [(j.sql[:80], j.parameters) for j in jobs if mentions(j.values(), students)] == []
