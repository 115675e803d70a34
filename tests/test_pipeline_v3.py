"""The pipeline on Cademi's API v3, and a school switching from v1 to v3 between two weeks.

One stack: weeks 0 and 1 run on v1, then every function is redeployed on v3 (`switch_cademi_api`) and weeks 2
and 3 run on v3. The history must equal, row for row, what the scenario served each week on either API (the
same ground truth: the failing pair, the student without access, the class change, the dropout, a tag over
three pages), each student's rows must join across the switch, v3 must make one progress call per
student, and no CPF may appear anywhere although v3 serves `document` with `users.read_personal`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date

import pytest

from devstack.here import services_here
from devstack.stack import LocalStack
from progress_monitor.platform import warehouse
from tests.pipeline_world import (
    BIG_TAG,
    CPF_PREFIX,
    DROPOUT,
    MOVER,
    OTHER_TAG,
    SMALL_TAG,
    UNREGISTERED_TAG,
    WEEKS,
    start_stack,
    world,
)
from tests.slack import slash_command
from tests.test_pipeline import assert_history_equals_truth
from tests.truth import history

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # 40 students on pages of 15: the full page of 150 is tests/test_pipeline.py's.
    stack = start_stack(tmp_path_factory.mktemp("switch"), world(big=40, per_page=15), cademi_api="v1")
    yield stack
    stack.stop()


def run(stack: LocalStack, week_index: int) -> dict[str, object]:
    stack.admin().reset()
    row = stack.wait_run(stack.trigger(date.fromisoformat(WEEKS[week_index])), timeout=240)
    # The small class's always-failing pair is one of its records: within 5 % for the whole school.
    assert row["status"] == "succeeded", row
    return row


def test_a_school_switching_from_v1_to_v3_keeps_one_continuous_history(stack: LocalStack) -> None:
    for week in (0, 1):
        run(stack, week)
        assert_history_equals_truth(stack, week)
    v1_calls = stack.admin().counters()
    stack.switch_cademi_api("v3")
    for week in (2, 3):
        row = run(stack, week)
        assert_history_equals_truth(stack, week)  # the failing pair, no access, the class change: as on v1
        counters = stack.admin().counters()
        assert counters.get("progresso_por_produto", 0) == 0 and counters.get("lista_por_tag", 0) == 0
        assert counters["v3/progress"] == row["students"]  # one progress call per student
    assert v1_calls["progresso_por_produto"] > 2 * v1_calls.get("v3/progress", 0)

    # Each student's rows join across the switch: same numeric user id, every week present.
    rows = warehouse.query(
        services_here(),
        "SELECT user_id, snapshot_date FROM `${progress_history}`",
    )
    weeks_of: dict[int, set[str]] = {}
    for r in rows:
        weeks_of.setdefault(r["user_id"], set()).add(r["snapshot_date"].isoformat())
    big_class = {k[2] for k in history(services_here(), WEEKS[0]) if k[1] == BIG_TAG}
    assert big_class and all(weeks_of[u] == set(WEEKS) for u in big_class)
    assert weeks_of[MOVER] == set(WEEKS)  # moved class at week 1, still one student
    assert weeks_of[DROPOUT] == {WEEKS[0]}
    mover_tags = {w: {k[1] for k in history(services_here(), w) if k[2] == MOVER} for w in (WEEKS[0], WEEKS[3])}
    assert mover_tags == {WEEKS[0]: {SMALL_TAG}, WEEKS[3]: {OTHER_TAG}}
    report = warehouse.query(
        services_here(),
        "SELECT COUNT(DISTINCT snapshot_date) AS weeks FROM `${report_student_week}` WHERE user_id = @u",
        u=min(big_class),
    )
    assert report[0]["weeks"] == len(WEEKS)  # the dashboards see one continuous series


def test_no_cpf_reaches_shards_tables_or_logs_on_v3(stack: LocalStack) -> None:
    if stack.cademi_api != "v3":
        stack.switch_cademi_api("v3")
        run(stack, 3)
    gcs_root = stack.workdir / "gcs"
    leaked = [p for p in gcs_root.rglob("*") if p.is_file() and CPF_PREFIX.encode() in p.read_bytes()]
    assert not leaked
    for log in (stack.workdir / "logs").glob("*.log"):
        if log.name.startswith("cademi-simulator"):
            continue
        assert CPF_PREFIX not in log.read_text(errors="replace"), log.name
    students = warehouse.query(services_here(), "SELECT * FROM `${students}`")
    assert students and not any(CPF_PREFIX in json.dumps(r, default=str) for r in students)
    assert any(r["celular"] for r in students)  # the phone tutors need came with users.read_personal


def test_the_tag_exists_check_of_add_tag_works_on_v3(stack: LocalStack) -> None:
    if stack.cademi_api != "v3":
        stack.switch_cademi_api("v3")
    stack.admin().reset()
    answer = slash_command(stack, f"adicionar {UNREGISTERED_TAG} analista 2027-08 2027-08-02")
    assert "registrada" in answer.json()["text"], answer.text
    assert stack.admin().counters()["v3/tags"] >= 1  # the existence check asked v3
    answer = slash_command(stack, "adicionar 123456 analista 2027-09 2027-09-06")
    assert "não existe na Cademi" in answer.json()["text"]
