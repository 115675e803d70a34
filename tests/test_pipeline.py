"""The pipeline end to end on the local emulator stack (Pub/Sub, fake-gcs-server, bqemulator, simulator): what
only the stack shows (push deliveries and redeliveries, duplicate events in both shapes, a process killed
mid-tag, bursts, a poison message, what the processes log). What the history keeps across weeks (replay,
re-extraction, resume, class changes) is tested in process: tests/stages/test_history.py.

The tests share one stack but not an order: each one either runs the weekly runs it reads (`ensure_week`,
once per stack) or makes a run of its own under a re-run label.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import requests

from cademi_sim.scenario import load
from cademi_sim.truth import expected_rows
from devstack.emulators import pubsub_clients, push_subscription
from devstack.here import services_here
from devstack.stack import LocalStack
from devstack.wiring import FUNCTIONS, PROJECT, RECORDER
from progress_monitor.contracts.messages import ScheduleRequest
from progress_monitor.contracts.values import RunId
from progress_monitor.platform import warehouse
from progress_monitor.settings import Settings
from progress_monitor.stages.daily import resume_run
from tests.pipeline_world import (
    ALWAYS_FAILING,
    BIG_TAG,
    CPF_PREFIX,
    OTHER_TAG,
    SMALL_TAG,
    UNREGISTERED_TAG,
    WEEKS,
    start_stack,
    world,
)
from tests.truth import count_rows, differences

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
FAILING = {ALWAYS_FAILING}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = start_stack(tmp_path_factory.mktemp("stack"), world())
    yield stack
    stack.stop()


def settings() -> Settings:
    return Settings.from_env()


def assert_history_equals_truth(stack: LocalStack, week_index: int) -> None:
    assert differences(services_here(), stack.scenario, week_index, FAILING) == ([], [], [])


def run(stack: LocalStack, week_index: int, **kwargs: Any) -> dict[str, Any]:
    run_id = stack.trigger(date.fromisoformat(WEEKS[week_index]), **kwargs)
    row = stack.wait_run(run_id, timeout=240)
    assert row["status"] == "succeeded", row
    return row


def ensure_week(stack: LocalStack, week_index: int) -> None:
    """The scheduled run of a week, made once per stack by whichever test needs it first."""
    row = stack.run_row(RunId(date.fromisoformat(WEEKS[week_index]))) or {}
    if row.get("status") != "succeeded":
        run(stack, week_index)


def wait_for_log(stack: LocalStack, name: str, pattern: str, timeout: float = 60) -> None:
    log_path = stack.child(name).log_path
    assert log_path is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, log_path.read_text(errors="replace")):
            return
        time.sleep(0.3)
    raise AssertionError(f"{pattern!r} never appeared in {log_path}")


def test_a_weekly_run_loads_exactly_what_the_api_served(stack: LocalStack) -> None:
    stack.admin().reset()
    row = run(stack, 0, rerun="fresh")
    expected = expected_rows(load(stack.scenario_path), 0, FAILING)
    assert_history_equals_truth(stack, 0)
    assert row["tags_total"] == 3 and row["tags_done"] == 3
    assert row["records_loaded"] == len(expected)
    assert row["failed_extractions"] == 1 and row["no_access"] == 1
    assert row["pieces_loaded"] > 3  # the 155-student tag needed continuation pieces
    listed = stack.admin().counters()
    assert all(listed.get(f"lista_por_tag/{tag}", 0) >= 1 for tag in (BIG_TAG, SMALL_TAG, OTHER_TAG))
    assert listed.get(f"lista_por_tag/{UNREGISTERED_TAG}", 0) == 0  # Cademi has it; the registry does not


def test_a_duplicate_schedule_publish_makes_one_run(stack: LocalStack) -> None:
    stack.admin().set_week(WEEKS[1])
    stack.publish_schedule(ScheduleRequest(week=date.fromisoformat(WEEKS[1]), rerun="dup"))
    stack.publish_schedule(ScheduleRequest(week=date.fromisoformat(WEEKS[1]), rerun="dup"))
    run_id = RunId(date.fromisoformat(WEEKS[1]), "dup")
    row = stack.wait_run(run_id, timeout=240)
    assert row["status"] == "succeeded" and row["tags_done"] == 3
    found = warehouse.query(services_here(), "SELECT run_id FROM `${runs}` WHERE run_id = @r", r=str(run_id))
    assert len(found) == 1
    time.sleep(2)  # let any duplicate fan-out drain before comparing
    assert_history_equals_truth(stack, 1)


def _a_shard(week: str) -> tuple[str, int]:
    rows = warehouse.query(
        services_here(),
        "SELECT shard, generation FROM `${loads}` WHERE snapshot_date = @d LIMIT 1",
        d=date.fromisoformat(week),
    )
    return rows[0]["shard"], int(rows[0]["generation"])


def test_a_week_rerun_gives_the_same_rows_not_twice(stack: LocalStack) -> None:
    ensure_week(stack, 0)
    before = count_rows(services_here(), WEEKS[0])
    row = run(stack, 0, rerun="again")
    assert row["run_id"] == f"{WEEKS[0]}-again"
    assert count_rows(services_here(), WEEKS[0]) == before
    assert_history_equals_truth(stack, 0)
    reruns = warehouse.query(
        services_here(),
        "SELECT DISTINCT run_id FROM `${progress_history}` WHERE snapshot_date = @d",
        d=date.fromisoformat(WEEKS[0]),
    )
    assert [r["run_id"] for r in reruns] == [f"{WEEKS[0]}-again"]  # every row now comes from the re-run


def test_5xx_and_429_bursts_still_give_complete_data(stack: LocalStack) -> None:
    faults: list[dict[str, Any]] = [
        {"path_prefix": f"/usuario/lista_por_tag/{BIG_TAG}", "week": 2, "status": 503, "times": 2},
        {"path_prefix": f"/usuario/lista_por_tag/{SMALL_TAG}", "week": 2, "body": "<html>502</html>", "times": 1},
    ]
    faults += [
        {"path": f"/usuario/progresso_por_produto/{1001 + i}/101", "week": 2, "status": 429, "times": 2}
        for i in range(0, 150, 10)
    ]
    faults += [
        {"path": f"/usuario/progresso_por_produto/{3001 + i}/302", "week": 2, "status": 500, "times": 3}
        for i in range(3)
    ]
    admin = stack.admin()
    fired_before = admin.counters().get("faults_fired", 0)
    admin.add_faults(faults)
    run(stack, 2, rerun="faults")
    assert admin.counters()["faults_fired"] - fired_before >= 2 + 1 + 15 * 2 + 3 * 3  # every injected fault met
    assert_history_equals_truth(stack, 2)


def test_extract_progress_killed_mid_tag_completes_without_loss_or_duplicates(stack: LocalStack) -> None:
    port = stack.port_of("extract_progress")
    admin = stack.admin()
    admin.add_faults([{"path": "/usuario/progresso_por_produto/1040/101", "week": 3, "delay_ms": 4000, "times": 1}])
    fired_before = admin.counters().get("faults_fired", 0)
    run_id = stack.trigger(date.fromisoformat(WEEKS[3]), rerun="kill")
    deadline = time.monotonic() + 60
    while admin.counters().get("faults_fired", 0) == fired_before:
        assert time.monotonic() < deadline, "the slow call never started"
        time.sleep(0.1)
    stack.kill("extract_progress")  # dies while a piece of the big tag is in flight
    time.sleep(1)
    stack.restart("extract_progress", port)
    # A push that died with its process comes back after its 30 s ack deadline; 50 s covers that redelivery.
    row = stack.wait_run(run_id, timeout=50)
    if row["status"] != "succeeded":
        # Pub/Sub redelivers a push that died with its process; the emulator sometimes drops it instead.
        # The daily health check's resume sweep is the system's answer to a lost message: it must ask for the
        # pieces that died with the process (it runs several tags' pieces at once), one piece per unfinished tag.
        resumed = resume_run(services_here(), run_id)
        tags = [item.split()[1] for item in resumed]
        assert tags and len(tags) == len(set(tags)) <= 3, resumed
        row = stack.wait_run(run_id, timeout=120)
    assert row["status"] == "succeeded"
    assert_history_equals_truth(stack, 3)  # `history` also fails on a duplicated key
    pieces = warehouse.query(
        services_here(), "SELECT piece FROM `${loads}` WHERE run_id = @r AND tag_id = @t", r=str(run_id), t=BIG_TAG
    )
    assert sorted(p["piece"] for p in pieces) == list(range(len(pieces)))  # each piece loaded once, none lost


def test_a_poison_message_is_dead_lettered_while_other_tags_complete(stack: LocalStack) -> None:
    stack.dead_letters()  # start from an empty dead-letter subscription
    cfg = settings()
    failures_before = len(
        warehouse.query(services_here(), "SELECT reason FROM `${failures}` WHERE stage = 'extract_progress'")
    )
    services_here().publish(cfg.progress_topic, b"\x00not json")
    poison = {"run_id": WEEKS[2], "snapshot_date": WEEKS[2], "tag_id": -4, "product_ids": [101]}
    services_here().publish(cfg.progress_topic, json.dumps(poison).encode())
    row = run(stack, 2, rerun="poison")
    assert row["tags_done"] == 3
    deadline = time.monotonic() + 30
    dead: list[dict[str, Any]] = []
    while len(dead) < 2 and time.monotonic() < deadline:
        dead += stack.dead_letters()
        time.sleep(0.5)
    reasons = sorted(d["attributes"]["reason"] for d in dead if d["topic"] == "progress-tasks-dlq")
    assert len(reasons) == 2, dead
    assert any("not JSON" in r for r in reasons) and any("tag_id" in r for r in reasons)
    failures = warehouse.query(services_here(), "SELECT reason FROM `${failures}` WHERE stage = 'extract_progress'")
    assert len(failures) == failures_before + 2


def test_no_cpf_login_auto_or_api_key_in_shards_tables_or_logs(stack: LocalStack) -> None:
    ensure_week(stack, 0)
    texts = []
    gcs_root = Path(stack.endpoints["gcs_root"])
    files = [p for p in gcs_root.rglob("*") if p.is_file()]
    assert any("/progress/" in str(p) for p in files)
    assert not any("/contacts/" in str(p) for p in files)  # contact data was merged, then deleted
    texts += [p.read_text(errors="replace") for p in files]
    texts += [p.read_text(errors="replace") for p in (stack.workdir / "logs").glob("*.log")]
    for table in warehouse.TABLES:
        rows = warehouse.query(
            services_here(), "SELECT * FROM `${t}`", sql_vars={"t": warehouse.table_id(settings(), table)}
        )
        texts.append(json.dumps(rows, default=str))
    blob = "\n".join(texts)
    assert CPF_PREFIX not in blob and not re.search(r"\d{3}\.\d{3}\.\d{3}-\d{2}", blob)
    assert "crstk" not in blob and "login_auto" not in blob
    assert "pipeline-test-key" not in blob
    students = warehouse.query(services_here(), "SELECT COUNT(*) AS n FROM `${students}`")
    assert students[0]["n"] == 155 + 8 + 7  # tutors still get contact data, in the restricted table


def front_stats(stack: LocalStack, function: str) -> dict[str, int]:
    stats: dict[str, int] = requests.get(f"{stack.endpoints['functions'][function]}/__front/stats", timeout=5).json()
    return stats


def test_a_push_whose_token_names_another_audience_is_refused_and_never_processed(stack: LocalStack) -> None:
    """Every subscription's token names its function's URL, as Terraform declares it: the fronts refused none of
    the pipeline's pushes. A subscription left with Pub/Sub's default audience, the push endpoint with its path,
    has its pushes refused by the front as Cloud Run refuses them, so the schedule it carries makes no run."""
    ensure_week(stack, 0)
    pushed = (*FUNCTIONS, RECORDER)
    assert {name: front_stats(stack, name)["unauthenticated"] for name in pushed} == dict.fromkeys(pushed, 0)
    assert front_stats(stack, "extract_tags")["admitted"] >= 1
    publisher, subscriber = pubsub_clients(stack.endpoints)
    topic = publisher.topic_path(PROJECT, "audience-check")
    publisher.create_topic(name=topic)
    request = push_subscription(stack.endpoints, "extract_tags", "default-audience", "audience-check", audience="")
    del request["dead_letter_policy"]  # refused pushes are retried until the subscription goes
    subscriber.create_subscription(request=request)
    week = date.fromisoformat(WEEKS[1])
    try:
        publisher.publish(topic, ScheduleRequest(week=week, rerun="default-audience").encode()).result(timeout=30)
        deadline = time.monotonic() + 60
        while front_stats(stack, "extract_tags")["unauthenticated"] < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        subscriber.delete_subscription(request={"subscription": request["name"]})
        publisher.delete_topic(request={"topic": topic})
    assert front_stats(stack, "extract_tags")["unauthenticated"] >= 2  # the push, and its redelivery
    assert stack.run_row(RunId(week, "default-audience")) is None
