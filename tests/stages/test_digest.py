"""The tutors' digest in process (world.py), on the school of its stack test (tests/test_tutors.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from progress_monitor.contracts.messages import DigestTask
from progress_monitor.contracts.values import RunId
from tests import test_tutors
from tests.stages.world import World


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
