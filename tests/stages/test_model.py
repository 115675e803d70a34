"""A stateful model of the whole system (issue 30), in process on world.py's services: Hypothesis draws a
sequence of what happens in a school's life (weekly runs with carrying on or off, re-runs, a re-extraction
during a Cademi outage, replays, resumes, a run closed by the operator, erasures, tutors' clicks, `/turma alunos`,
the daily check, a dead letter) and after every step checks what users rely on:

- the history equals what a full read would have recorded (an erased student's rows under their pseudonym);
- nothing posted, re-rendered or answered after an erasure names the student, and no pseudonym is ever shown;
- no digest is posted twice for a week and channel, and none for a week that is already past;
- every message that ended other than in success has a `failures` row;
- no job but the erasure's own keeps a student's id or pseudonym in its parameters (BigQuery's job history), and
  the erasure's never the pseudonym;
- an erasure changes no class-level figure.

`make test` runs a few short examples (MODEL_EXAMPLES, MODEL_STEPS: more with the environment variables)."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Verbosity, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from cademi_sim.builder import School
from cademi_sim.truth import expected_rows
from progress_monitor.commands.replay import reextract, replay_history
from progress_monitor.contracts.messages import ClassListTask, ClickTask
from progress_monitor.contracts.values import RunId
from progress_monitor.pipeline import lanes, runs
from progress_monitor.platform import warehouse
from progress_monitor.privacy import erasure
from progress_monitor.stages import daily
from progress_monitor.tutors.blocks import parse_button_value
from tests.stages.world import Job, Servers, World, open_world
from tests.traces import mentions
from tests.truth import history

pytestmark = pytest.mark.integration

WEEKS = ["2026-05-04", "2026-05-11", "2026-05-18", "2026-05-25"]
A, B = 8101, 8102
CHANNELS = {A: "C0MODELA", B: "C0MODELB"}
STUDENTS = {A: [8201, 8202, 8203], B: [8301, 8302]}
BEHIND = {8201, 8202, 8301}  # far behind every week: named in the digests
NAMES = {u: f"Estudante{u}" for ids in STUDENTS.values() for u in ids}
EXAMPLES = int(os.environ.get("MODEL_EXAMPLES", "1"))
STEPS = int(os.environ.get("MODEL_STEPS", "10"))


def school() -> dict[str, Any]:
    built = School(WEEKS, api_key="model-key")
    built.product(101, "Curso 1")
    built.track("t1", "Trilha 1", {101: 2})
    for tag in (A, B):
        built.tag(
            tag, f"Turma {tag}", track="t1", turma="2026-03", start_date="2026-03-02", slack_channel=CHANNELS[tag]
        )
    for tag, ids in STUDENTS.items():
        for k, uid in enumerate(ids):
            # The far-behind never study (the same total, an old last access: carrying may carry them); the
            # others study every week, and their last access moves with it (Cademi's rule carrying relies on).
            behind = uid in BEHIND
            built.student(
                uid,
                tag,
                nome=NAMES[uid],
                email=f"m{uid}@example.com",
                last_access=[
                    "2026-04-01 10:00:00" if behind else f"{date.fromisoformat(w) - timedelta(days=1)} 10:00:00"
                    for w in WEEKS
                ],
                totals={101: [2.0] * len(WEEKS) if behind else [20 + 10 * k + 15 * w for w in range(len(WEEKS))]},
            )
    return built.build()


SERVERS: list[Servers] = []
ROOT: list[Path] = []


class School_(RuleBasedStateMachine):
    """One school's life; each example opens a world of its own."""

    def __init__(self) -> None:
        super().__init__()
        path = ROOT[0] / f"model-{id(self)}" / "scenario.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(school()))
        self.world: World = open_world(SERVERS[0], path)
        self.newest = -1  # index of the newest week run
        self.weeks_named: dict[int, set[int]] = {}  # student -> weeks whose rows name them (or their pseudonym)
        self.pseudonyms: dict[int, int] = {}  # erased student -> pseudonym
        self.erased_at: dict[int, int] = {}  # erased student -> Slack calls recorded when the erasure ended
        self.claims_seen: set[str] = set()
        self.failures_expected = 0
        self.reruns = 0
        self.erasure_jobs: list[Job] = []

    def teardown(self) -> None:
        self.world.close()

    # -- helpers -------------------------------------------------------------------------------------------------

    def settle(self) -> None:
        while self.world.deliver() or self.world.finalize():
            pass

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        return warehouse.query(self.world.svc, sql, **params)

    def run(self, index: int, rerun: str | None = None, carry: bool = False) -> None:
        cfg = replace(self.world.cfg, incremental="on" if carry else "off")
        self.world.svc = replace(self.world.svc, cfg=cfg)
        self.world.run_week(index, rerun=rerun)
        for uid in NAMES:
            if uid not in self.pseudonyms:
                self.weeks_named.setdefault(uid, set()).add(index)

    def pseudonymised(self) -> set[int]:
        return {r["user_id"] for r in self.rows("SELECT DISTINCT user_id FROM `${progress_history}` WHERE user_id < 0")}

    def slack_calls(self) -> list[dict[str, Any]]:
        record = self.world.slack.record
        return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []

    # -- rules ---------------------------------------------------------------------------------------------------

    @initialize(carry=st.booleans())
    def first_week(self, carry: bool) -> None:
        self.run(0, carry=carry)
        self.newest = 0

    @precondition(lambda self: self.newest < len(WEEKS) - 1)
    @rule(carry=st.booleans())
    def weekly_run(self, carry: bool) -> None:
        self.run(self.newest + 1, carry=carry)
        self.newest += 1

    @precondition(lambda self: self.newest >= 0)
    @rule(carry=st.booleans())
    def rerun(self, carry: bool) -> None:
        self.reruns += 1
        self.run(self.newest, rerun=f"again{self.reruns}", carry=carry)

    @precondition(lambda self: self.newest >= 0)
    @rule(student=st.sampled_from(STUDENTS[A]))
    def reextract_during_an_outage(self, student: int) -> None:
        """Cademi answers 503 to one student's progress while class A is re-extracted: every good row stays."""
        self.reruns += 1
        path = f"/usuario/progresso_por_produto/{student}/101"
        with self.world.sim.lock:
            self.world.sim.faults.append({"path": path, "status": 503})
            self.world.sim.fault_left.append(1_000_000)
        try:
            self.world.week(self.newest)
            reextract(self.world.svc, date.fromisoformat(WEEKS[self.newest]), A, f"out{self.reruns}")
            self.settle()
        finally:
            with self.world.sim.lock:
                self.world.sim.fault_left[-1] = 0

    @precondition(lambda self: self.newest >= 0)
    @rule()
    def replay(self) -> None:
        replay_history(self.world.svc, date.fromisoformat(WEEKS[0]), date.fromisoformat(WEEKS[self.newest]))

    @precondition(lambda self: self.newest >= 0)
    @rule()
    def daily_check(self) -> None:
        daily.daily_check(self.world.svc)
        self.settle()

    @precondition(lambda self: self.newest >= 0)
    @rule()
    def close_a_run_that_never_finishes(self) -> None:
        svc = self.world.svc
        self.reruns += 1
        run_id = RunId(date.fromisoformat(WEEKS[self.newest]), f"stuck{self.reruns}")
        lanes.write_manifest(svc.state, run_id, warehouse.active_tags(svc))
        runs.start_run(svc, run_id, 2)
        runs.mark_fanned_out(svc, run_id)
        assert runs.close_run(svc, run_id, "model: never finishes", "model") == "running"

    @rule()
    def dead_letter(self) -> None:
        self.world.svc.publish(self.world.cfg.progress_topic, b'{"run_id": "garbage"}')
        self.settle()
        self.failures_expected += 1

    @precondition(lambda self: self.newest >= 0)
    @rule(student=st.sampled_from(sorted(NAMES)))
    def erase(self, student: int) -> None:
        if student in self.pseudonyms:
            return
        before = self.class_figures()
        known = {
            r["user_id"] for r in self.rows("SELECT DISTINCT user_id FROM `${progress_history}` WHERE user_id < 0")
        }
        self.no_job_keeps_a_students_id_in_its_parameters()  # what ran before: ordinary jobs
        outcome = erasure.erase(self.world.svc, student, f"LGPD-{student}", "dpo@escola.example")
        assert outcome.state == "erased"
        self.erasure_jobs += self.world.jobs.new()  # the erasure's own: they name the id, never the pseudonym
        self.settle()  # the rewritten shards' finalize events
        [pseudonym] = self.pseudonymised() - known
        self.pseudonyms[student] = int(pseudonym)
        self.erased_at[student] = len(self.slack_calls())
        assert self.class_figures() == before  # an erasure changes no class-level figure
        assert [j.parameters for j in self.erasure_jobs if mentions(j.values(), {pseudonym})] == []

    @precondition(lambda self: self.newest >= 0)
    @rule(pick=st.integers(0, 20))
    def click(self, pick: int) -> None:
        """A tutor clicks one of the buttons in Slack (any message, any student it shows): the message re-renders."""
        buttons = [
            (m, parse_button_value(e.get("value")), e["action_id"])
            for m in sorted(self.world.slack.messages.values(), key=lambda m: (m["channel"], m["ts"]))
            for b in m["blocks"]
            if b.get("type") == "actions"
            for e in b["elements"]
        ]
        if not buttons:
            return
        message, value, action = buttons[pick % len(buttons)]
        assert value is not None
        week, tag, user = value
        self.world.publish(ClickTask(week, tag, user, action, "slack:U0MODEL", message["channel"], message["ts"]))
        self.settle()

    @precondition(lambda self: self.newest >= 0)
    @rule(tag=st.sampled_from([A, B]))
    def class_list(self, tag: int) -> None:
        url = self.world.cfg.slack_response_url_prefix + f"lista-{tag}"
        self.world.publish(ClassListTask(tag, url, "U0MODEL", CHANNELS[tag]))
        self.settle()

    # -- invariants ----------------------------------------------------------------------------------------------

    def class_figures(self) -> list[dict[str, Any]]:
        return self.rows(
            """SELECT snapshot_date, tag_id, students, ROUND(mean_actual, 6) AS mean_actual,
                 ROUND(share_em_risco, 6) AS em_risco, ROUND(share_atrasado, 6) AS atrasado
               FROM `${report_class_week}` ORDER BY snapshot_date, tag_id"""
        )

    @invariant()
    def the_history_is_what_a_full_read_recorded(self) -> None:
        expected: dict[tuple[str, int, int, int], Any] = {}
        for week in range(self.newest + 1):
            for (snapshot, tag, user, product), row in expected_rows(self.world.scenario, week).items():
                if week in self.weeks_named.get(user, set()):
                    expected[(snapshot, tag, self.pseudonyms.get(user, user), product)] = row
        assert history(self.world.svc) == expected  # history() also fails on a key stored twice

    @invariant()
    def no_erased_student_and_no_pseudonym_is_shown(self) -> None:
        calls = self.slack_calls()  # every post, update and response_url answer, in order
        assert mentions(calls, set(self.pseudonyms.values())) == []
        for student, since in self.erased_at.items():
            assert mentions(calls[since:], {student}, [NAMES[student]]) == []
        assert mentions(list(self.world.slack.messages.values()), set(self.pseudonyms.values())) == []

    @invariant()
    def one_digest_per_week_and_channel_and_none_for_a_past_week(self) -> None:
        claims = {
            b.name: json.loads(b.download_as_bytes()) for b in self.world.svc.state.list_blobs(prefix="slack/digests/")
        }
        for name in set(claims) - self.claims_seen:  # new since the last step: the newest week's only
            assert name.split("/")[2] == WEEKS[self.newest], name
        self.claims_seen |= set(claims)
        posts: dict[str, int] = {}
        for call in self.slack_calls():
            if call["kind"] == "chat.postMessage":
                posts[call["channel"]] = posts.get(call["channel"], 0) + 1
        for channel in CHANNELS.values():
            weeks_posted = [n for n, c in claims.items() if n.split("/")[3] == f"{channel}.json" and c.get("ts")]
            assert posts.get(channel, 0) == len(weeks_posted)

    @invariant()
    def no_job_keeps_a_students_id_in_its_parameters(self) -> None:
        """BigQuery's job history keeps every job's parameters (about 180 days): outside the erasure's own jobs, a
        student's id or pseudonym there would sit beside values the erasure leaves (docs/privacy.md)."""
        named = set(NAMES) | set(self.pseudonyms.values())
        jobs = self.world.jobs.new()
        assert [(j.sql[:80], j.parameters) for j in jobs if mentions(j.values(), named)] == []

    @invariant()
    def every_message_that_failed_has_a_failures_row(self) -> None:
        [row] = self.rows("SELECT COUNT(*) AS n FROM `${failures}`")
        assert row["n"] >= self.failures_expected


INVARIANTS = (
    "the_history_is_what_a_full_read_recorded",
    "no_erased_student_and_no_pseudonym_is_shown",
    "one_digest_per_week_and_channel_and_none_for_a_past_week",
    "every_message_that_failed_has_a_failures_row",
    "no_job_keeps_a_students_id_in_its_parameters",
)


def scripted(steps: list[tuple[str, dict[str, Any]]]) -> None:
    """One sequence the random search may take long to draw, step by step, every invariant after each."""
    machine = School_()
    try:
        for name, args in steps:
            getattr(machine, name)(**args)
            for check in INVARIANTS:
                getattr(machine, check)()
    finally:
        machine.teardown()


@pytest.fixture(scope="module")
def model_servers(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Servers:
    SERVERS[:] = [servers]
    ROOT[:] = [tmp_path_factory.mktemp("model")]
    return servers


def test_the_school_model_keeps_every_invariant(model_servers: Servers) -> None:
    machine = School_.TestCase
    machine.settings = settings(
        max_examples=EXAMPLES,
        stateful_step_count=STEPS,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.verbose if os.environ.get("MODEL_VERBOSE") else Verbosity.normal,
    )
    machine().runTest()


# The interleavings issue 30 names, each a script: an erasure between a digest and the clicks, lists and checks
# that re-render it; an erasure between two runs of the week, with carrying on, and a replay after it.
SCRIPTS = {
    "erase, then click, list and check": [
        ("first_week", {"carry": False}),
        ("erase", {"student": 8201}),
        ("click", {"pick": 0}),
        ("click", {"pick": 5}),
        ("class_list", {"tag": A}),
        ("daily_check", {}),
        ("weekly_run", {"carry": False}),
        ("click", {"pick": 3}),
    ],
    "carrying beside an erasure, a re-run, an outage and a replay": [
        ("first_week", {"carry": True}),
        ("weekly_run", {"carry": True}),
        ("erase", {"student": 8301}),
        ("rerun", {"carry": True}),
        ("reextract_during_an_outage", {"student": 8202}),
        ("replay", {}),
        ("close_a_run_that_never_finishes", {}),
        ("dead_letter", {}),
    ],
}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_the_interleavings_issue_30_names_keep_every_invariant(model_servers: Servers, script: str) -> None:
    scripted(SCRIPTS[script])
