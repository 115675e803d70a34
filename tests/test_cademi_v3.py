"""The v3 source against the simulator's v3 over real HTTP: one progress call per student, the same answers as v1."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from progress_monitor.cademi.ratelimit import RateLimiter
from progress_monitor.cademi.v3 import FIELDS, MAX_STUDENT_PAGES, CademiV3Client
from progress_monitor.commands.cademi_check import check_contract
from progress_monitor.contracts.cademi import Progress
from progress_monitor.contracts.messages import ProgressTask
from progress_monitor.contracts.values import RunId
from progress_monitor.errors import (
    CademiBusinessError,
    CademiConfigError,
    CademiMalformedError,
    CademiPaginationError,
)
from progress_monitor.pipeline.extraction import PieceExtraction
from tests.scenarios import school

pytestmark = pytest.mark.integration


def v3_client(sim: Any, key: str | None = None, rate: tuple[float, float] = (1000, 60000)) -> CademiV3Client:
    base = sim.base_url.replace("/api/v1", "/api/v3")
    options: dict[str, Any] = {"backoff_base_s": 0.01, "backoff_cap_s": 1.5, "read_timeout_s": 5.0}
    return CademiV3Client(base, key or f"ck_test_{sim.api_key}", RateLimiter(*rate), **options)


def test_a_class_over_one_page_is_listed_once_each_with_no_cpf(simulator) -> None:
    sim = simulator(school(n_students=230, products=(101,)))
    students = list(v3_client(sim).iter_tag_students(5001))
    assert [s.user_id for s in students] == list(range(1001, 1231))
    assert sim.admin.counters()["v3/users"] == 2  # 200 + 30
    assert students[0].celular == "+55 11 91234-5678"
    assert all("123.456" not in repr(s) for s in students)  # `document` is never read


def test_one_call_per_student_answers_what_v1_answers_for_every_product(simulator) -> None:
    scenario = school(n_students=4, products=(101, 102, 103))
    scenario["access"] = [a for a in scenario["access"] if not (a["user"] == 1002 and a["product"] == 103)]
    scenario["progress"] = [p for p in scenario["progress"] if not (p["user"] == 1002 and p["product"] == 103)]
    scenario["faults"] = [{"path": "/usuario/progresso_por_produto/1003/102", "status": 503, "times": 10**6}]
    sim = simulator(scenario)
    v1, v3 = sim.client(max_attempts=1), v3_client(sim)
    for user in (1001, 1002, 1003, 1004):
        want = v1.student_progress(user, (101, 102, 103))
        got = v3.student_progress(user, (101, 102, 103))
        for product in (101, 102, 103):
            if isinstance(want[product], Progress):
                assert got[product] == want[product], (user, product)
    assert sim.admin.counters()["v3/progress"] == 4
    answers = v3.student_progress(1002, (101, 102, 103))
    assert isinstance(answers[103], CademiBusinessError)  # absent from the student's progress: no access
    failing = v3.student_progress(1003, (101, 102, 103))
    assert isinstance(failing[102], CademiMalformedError) and isinstance(failing[101], Progress)  # failed, not 0


def test_a_wrong_or_missing_key_is_a_configuration_error(simulator) -> None:
    sim = simulator(school())
    with pytest.raises(CademiConfigError) as info:
        v3_client(sim, key="ck_test_wrong").student_progress(1001, (101,))
    assert info.value.code == 401 and "request req_" in info.value.msg  # v3's request id, for Cademi's support


def test_a_429_with_retry_after_is_honoured(simulator) -> None:
    sim = simulator(school(rate=(2, 1000)))
    client = v3_client(sim, rate=(1000, 60000))  # a client budget far above the school's: the API must push back
    answers = [client.student_progress(u, (101, 102)) for u in (1001, 1002, 1003, 1001, 1002)]
    assert all(isinstance(a[101], Progress) for a in answers)
    assert client.stats.snapshot().get("rate_limited", 0) >= 1
    assert sim.admin.counters()["breaches"] >= 1


def test_ids_of_another_shape_are_refused_not_guessed(simulator) -> None:
    scenario = school(n_students=2)
    sim = simulator(scenario)
    client = v3_client(sim)
    from progress_monitor.cademi.v3 import parse_user

    for bad in ("usr_", "usr_0", "usr_12a", "42", "user_42", "usr_٤٢", "usr_42\n", 42):
        with pytest.raises(CademiMalformedError):
            parse_user({"id": bad, "name": "x", "email": "x@example.com"})
    assert [t.tag_id for t in client.list_tags()] == [5001]


def test_the_contract_check_passes_on_our_simulator_and_names_a_planted_mismatch(simulator) -> None:
    sim = simulator(school())
    report = check_contract(v3_client(sim))
    assert report.ok, report.lines()
    assert len(report.fields) == len(FIELDS.user.properties) + len(FIELDS.progress.properties)
    planted = school()
    planted["v3"] = {"openapi_renames": {"percentage": "percent_complete"}, "permissions": ["users.read"]}
    report = check_contract(v3_client(simulator(planted)))
    assert not report.ok
    missing = [name for name, present in report.fields.items() if not present]
    assert missing == ["ProgressItem.percentage (percent)"]
    assert set(report.missing_permissions) == {"progress.read", "tags.read", "users.read_personal"}


def test_a_short_pair_fault_is_a_transient_failure_of_the_call_cleared_by_a_retry(simulator) -> None:
    scenario = school(n_students=1, products=(101, 102))
    scenario["faults"] = [{"path": "/usuario/progresso_por_produto/1001/102", "status": 502, "times": 1}]
    sim = simulator(scenario)
    client = v3_client(sim)
    answers = client.student_progress(1001, (101, 102))
    assert all(isinstance(a, Progress) for a in answers.values())
    assert sim.admin.counters()["v3/progress"] == 2 and client.stats.snapshot()["retries"] == 1


def test_an_endless_progress_cursor_fails_that_students_products_after_a_few_pages(simulator) -> None:
    scenario = school(n_students=3, products=(101, 102))
    scenario["v3"] = {"endless_progress": [1002]}  # pages cycle through 1002's products, the cursor never ends
    sim = simulator(scenario)
    client = v3_client(sim)
    answers = client.student_progress(1002, (101, 102))
    assert all(isinstance(a, CademiPaginationError) for a in answers.values())
    assert str(answers[101]) == f"/users/usr_1002/progress: more than {MAX_STUDENT_PAGES} pages; the cursor never ends"
    assert sim.admin.counters()["v3/progress"] == MAX_STUDENT_PAGES == 10  # not the 200 of a class listing
    assert all(isinstance(a, Progress) for a in client.student_progress(1001, (101, 102)).values())

    # In a piece: that student's products are failed records, the others extracted, the piece completes.
    task = ProgressTask(RunId(date(2026, 3, 2)), 5001, (101, 102))
    piece = PieceExtraction(client, task, (1001, 1002, 1003), budget_s=60, workers=2)
    records = list(piece.records())
    assert piece.next_index is None and len(records) == 6
    failed = {(r.user_id, r.product_id) for r in records if r.status == "failed"}
    assert failed == {(1002, 101), (1002, 102)}
    assert all("more than 10 pages" in (r.error or "") for r in records if r.status == "failed")
    assert all(r.status == "ok" for r in records if r.user_id != 1002)
