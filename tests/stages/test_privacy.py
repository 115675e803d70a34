"""LGPD, in process (world.py; issue 25): a school runs two weeks, one student is exported, then erased through an
interrupted first attempt; no table or object keeps their id, name, e-mail or phone; class-level figures are
unchanged; a third weekly run does not bring them back. One module-scoped scenario, a small school."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import fields, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.cloud import bigquery

from cademi_sim.builder import School
from progress_monitor.commands import privacy
from progress_monitor.contracts.messages import ClassListTask, ClickTask, DigestTask
from progress_monitor.contracts.objects import ERASURES_KEYCHECK, ERASURES_PREFIX, RAW_PREFIXES
from progress_monitor.contracts.values import RunId
from progress_monitor.pipeline import reporting
from progress_monitor.platform import warehouse
from progress_monitor.privacy import erasure, erasures, retention
from progress_monitor.privacy import tables as privacy_tables
from progress_monitor.settings import Settings
from progress_monitor.stages import daily
from progress_monitor.tutors import claims, digest, records
from progress_monitor.tutors.blocks import ClassWeek, ListedStudent, parse_button_value
from tests.stages.world import Servers, World, world_of
from tests.traces import mentions, parsed_file

pytestmark = pytest.mark.integration
WEEKS = ["2026-06-01", "2026-06-08", "2026-06-15"]
A, B = 6201, 6202
VICTIM = 7654321
NAME, EMAIL, PHONE = "Zuleica Quintanilha", "zuleica.lgpd@example.com", "+55 31 97777-4321"
TEXT_TRACES = (NAME, "Zuleica", EMAIL, "zuleica.lgpd", PHONE, "97777-4321", "977774321")
LATE = 6306  # far behind too: listed in the digest beside the victim
OTHERS = {A: [6301, 6302, 6303, 6304, 6305, LATE], B: [6401, 6402, 6403, 6404]}


LATE_TOTALS = {101: [0, 2, 4], 102: [0, 0, 0]}


def school() -> dict[str, Any]:
    school = School(WEEKS, api_key="privacy-key-test")
    school.product(101, "Curso 1")
    school.product(102, "Curso 2")
    school.track("t1", "Trilha 1", {101: 2, 102: 4})
    school.tag(A, "Turma A", track="t1", turma="2026-06", slack_channel="C0PRIV1")
    school.tag(B, "Turma B", track="t1", turma="2026-07", slack_channel="C0PRIV2")
    # Far behind: listed in the digest.
    school.student(
        VICTIM, A, nome=NAME, email=EMAIL, celular=PHONE, doc="111.222.333-44", totals={101: [0, 5, 10], 102: [0, 0, 0]}
    )
    for tag, ids in OTHERS.items():
        for k, uid in enumerate(ids):
            totals = {101: [10 * k, 40 + 5 * k, 80], 102: [0, 10, 20 + k]}
            school.student(uid, tag, email=f"a{uid}@example.com", totals=totals if uid != LATE else LATE_TOTALS)
    # The victim's product 102 never answers: their failed rows record Cademi's error (the path without them).
    school.fault(path=f"/usuario/progresso_por_produto/{VICTIM}/102", status=503, times=1_000_000)
    return school.build()


WORLD: list[World] = []  # the module's one world (the fixture below), for the helpers


def world_now() -> World:
    return WORLD[0]


def rows(sql: str, **params: Any) -> list[dict[str, Any]]:
    return warehouse.query(world_now().svc, sql, **params)


def run_week(world: World, index: int) -> None:
    world.run_week(index)
    [run] = world.rows("SELECT status FROM `${runs}` WHERE run_id = @r", r=WEEKS[index])
    assert run["status"] in ("succeeded", "incomplete")
    assert world.rows("SELECT channel_id FROM `${slack_digests}` WHERE run_id = @r", r=WEEKS[index])


def class_figures() -> list[dict[str, Any]]:
    return rows(
        """SELECT snapshot_date, tag_id, students, students_without_data, students_with_failed_extraction,
             ROUND(mean_actual, 6) AS mean_actual, ROUND(mean_expected, 6) AS mean_expected,
             ROUND(share_em_risco, 6) AS em_risco, ROUND(share_atrasado, 6) AS atrasado
           FROM `${report_class_week}` ORDER BY snapshot_date, tag_id"""
    )


def world_datasets(world: World) -> tuple[str, ...]:
    cfg = world.cfg
    return (cfg.bq_dataset, cfg.bq_restricted_dataset, cfg.bq_slack_dataset, cfg.bq_slack_staging_dataset)


def everything_stored(world: World) -> list[Any]:
    """Every row of every table and view of the world's datasets, and every file of its buckets, parsed."""
    client = world.svc.bigquery
    documents: list[Any] = []
    for dataset in world_datasets(world):
        for table in client.list_tables(f"{world.cfg.gcp_project}.{dataset}"):
            documents += world.rows("SELECT * FROM `${t}`", sql_vars={"t": f"{table.full_table_id}".replace(":", ".")})
    documents += [parsed_file(p.read_bytes()) for root in world.gcs_files for p in root.rglob("*") if p.is_file()]
    return documents


def traces_of_the_victim(documents: Any) -> list[str]:
    return mentions(documents, {VICTIM}, TEXT_TRACES)


def client_tables(world: World) -> list[str]:
    client = world.svc.bigquery
    return [t.table_id for d in world_datasets(world) for t in client.list_tables(f"{world.cfg.gcp_project}.{d}")]


@pytest.fixture(scope="module")
def world(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Two weeks of the school; the operator's command runs in this process with the world's environment."""
    with world_of(servers, tmp_path_factory.mktemp("privacy"), school()) as world, pytest.MonkeyPatch.context() as env:
        for field in fields(Settings):  # nothing a stack's `use_here` left in this process reaches the command
            env.delenv(field.name.upper(), raising=False)
        for name, value in world.env.items():
            env.setenv(name, value)
        env.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:9")  # the command's own Services never publish
        WORLD[:] = [world]
        run_week(world, 0)
        run_week(world, 1)
        # A tutor's click and a dead-lettered message quoting the id, as the buttons and the recorder write them.
        rows(
            """INSERT INTO `${tutor_actions}` (snapshot_date, tag_id, user_id, action, tutor, channel_id, acted_at)
               VALUES (@d, @t, @u, 'contatado', 'slack:U0TUTOR1', 'C0PRIV1', CURRENT_TIMESTAMP())""",
            d=date.fromisoformat(WEEKS[1]),
            t=A,
            u=VICTIM,
        )
        rows(
            """INSERT INTO `${failures}` (failed_at, stage, run_id, tag_id, reason)
               VALUES (CURRENT_TIMESTAMP(), 'notify_tutors', @r, @t, @reason)""",
            r=WEEKS[1],
            t=A,
            reason=f"click on student {VICTIM} of tag {A} not in the digest",
        )
        yield world
        WORLD.clear()


def test_export_erase_and_a_third_week(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    victim_rows = "SELECT * FROM `${progress_history}` WHERE user_id = @u ORDER BY snapshot_date, product_id"
    history = rows(victim_rows, u=VICTIM)
    assert len(history) == 4 and {r["status"] for r in history} == {"ok", "failed"}
    digests = rows("SELECT students_listed FROM `${slack_digests}` WHERE channel_id = 'C0PRIV1'")
    assert any(str(VICTIM) in (d["students_listed"] or "") for d in digests)  # named in a posted digest
    before = class_figures()

    # -- export: the document is what the tables hold, and nothing of anyone else ----------------------------
    out = tmp_path / "aluno.json"
    assert privacy.main(["export", "--student", str(VICTIM), "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["contact"]["nome"] == NAME and doc["contact"]["email"] == EMAIL and doc["contact"]["celular"] == PHONE
    exported = {
        (r["snapshot_date"], r["product_id"], r["status"], r["total"], r["error"]) for r in doc["progress_history"]
    }
    assert exported == {
        (str(r["snapshot_date"]), r["product_id"], r["status"], r["total"], r["error"]) for r in history
    }
    assert [a["action"] for a in doc["tutor_actions"]] == ["contatado"] and "tutor" not in doc["tutor_actions"][0]
    assert len(doc["reports"]["report_student_week"]) == 2
    assert doc["mentions"]["slack_digests"] and all(
        "students_listed" not in d for d in doc["mentions"]["slack_digests"]
    )
    assert len(doc["mentions"]["failures"]) == 1
    assert any(n.startswith("rosters/") for n in doc["raw_objects"]) and doc["erasure"] is None
    assert mentions(doc, {u for ids in OTHERS.values() for u in ids}) == []

    # -- refusals change nothing --------------------------------------------------------------------------------
    assert privacy.main(["export", "--student", "999999"]) == 2
    erase = ["erase", "--student", str(VICTIM), "--request", "LGPD-2026-001", "--by", "dpo@escola.example"]
    assert privacy.main(erase) == 2  # no --confirm
    assert privacy.main([*erase, "--dry-run"]) == 0
    plan = json.loads(_last_json(capsys))
    assert plan["would_delete_contact_rows"] == 1 and plan["would_pseudonymise_rows"]["progress_history"] == 4
    assert privacy.main(["erase", "--student", "999999", "--request", "R1", "--by", "dpo", "--confirm"]) == 2
    assert rows(victim_rows, u=VICTIM) == history
    assert not list(world.svc.state.list_blobs(prefix=ERASURES_PREFIX))

    # -- an erasure interrupted after the tables, then run again, finishes ---------------------------------------
    def crash(*_: Any) -> int:
        raise RuntimeError("killed mid-erasure")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(erasure, "rewrite_objects", crash)
        assert privacy.main([*erase, "--confirm"]) == 3  # changed things, not finished: run it again
    assert "erasure incomplete: RuntimeError: killed mid-erasure" in capsys.readouterr().err
    bucket = world.svc.state
    [entry] = [b for b in bucket.list_blobs(prefix=ERASURES_PREFIX) if b.name != ERASURES_KEYCHECK]
    assert json.loads(entry.download_as_bytes())["state"] == erasures.PENDING
    assert not rows(victim_rows, u=VICTIM)  # the tables were erased before the crash, and the reports rebuilt
    assert not rows("SELECT user_id FROM `${report_student_week}` WHERE user_id = @u", u=VICTIM)
    digests_asked, posts = len(world.sent(DigestTask)), world.slack.posts
    assert privacy.main([*erase, "--confirm"]) == 0
    assert world.finalize()  # the rewritten shards' finalize events: loaded again, and nothing else (issue 30 #5)
    assert len(world.sent(DigestTask)) == digests_asked
    world.deliver()
    assert world.slack.posts == posts

    stored = everything_stored(world)
    assert traces_of_the_victim(stored) == []
    registry = json.loads(bucket.blob(entry.name).download_as_bytes())
    assert registry["state"] == erasures.DONE and registry["pseudonym"] is None and registry["scratch"] is None
    assert registry["requests"] == [
        {"request": "LGPD-2026-001", "by": "dpo@escola.example", "at": registry["started_at"]}
    ]
    assert not [t for t in client_tables(world) if t.startswith("_erasure_")]  # the scratch table was dropped
    # A rotated privacy key would bring erased students back: the command refuses it (and extraction waits).
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PRIVACY_KEY", "a-rotated-key")
        assert privacy.main([*erase, "--dry-run"]) == 2
    assert "not the one the erasures registry was written with" in capsys.readouterr().err
    pseudonymised = rows("SELECT user_id, status, total FROM `${progress_history}` WHERE user_id < 0")
    assert len({r["user_id"] for r in pseudonymised}) == 1 and len(pseudonymised) == 4
    assert class_figures() == before

    # -- the third week: the erased student is skipped at extraction ---------------------------------------------
    run_week(world, 2)
    assert traces_of_the_victim(everything_stored(world)) == []
    week2 = rows("SELECT user_id FROM `${progress_history}` WHERE snapshot_date = @d", d=date.fromisoformat(WEEKS[2]))
    assert {r["user_id"] for r in week2} == {u for ids in OTHERS.values() for u in ids}
    assert privacy.main([*erase, "--confirm"]) == 0  # idempotent: already erased
    assert json.loads(_last_json(capsys))["state"] == "already erased"


@pytest.fixture
def erased(world: World) -> int:
    """The victim erased (by the test above, or here: the command is idempotent); returns their pseudonym."""
    erase = ["erase", "--student", str(VICTIM), "--request", "LGPD-2026-001", "--by", "dpo@escola.example"]
    assert privacy.main([*erase, "--confirm"]) == 0
    world.finalize()
    [pseudonym] = {r["user_id"] for r in rows("SELECT DISTINCT user_id FROM `${progress_history}` WHERE user_id < 0")}
    return int(pseudonym)


def test_after_an_erasure_no_re_render_list_or_export_names_the_student_or_shows_a_pseudonym(
    world: World, erased: int, tmp_path: Path
) -> None:
    """Issue 30 finding 1: a click on another student's button in a digest that named the erased student re-renders
    the message; `/turma alunos`, the tutor_list view and the tutors' CSV list the class. None of them names the
    student or shows the pseudonym in their place; the class's counts as reported stay."""
    week = date.fromisoformat(WEEKS[1])
    [message] = [m for m in world.slack.messages.values() if m["channel"] == "C0PRIV1" and _week_of(m) == week]
    other = next(u for u in _button_students(message) if u != VICTIM)
    world.publish(ClickTask(week, A, other, "contatado", "slack:U0TUTOR2", "C0PRIV1", message["ts"]))
    world.deliver()
    rerendered = world.slack.messages[("C0PRIV1", message["ts"])]
    assert rerendered["versions"] > message["versions"]  # the click re-rendered it
    assert _button_students(rerendered) == [u for u in _button_students(message) if u != VICTIM]
    assert mentions(rerendered, {VICTIM, erased}, TEXT_TRACES) == []

    world.publish(ClassListTask(A, _response_url(world), "U0TUTOR2", "C0PRIV1"))
    world.deliver()
    answer = world.slack.responses[-1]["body"]
    assert answer["text"] and mentions(answer, {VICTIM, erased}, TEXT_TRACES) == []

    view = rows("SELECT user_id, nome FROM `${tutor_list}`")
    assert view and {r["user_id"] for r in view} <= set(OTHERS[A] + OTHERS[B])
    out = tmp_path / "tutores.csv"
    reporting.export_tutors(world.svc, out)
    assert mentions(list(csv.reader(out.open(encoding="utf-8-sig"))), {VICTIM, erased}, TEXT_TRACES) == []


def test_a_digest_task_that_read_the_reports_before_the_erasure_does_not_write_the_student_back(
    world: World, erased: int
) -> None:
    """Issue 30 finding 6: a digest task read the week's list while the student was still in it, and reaches its
    claim, its post and its record only after the erasure said done. Nothing it writes names the student."""
    week = date.fromisoformat(WEEKS[1])
    stale = [
        ListedStudent(A, VICTIM, NAME, "em risco", 2, None, 0.05, 0.5),  # as read before the erasure
        ListedStudent(A, LATE, "Outro Aluno", "em risco", 2, None, 0.05, 0.5),
    ]
    late = digest.ChannelDigest(
        "C0LATE", [ClassWeek(A, "2026-06", "Trilha 1", 7, 2, 0, None, None, 0.3, None, stale)], {A: stale}
    )
    assert digest._post_channel(world.svc, RunId(week), late, {}) == "posted"
    claim = claims.read(world.svc.state, week, "C0LATE")
    assert claim is not None
    [record] = rows("SELECT * FROM `${slack_digests}` WHERE channel_id = 'C0LATE'")
    [message] = [m for m in world.slack.messages.values() if m["channel"] == "C0LATE"]
    assert claim.body["listed"] == [[A, LATE]] and _button_students(message) == [LATE]
    assert mentions([claim.body, record, message], {VICTIM, erased}, TEXT_TRACES) == []


def test_a_click_and_a_digest_record_merged_after_the_erasure_do_not_write_the_student_back(
    world: World, erased: int
) -> None:
    """A click task and a digest task that checked their claim and list before the erasure, and write after it
    said done: each MERGE keeps only the students the week's reports still hold under their id, so the erased
    student is left out and the others are recorded (tutors/records.py)."""
    week, now = date.fromisoformat(WEEKS[1]), world.svc.now()
    for student in (VICTIM, LATE):
        click = {"snapshot_date": week, "tag_id": A, "user_id": student, "action": "contatado"}
        records.record_action(world.svc, {**click, "tutor": "slack:U0LATE", "channel_id": "C0PRIV1", "acted_at": now})
    assert rows("SELECT user_id FROM `${tutor_actions}` WHERE tutor = 'slack:U0LATE'") == [{"user_id": LATE}]
    digest_row = {"snapshot_date": week, "channel_id": "C0FENCE", "run_id": WEEKS[1], "message_ts": "1.2"}
    counts = {"status": "posted", "error": None, "tag_ids": str(A), "em_risco": 2, "atrasado": 0, "posted_at": now}
    records.record_digest(world.svc, {**digest_row, **counts, "students_listed": f"{VICTIM},{LATE}"})
    [record] = rows("SELECT students_listed, em_risco FROM `${slack_digests}` WHERE channel_id = 'C0FENCE'")
    assert record == {"students_listed": str(LATE), "em_risco": 2}  # the class's figures as posted


def _week_of(message: dict[str, Any]) -> date | None:
    parsed = [parse_button_value(e.get("value")) for e in _elements(message)]
    return next((p[0] for p in parsed if p), None)


def _elements(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for b in message["blocks"] if b.get("type") == "actions" for e in b["elements"]]


def _button_students(message: dict[str, Any]) -> list[int]:
    """The students a digest names, in order, from its buttons' values (one row of buttons per student)."""
    students: list[int] = []
    for element in _elements(message):
        parsed = parse_button_value(element.get("value"))
        if parsed and parsed[2] not in students:
            students.append(parsed[2])
    return students


def _response_url(world: World) -> str:
    return world.cfg.slack_response_url_prefix + "turma-alunos"


def test_retention_in_the_daily_health_check_and_the_local_stand_in_of_the_lifecycle_rule(world: World) -> None:
    """Contact data of a student unseen for 6 months goes with the daily check; raw objects stay 13 weeks."""
    cutoff = retention.months_before(datetime.now(UTC).date(), 6)
    for user_id, seen in ((6999, cutoff - timedelta(days=1)), (6998, cutoff)):  # a day too old; just in time
        rows(
            """INSERT INTO `${students}` (user_id, nome, email, celular, last_tag_id, last_seen_date, updated_at)
               VALUES (@u, 'Antiga', 'antiga@example.com', NULL, @t, @seen, CURRENT_TIMESTAMP())""",
            u=user_id,
            t=B,
            seen=seen,
        )
    # Kept: whoever was seen on or after the cutoff (the simulated weeks' students too, while they are recent).
    recent = "SELECT user_id FROM `${students}` WHERE COALESCE(last_seen_date, DATE(updated_at)) >= @c"
    kept = {r["user_id"] for r in rows(recent, c=cutoff)}
    assert 6998 in kept and 6999 not in kept
    world.at(datetime.now(UTC))  # retention counts from today, as the test's cutoff does
    daily.daily_check(world.svc)
    assert {r["user_id"] for r in rows("SELECT user_id FROM `${students}`")} == kept
    bucket = world.svc.state  # the registry of erasures

    def raw() -> int:
        prefixes = [p for kind in RAW_PREFIXES.values() for p in kind]
        return sum(1 for prefix in prefixes for _ in world.svc.bucket_for(prefix).list_blobs(prefix=prefix))

    # The erasures registry is not a raw object: whatever it holds (an entry of this module's erasure, if that
    # test ran first, and one written here, so this test stands alone) outlives the raw objects.
    bucket.blob(f"{ERASURES_PREFIX}retention-test.json").upload_from_string(b"{}")
    registry = sorted(b.name for b in bucket.list_blobs(prefix=ERASURES_PREFIX))
    assert raw() > 0  # written today: younger than 13 weeks
    later = datetime.now(UTC) + timedelta(weeks=13, days=1)
    retention.expire_raw_objects(replace(world.svc, clock=lambda: later))
    assert raw() == 0 and sorted(b.name for b in bucket.list_blobs(prefix=ERASURES_PREFIX)) == registry


def _last_json(capsys: pytest.CaptureFixture[str]) -> str:
    out = capsys.readouterr().out
    return out[out.rindex("\n{") + 1 :] if "\n{" in out else out[out.index("{") :]


def test_an_erasure_is_not_done_while_a_load_in_progress_holds_the_students_rows(world: World) -> None:
    """Issue 30 finding 6: a staging table younger than an hour is not dropped (a load may be using it), so the
    erasure scans it: holding the student's rows, it is a load that may merge them back, and the erasure says
    it is incomplete until that load is over; then it finishes."""
    student = OTHERS[B][0]
    staging = f"{world.cfg.gcp_project}.{world.cfg.bq_dataset}._staging_contacts_model_{student}"
    table = bigquery.Table(staging, schema=[bigquery.SchemaField("user_id", "INTEGER")])
    world.svc.bigquery.create_table(table)
    world.svc.bigquery.insert_rows_json(staging, [{"user_id": student}])
    with pytest.raises(erasure.Incomplete):
        erasure.erase(world.svc, student, "LGPD-2026-002", "dpo@escola.example")
    world.svc.bigquery.delete_table(staging)  # the load finished and dropped its staging table
    assert erasure.erase(world.svc, student, "LGPD-2026-002", "dpo@escola.example").state == "erased"


def test_an_erasure_waits_for_the_slack_agents_writes_that_may_hold_the_student(world: World) -> None:
    """A Slack agent's staging table still being loaded (empty: a load commits at once, so it may be about to hold
    anyone) or holding the student's click makes the erasure incomplete; one holding another student's does not.
    The click merged after the erasure's passes is left out by the MERGE (the reports no longer hold the student);
    run again, the erasure finishes, and no row names the student."""
    svc, fields = world.svc, warehouse.schema_fields("tutor_actions")
    student, other = OTHERS[B][1], OTHERS[B][2]

    def click(user: int) -> dict[str, Any]:
        at = {"tutor": "slack:U0FLIGHT", "channel_id": "C0PRIV2", "acted_at": svc.now()}
        return {
            "snapshot_date": date.fromisoformat(WEEKS[1]),
            "tag_id": B,
            "user_id": user,
            "action": "contatado",
            **at,
        }

    loading = records._create_staging(svc, "tutor_actions", fields)  # created; its load job not done yet
    another = records._create_staging(svc, "tutor_actions", fields)
    warehouse.load_rows(svc, another, fields, [click(other)])
    table_id = loading.rsplit(".", 1)[-1]
    assert privacy_tables.writes_in_flight(svc, student, svc.now()) == [table_id]
    with pytest.raises(erasure.Incomplete, match="writes in progress"):
        erasure.erase(svc, student, "LGPD-2026-003", "dpo@escola.example")
    warehouse.load_rows(svc, loading, fields, [click(student)])  # the load done: it holds the student's click
    assert privacy_tables.writes_in_flight(svc, student, svc.now()) == [table_id]
    with pytest.raises(erasure.Incomplete, match="writes in progress"):
        erasure.erase(svc, student, "LGPD-2026-003", "dpo@escola.example")
    warehouse.query(svc, records.ACTION_SQL, sql_vars={"staging": loading})  # its MERGE, after the passes
    for table in (loading, another):
        records._drop_staging(svc, table)
    assert erasure.erase(svc, student, "LGPD-2026-003", "dpo@escola.example").state == "erased"
    assert rows("SELECT user_id FROM `${tutor_actions}` WHERE tutor = 'slack:U0FLIGHT'") == []
