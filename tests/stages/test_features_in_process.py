"""The tutors' digest and the erasure, in process (world.py), on the schools of their stack tests (carrying:
test_carrying.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from progress_monitor.contracts.messages import DigestTask
from progress_monitor.contracts.values import RunId
from progress_monitor.privacy import erasure
from tests import test_privacy, test_tutors
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


def test_an_erasure_leaves_no_trace_and_no_class_figure_changed(make_world: Callable[..., World]) -> None:
    world = make_world(test_privacy.school())
    world.run_week(0)
    world.run_week(1)
    figures = "SELECT * FROM `${report_class_week}` ORDER BY snapshot_date, tag_id"
    before = world.rows(figures)
    outcome = erasure.erase(world.svc, test_privacy.VICTIM, "LGPD-1", "dpo@escola.example")
    assert outcome.state == "erased"
    world.finalize()  # the rewritten shards are loaded again
    stored: list[Any] = []
    for name in world.svc.bigquery.list_tables(f"{world.cfg.gcp_project}.{world.cfg.bq_dataset}"):
        stored += world.rows("SELECT * FROM `${t}`", sql_vars={"t": f"{name.full_table_id}".replace(":", ".")})
    stored += world.rows("SELECT * FROM `${students}`")
    assert mentions(stored, {test_privacy.VICTIM}, test_privacy.TEXT_TRACES) == []
    assert world.rows(figures) == before
