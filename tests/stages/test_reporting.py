"""The reporting layer, in process (world.py), on a school built for it, against expectations computed by
hand (see the comments).

Track t1: product 101 due in class week 2, product 102 due in week 4. Both classes start on 2026-06-01, the
first snapshot, so class week = snapshot index. Expected per product, weeks 0..3:
  101: 0, 50, 100, 100        102: 0, 0, 0, 50        track mean: 0, 25, 50, 75
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from cademi_sim.builder import School
from devstack.preview import write_report
from progress_monitor.pipeline import reporting
from progress_monitor.settings import Settings
from tests.stages.world import Servers, World, world_of

pytestmark = pytest.mark.integration
WEEKS = ["2026-06-01", "2026-06-08", "2026-06-15", "2026-06-22"]
A, B, C = 8001, 8002, 8003
# user: (tag memberships [(tag, from, to)], totals of 101 per week, totals of 102 per week)
STUDENTS: dict[int, tuple[list[tuple[int, int, int | None]], list[float], list[float]]] = {
    101: ([(A, 0, None)], [10, 60, 100, 100], [0, 10, 30, 80]),  # w3: 90 vs 75 -> adiantado
    102: ([(A, 0, None)], [0, 50, 100, 100], [0, 0, 0, 50]),  # w3: 75 vs 75 -> no ritmo
    103: ([(A, 0, None)], [0, 30, 60, 100], [0, 0, 0, 20]),  # w3: 60 (-15), still rising -> atrasado
    104: ([(A, 0, None)], [0, 10, 20, 40], [0, 0, 0, 0]),  # w3: 20 (-55) -> em risco by gap
    105: ([(A, 0, None)], [80, 100, 100, 100], [20, 20, 20, 20]),  # 60, 60, 60 (-15), flat twice -> em risco
    106: ([(A, 0, None)], [100, 100, 100, 100], [50, 80, 100, 100]),  # w3: 100 -> concluído
    107: ([(A, 0, None)], [0, 0, 0, 0], [0, 0, 10, 50]),  # 101 always fails: w3 50 vs 50 -> no ritmo, flagged
    108: ([(A, 0, 1), (B, 2, None)], [0, 50, 100, 100], [0, 0, 0, 50]),  # class change A -> B in week 2
    109: ([(A, 0, None)], [50, 90, 100, 100], [0, 0, 20, 20]),  # 25, 45, 60, 60 (-15), flat once -> atrasado
    110: ([(A, 0, 1)], [0, 50, 60, 60], [0, 0, 0, 0]),  # drops out: absent from week 2
    111: ([(B, 0, None)], [0, 50, 100, 100], [0, 0, 0, 50]),
    # Class C: recency and the grace period. 112-115 progress like 103 (w2 atrasado, w3 60 vs 75, rising).
    112: ([(C, 0, None)], [0, 30, 60, 100], [0, 0, 0, 20]),  # last access 06-05: 17 days at w3 -> em risco
    113: ([(C, 0, None)], [0, 30, 60, 100], [0, 0, 0, 20]),  # 06-09 02:30Z is 06-08 in São Paulo: 14 -> em risco
    114: ([(C, 0, None)], [0, 30, 60, 100], [0, 0, 0, 20]),  # 06-09 (naive, school time): 13 days -> atrasado
    115: ([(C, 0, None)], [0, 30, 60, 100], [0, 0, 0, 20]),  # never known (null, then a future date) -> atrasado
    116: ([(C, 3, None)], [0, 0, 0, 0], [0, 0, 0, 0]),  # joins in w3: 0 vs 75 but in the grace week -> no ritmo
}
# What the listing says as `ultimo_acesso_em`, per week (absent: null every week).
LAST_ACCESS: dict[int, list[str | None]] = {
    112: ["2026-05-30 10:00:00", "2026-06-05T10:00:00-03:00", "2026-06-05T10:00:00-03:00", "2026-06-05 10:00:00"],
    113: ["2026-05-30 10:00:00", "2026-06-07 10:00:00", "2026-06-09T02:30:00Z", "2026-06-09T02:30:00Z"],
    114: [None, None, "2026-06-09 23:59:00", None],  # a later listing omitting it erases nothing
    115: [None, None, None, "2027-01-01 10:00:00"],  # a last access in the future is refused, not believed
    116: [None, None, None, "ontem"],  # unreadable: unknown
}
FAILING_USER = 107


def metrics_world() -> dict[str, Any]:
    school = School(WEEKS, api_key="metrics-key")
    school.product(101, "Curso 1")
    school.product(102, "Curso 2")
    school.track("t1", "Trilha 1", {101: 2, 102: 4})
    for tag, nome, turma in ((A, "Turma A", "2026-06"), (B, "Turma B", "2026-07"), (C, "Turma C", "2026-08")):
        school.tag(tag, nome, track="t1", turma=turma)
    for uid, (spans, p101, p102) in STUDENTS.items():
        school.student(
            uid,
            spans,
            celular=f"+55 11 90000-0{uid}",
            last_access=LAST_ACCESS.get(uid, [None] * len(WEEKS)),
            totals={101: p101, 102: p102},
        )
    school.fault(path=f"/usuario/progresso_por_produto/{FAILING_USER}/101", status=503, times=1_000_000)
    return school.build()


@pytest.fixture(scope="module")
def world(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Four weekly runs of the hand-computed school, in process (world.py); the tests read what they left."""
    env = {"PIECE_BUDGET_S": "30", "CADEMI_MAX_ATTEMPTS": "3"}
    with world_of(servers, tmp_path_factory.mktemp("metrics"), metrics_world(), **env) as world:
        for week in range(len(WEEKS)):
            world.run_week(week)
            assert world.rows("SELECT status FROM `${runs}` WHERE run_id = @r", r=WEEKS[week]) == [
                {"status": "succeeded"}
            ]
        yield world


def student(world: World, user: int, week: int) -> dict[str, Any]:
    found = world.rows(
        "SELECT * FROM `${report_student_week}` WHERE user_id = @u AND snapshot_date = @d",
        u=user,
        d=date.fromisoformat(WEEKS[week]),
    )
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize(
    ("user", "actual", "expected", "status"),
    [
        (101, 90.0, 75.0, "adiantado"),
        (102, 75.0, 75.0, "no ritmo"),
        (103, 60.0, 75.0, "atrasado"),
        (104, 20.0, 75.0, "em risco"),
        (105, 60.0, 75.0, "em risco"),  # behind and no increase over the last two snapshots
        (106, 100.0, 75.0, "concluído"),
        (107, 50.0, 50.0, "no ritmo"),  # the failed product is excluded from both means, not counted as 0
        (109, 60.0, 75.0, "atrasado"),  # flat for one snapshot only
        (108, 75.0, 75.0, "no ritmo"),
        (112, 60.0, 75.0, "em risco"),  # behind and 17 days without access
        (113, 60.0, 75.0, "em risco"),  # behind and exactly 14 days (the threshold) in school time
        (114, 60.0, 75.0, "atrasado"),  # behind, 13 days: one short of the threshold
        (115, 60.0, 75.0, "atrasado"),  # behind, last access unknown: recency never guesses
        (116, 0.0, 75.0, "no ritmo"),  # 75 points behind, but in the first 7 days in the class
    ],
)
def test_every_branch_of_the_status_rule(world: World, user: int, actual: float, expected: float, status: str) -> None:
    row = student(world, user, 3)
    assert row["actual"] == pytest.approx(actual)
    assert row["expected"] == pytest.approx(expected)
    assert row["gap"] == pytest.approx(actual - expected)
    assert row["status"] == status


def test_statuses_over_time_and_weeks_behind(world: World) -> None:
    # 103: w1 15 vs 25 (gap -10: no ritmo), w2 30 vs 50 atrasado, w3 atrasado -> behind for 2 weeks
    assert [student(world, 103, w)["status"] for w in range(4)] == ["no ritmo", "no ritmo", "atrasado", "atrasado"]
    assert student(world, 103, 3)["weeks_behind"] == 2
    # 104: w1 5 vs 25 atrasado, w2 10 vs 50 em risco, w3 em risco -> 3 weeks
    assert student(world, 104, 3)["weeks_behind"] == 3
    # 105: w2 60 vs 50 is +10 -> adiantado, so w3 is its first week behind
    assert student(world, 105, 2)["status"] == "adiantado" and student(world, 105, 3)["weeks_behind"] == 1
    assert student(world, 103, 3)["change_since_previous_week"] == pytest.approx(30.0)


@pytest.mark.parametrize(
    ("user", "week", "days", "last_access"),
    [
        (112, 3, 17, "2026-06-05"),
        (113, 2, 7, "2026-06-08"),
        (113, 3, 14, "2026-06-08"),  # an instant in UTC, counted on the school's calendar
        (114, 3, 13, "2026-06-09"),  # naive: school time; kept although week 3's listing omitted it
        (115, 3, None, None),  # future: refused
        (116, 3, None, None),  # unreadable
    ],
)
def test_days_without_access(world: World, user: int, week: int, days: int | None, last_access: str | None) -> None:
    row = student(world, user, week)
    assert row["days_without_access"] == days
    assert (row["last_access_date"].isoformat() if row["last_access_date"] else None) == last_access


def test_the_grace_period_counts_from_the_students_arrival(world: World) -> None:
    # 116 arrived in week 3: day 0 in the class. 108 moved into B in week 2: day 0 then, day 7 (no grace) in w3.
    assert student(world, 116, 3)["days_in_class"] == 0
    assert (student(world, 108, 2)["days_in_class"], student(world, 108, 3)["days_in_class"]) == (0, 7)
    # those present when monitoring began count from the class's start
    assert student(world, 112, 3)["days_in_class"] == 21


def test_recency_moves_a_student_into_risk_only_once_inactive(world: World) -> None:
    # 112 at week 2: behind (30 vs 50) with 10 days without access -> still atrasado; week 3 -> em risco
    assert [student(world, 112, w)["status"] for w in range(4)] == ["no ritmo", "no ritmo", "atrasado", "em risco"]
    assert student(world, 112, 3)["weeks_behind"] == 2


def test_a_failed_extraction_is_flagged_not_zero(world: World) -> None:
    row = student(world, FAILING_USER, 3)
    assert row["products_failed"] == 1 and row["products_ok"] == 1 and row["has_failed_extraction"]
    product = world.rows(
        "SELECT * FROM `${report_product_week}` WHERE user_id = @u AND product_id = 101 AND snapshot_date = @d",
        u=FAILING_USER,
        d=date.fromisoformat(WEEKS[3]),
    )[0]
    assert product["extraction_status"] == "failed" and product["actual"] is None and product["expected"] is None


def test_product_level_expected_progress(world: World) -> None:
    found = world.rows(
        "SELECT snapshot_date, product_id, expected FROM `${report_product_week}` WHERE user_id = 102 "
        "ORDER BY product_id, snapshot_date"
    )
    assert [r["expected"] for r in found] == [0, 50, 100, 100, 0, 0, 0, 50]


def test_class_summary(world: World) -> None:
    summary = world.rows(
        "SELECT * FROM `${report_class_week}` WHERE tag_id = @t AND snapshot_date = @d",
        t=A,
        d=date.fromisoformat(WEEKS[3]),
    )[0]
    # present in week 3: 101-107 and 109 (108 moved to B, 110 dropped out)
    assert summary["students"] == 8
    assert summary["mean_actual"] == pytest.approx((90 + 75 + 60 + 20 + 60 + 100 + 50 + 60) / 8)  # 64.375
    assert summary["mean_expected"] == pytest.approx((7 * 75 + 50) / 8)  # 71.875
    assert summary["share_adiantado"] == pytest.approx(1 / 8)
    assert summary["share_no_ritmo"] == pytest.approx(2 / 8)
    assert summary["share_atrasado"] == pytest.approx(2 / 8)
    assert summary["share_em_risco"] == pytest.approx(2 / 8)
    assert summary["share_concluido"] == pytest.approx(1 / 8)
    assert summary["students_with_failed_extraction"] == 1
    # week 2 (same 8 students): 65, 50, 30, 10, 60, 100, 10, 60 -> mean 48.125
    assert summary["change_mean_actual"] == pytest.approx(64.375 - 48.125)


def test_a_class_change_and_a_dropout(world: World) -> None:
    found = world.rows(
        "SELECT snapshot_date, movement, user_id, from_tag_id, to_tag_id FROM `${report_movements}` ORDER BY user_id"
    )
    movements = [
        (r["snapshot_date"].isoformat(), r["movement"], r["user_id"], r["from_tag_id"], r["to_tag_id"]) for r in found
    ]
    assert movements == [(WEEKS[2], "mudança de turma", 108, A, B), (WEEKS[2], "desistência", 110, A, None)]
    assert (
        student(world, 108, 3)["tag_id"] == B and student(world, 108, 3)["status"] == "no ritmo"
    )  # history followed them


def test_the_tutors_list_holds_only_students_behind_with_contacts(world: World) -> None:
    found = world.rows(
        "SELECT user_id, status, weeks_behind, dias_sem_acessar, celular FROM `${tutor_list}` ORDER BY user_id"
    )
    assert [(r["user_id"], r["status"], r["weeks_behind"], r["dias_sem_acessar"]) for r in found] == [
        (103, "atrasado", 2, None),
        (104, "em risco", 3, None),
        (105, "em risco", 1, None),
        (109, "atrasado", 1, None),
        (112, "em risco", 2, 17),
        (113, "em risco", 2, 14),
        (114, "atrasado", 2, 13),
        (115, "atrasado", 2, None),
    ]
    assert all(r["celular"] for r in found)


def test_run_health(world: World) -> None:
    found = world.rows("SELECT * FROM `${report_run_health}` WHERE is_latest")
    assert len(found) == 1 and found[0]["run_id"] == WEEKS[3] and found[0]["status"] == "succeeded"
    assert found[0]["failed_extractions"] == 1 and found[0]["latest_complete_week"].isoformat() == WEEKS[3]
    assert found[0]["data_age_hours"] is not None


def test_looker_studio_link_names_every_reporting_table() -> None:
    url = reporting.looker_studio_url(Settings(gcp_project="escola-prod", bq_dataset="progress"))
    assert url.startswith("https://lookerstudio.google.com/reporting/create?")
    for table in ("report_class_week", "report_student_week", "report_movements", "report_run_health"):
        assert table in url
    assert "escola-prod" in url


def test_the_html_preview_renders_in_chromium_with_the_key_figures(world: World, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    report = write_report(world.svc, tmp_path / "report.html")
    html = report.read_text()
    assert "<script" not in html and "http" not in html.replace("http://www.w3.org/2000/svg", "")  # offline
    with sync_playwright() as p:
        args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=args)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(report.as_uri())
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            text = page.inner_text("body")
        finally:
            browser.close()
    assert (tmp_path / "report.png").stat().st_size > 10_000
    for figure in (
        "64,4%",
        "71,9%",
        "+16,2 p.p.",
        "Aluna 104",
        "em risco",
        "mudança de turma",
        "desistência",
        "Lista dos tutores",
        "Dias sem acessar",
        "Contatos e resultados",
        "2026-W23: no ritmo → 2026-W24: atrasado → 2026-W25: em risco → 2026-W26: em risco",  # 104's timeline
        "Saúde das execuções",
        "2026-W26",
    ):
        assert figure in text, figure
