"""What the history keeps across weeks, in process (world.py), on the pipeline tests' school
(tests/pipeline_world.py): a failing student recorded as failed, a class change and a dropout, a lost history
replayed from the shards, one tag's week re-extracted, a run whose messages were lost resumed, and stale data
flagged. (The deliveries, kills, bursts and poison messages stay on the stack: tests/test_pipeline.py.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, timedelta

import pytest

from progress_monitor.commands.replay import reextract, replay_history
from progress_monitor.contracts.objects import contacts_name
from progress_monitor.contracts.values import RunId
from progress_monitor.pipeline import lanes, runs
from progress_monitor.platform import warehouse
from progress_monitor.privacy import tables as privacy_tables
from progress_monitor.stages import daily
from progress_monitor.stages.daily import check_data_age, resume_run
from tests.pipeline_world import ALWAYS_FAILING, BIG_TAG, DROPOUT, MOVER, OTHER_TAG, SMALL_TAG, WEEKS, world
from tests.stages.world import Servers, World, world_of
from tests.truth import count_rows, differences, history

FAILING = {ALWAYS_FAILING}


@pytest.fixture(scope="module")
def school(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The pipeline school with its first four weeks run."""
    # One piece per tag: continuation pieces are the stack's to show (tests/test_pipeline.py); 40 students over
    # three pages of 15 (a full page of 150 is the stack's too).
    school_of_40 = world(big=40, per_page=15)
    with world_of(servers, tmp_path_factory.mktemp("history"), school_of_40, CADEMI_MAX_ATTEMPTS="3") as school:
        for week in range(4):
            school.run_week(week)
        yield school


def assert_history_equals_truth(school: World, week_index: int) -> None:
    assert differences(school.svc, school.scenario, week_index, FAILING) == ([], [], [])


def test_every_week_equals_the_truth_and_a_failing_student_is_failed_not_zero(school: World) -> None:
    for week in range(4):
        assert_history_equals_truth(school, week)
    row = history(school.svc, WEEKS[0])[(WEEKS[0], SMALL_TAG, *ALWAYS_FAILING)]
    assert row == ("failed", None, None, None)


def test_a_class_change_and_a_dropout_are_visible_in_the_history(school: World) -> None:
    week0, week1 = history(school.svc, WEEKS[0]), history(school.svc, WEEKS[1])
    tags_of = {w: {k[1] for k in rows if k[2] == MOVER} for w, rows in ((0, week0), (1, week1))}
    assert tags_of == {0: {SMALL_TAG}, 1: {OTHER_TAG}}
    assert any(k[2] == DROPOUT for k in week0) and not any(k[2] == DROPOUT for k in week1)


def test_replay_rebuilds_a_lost_history_idempotently(school: World) -> None:
    first, last = date.fromisoformat(WEEKS[1]), date.fromisoformat(WEEKS[2])
    school.rows("DELETE FROM `${progress_history}` WHERE snapshot_date BETWEEN @a AND @b", a=first, b=last)
    assert count_rows(school.svc, WEEKS[1]) == 0
    summary = replay_history(school.svc, first, last)
    assert summary.weeks == 2 and summary.shards > 4
    assert_history_equals_truth(school, 1)
    assert_history_equals_truth(school, 2)

    def counts() -> tuple[int, int, int]:
        ledger = school.rows("SELECT COUNT(*) AS n FROM `${loads}`")[0]["n"]
        return count_rows(school.svc, WEEKS[1]), count_rows(school.svc, WEEKS[2]), ledger

    before = counts()
    assert replay_history(school.svc, first, last).weeks == 2
    assert counts() == before  # replaying twice changes nothing


def test_reextracting_one_tag_of_one_week(school: World) -> None:
    school.week(3)
    run_id = reextract(school.svc, date.fromisoformat(WEEKS[3]), SMALL_TAG, "fix1")
    assert run_id == RunId(date.fromisoformat(WEEKS[3]), "fix1")
    while school.deliver() or school.finalize():
        pass
    [row] = school.rows("SELECT * FROM `${runs}` WHERE run_id = @r", r=str(run_id))
    # The small class alone: its always-failing pair is 1 of 18 records, over the 5 % a run may fail.
    assert row["status"] == "incomplete" and row["tags_total"] == 1 and row["failed_extractions"] == 1
    assert_history_equals_truth(school, 3)
    by_run = school.rows(
        "SELECT DISTINCT tag_id, run_id FROM `${progress_history}` WHERE snapshot_date = @d",
        d=date.fromisoformat(WEEKS[3]),
    )
    runs_of = {tag: {r["run_id"] for r in by_run if r["tag_id"] == tag} for tag in (BIG_TAG, SMALL_TAG, OTHER_TAG)}
    assert runs_of[SMALL_TAG] == {str(run_id)}
    assert str(run_id) not in runs_of[BIG_TAG] | runs_of[OTHER_TAG]


def test_the_daily_health_check_flags_data_older_than_8_days(school: World, caplog: pytest.LogCaptureFixture) -> None:
    [loaded] = school.rows("SELECT MAX(loaded_at) AS t FROM `${progress_history}`")
    fresh = check_data_age(replace(school.svc, clock=lambda: loaded["t"] + timedelta(hours=1)))
    assert fresh is not None and fresh < 2 and "stale" not in caplog.text
    stale = check_data_age(replace(school.svc, clock=lambda: loaded["t"] + timedelta(days=9)))
    assert stale is not None and stale > 8 and "progress data is stale" in caplog.text


def test_a_run_whose_messages_were_lost_is_resumed(school: World) -> None:
    run_id = RunId(date.fromisoformat(WEEKS[3]), "lost")
    # A run recorded and fanned out whose per-tag messages never arrived (e.g. dead-lettered): its tags are
    # frozen, no lane has claimed any of them.
    svc = school.svc
    lanes.write_manifest(svc.state, run_id, warehouse.active_tags(svc))
    runs.start_run(svc, run_id, 3)
    runs.mark_fanned_out(svc, run_id)
    school.week(3)
    assert sorted(resume_run(svc, run_id)) == [f"tag {t} piece 0" for t in (BIG_TAG, SMALL_TAG, OTHER_TAG)]
    while school.deliver() or school.finalize():
        pass
    [row] = school.rows("SELECT * FROM `${runs}` WHERE run_id = @r", r=str(run_id))
    assert row["status"] == "succeeded" and row["tags_done"] == 3
    assert_history_equals_truth(school, 3)
    assert resume_run(svc, run_id) == []  # a finished run needs nothing


def test_a_run_that_can_never_finish_is_closed_with_a_reason_and_no_longer_waited_for(school: World) -> None:
    """Issue 30 findings 3 and 7: a run that can never finish (its tag messages lost; a week gone by) blocks the
    erasures until the operator closes it, with a reason run health shows; the resume never re-extracts a past
    week (Cademi would serve today's progress under it); a later refresh does not reopen a closed run."""
    svc = school.svc
    run_id = RunId(date.fromisoformat(WEEKS[3]), "stuck")
    lanes.write_manifest(svc.state, run_id, warehouse.active_tags(svc))
    runs.start_run(svc, run_id, 3)
    runs.mark_fanned_out(svc, run_id)
    assert str(run_id) in privacy_tables.unfinished_runs(svc)  # the simulator serves any week: it can progress

    # Against the real Cademi, a week later: nothing is re-extracted, and the erasures no longer wait for it.
    real = replace(svc.cfg, cademi_base_url="https://escola.cademi.com.br/api/v1")
    next_week = replace(svc, cfg=real, clock=lambda: svc.now() + timedelta(days=7))
    sent = len(school.publisher.messages)
    assert resume_run(next_week, run_id) == [] and len(school.publisher.messages) == sent
    assert str(run_id) not in privacy_tables.unfinished_runs(next_week)

    assert runs.close_run(svc, run_id, "tag messages dead-lettered; week rebuilt by replay", "ana@escola") == "running"
    assert str(run_id) not in privacy_tables.unfinished_runs(svc)
    assert runs.close_run(svc, run_id, "again", "ana@escola") == runs.CLOSED  # already ended: unchanged
    runs.refresh_run(svc, run_id)  # a late load recomputes the counters, not the status
    [health] = school.rows(
        "SELECT status, closed_reason, closed_by FROM `${report_run_health}` WHERE run_id = @r", r=str(run_id)
    )
    assert health == {
        "status": runs.CLOSED,
        "closed_reason": "tag messages dead-lettered; week rebuilt by replay",
        "closed_by": "ana@escola",
    }
    assert resume_run(svc, run_id) == [] and len(school.publisher.messages) == sent
    assert runs.close_run(svc, RunId(date.fromisoformat(WEEKS[3]), "nosuch"), "x", "y") is None


def test_the_daily_check_loads_an_object_of_a_finished_run_that_was_never_loaded(school: World) -> None:
    """Issue 31: no shard left behind. A contacts file of a finished run whose finalize event was lost (Eventarc
    drops a delivery after a day, with no dead letter) is loaded by the daily check, once."""
    svc = school.svc
    run_id = RunId(date.fromisoformat(WEEKS[3]))
    assert runs.run_status(svc, run_id) == "succeeded"
    student = 2004
    row = {"user_id": student, "nome": "Aluno 2004", "email": "novo.email@example.com", "celular": None}
    blob = svc.shards.blob(contacts_name(run_id, SMALL_TAG))
    blob.upload_from_string(json.dumps(row) + "\n", content_type="application/x-ndjson")
    school.loaded[blob.name] = int(svc.shards.get_blob(blob.name).generation)  # its finalize event is lost
    assert daily.reconcile_recent_runs(svc) == 1
    school.deliver()  # the shard-reloads topic's push to load_history
    [stored] = school.rows("SELECT email FROM `${students}` WHERE user_id = @u", u=student)
    assert stored == {"email": "novo.email@example.com"}
    assert svc.shards.get_blob(blob.name) is None  # merged, then deleted
    assert daily.reconcile_recent_runs(svc) == 0
    assert reconciled(school, run_id) == 1  # run health counts it once


def reconciled(school: World, run_id: RunId) -> int:
    [health] = school.rows("SELECT reconciled FROM `${report_run_health}` WHERE run_id = @r", r=str(run_id))
    return int(health["reconciled"])


def test_the_daily_check_loads_shards_missing_from_the_ledger_and_run_health_counts_them(school: World) -> None:
    """Issue 31 item 4: every object in the bucket is in the loads ledger, or the daily check sends it to the
    loader again; run health (report_run_health.reconciled) shows how many."""
    svc = school.svc
    run_id = RunId(date.fromisoformat(WEEKS[2]))
    assert runs.run_status(svc, run_id) == "succeeded" and reconciled(school, run_id) == 0
    week = {"d": run_id.snapshot_date, "t": SMALL_TAG}
    history_sql = (
        "SELECT user_id, product_id, status, total, assistidas, completas, error, run_id, shard "
        "FROM `${progress_history}` WHERE snapshot_date = @d AND tag_id = @t ORDER BY user_id, product_id"
    )
    kept = school.rows(history_sql, **week)
    shards = school.rows("SELECT shard FROM `${loads}` WHERE run_id = @r AND tag_id = @t", r=str(run_id), t=SMALL_TAG)
    assert kept and shards
    # The tag's load events were lost: nothing of it in the ledger, nor in the history.
    school.rows("DELETE FROM `${loads}` WHERE run_id = @r AND tag_id = @t", r=str(run_id), t=SMALL_TAG)
    school.rows("DELETE FROM `${progress_history}` WHERE snapshot_date = @d AND tag_id = @t", **week)
    assert daily.reconcile_recent_runs(svc) == len(shards)
    school.deliver()  # the shard-reloads topic's push to load_history
    assert school.rows(history_sql, **week) == kept  # loaded again, from the same shards
    assert reconciled(school, run_id) == len(shards)
    assert daily.reconcile_recent_runs(svc) == 0 and reconciled(school, run_id) == len(shards)
