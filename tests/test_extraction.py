"""The extraction core against the simulator: records, statuses, pieces and personal data."""

from __future__ import annotations

import json
import re
from datetime import date

import pytest

from progress_monitor.contracts.messages import ProgressTask
from progress_monitor.contracts.values import RunId
from progress_monitor.errors import PermanentError
from progress_monitor.pipeline.extraction import PieceExtraction, ProgressRecord
from tests.scenarios import school

pytestmark = pytest.mark.integration
CPF = re.compile(r"\d{3}\.\d{3}\.\d{3}-\d{2}")


def extract_all(client, tag_id, products, budget_s, workers=3, week="2026-03-02"):
    """Run pieces as the extract stage does: piece 0 freezes the roster, each continuation task travels as
    the JSON of a Pub/Sub message, and every piece reads the same roster."""
    roster = tuple(s.user_id for s in client.iter_tag_students(tag_id))
    task = ProgressTask(RunId(date.fromisoformat(week)), tag_id, tuple(products))
    records: list[ProgressRecord] = []
    pieces = []
    while True:
        piece = PieceExtraction(client, task, roster, budget_s=budget_s, workers=workers)
        records.extend(piece.records())
        pieces.append(piece)
        if piece.next_index is None:
            return records, pieces, roster
        task = ProgressTask.from_json(json.loads(task.next(piece.next_index).encode()))


def key(r: ProgressRecord) -> tuple:
    return (r.tag_id, r.user_id, r.product_id, r.status, r.total, r.assistidas, r.completas, r.error)


def test_records_equal_what_the_api_served(simulator) -> None:
    scenario = school(n_students=5, products=(101, 102, 103))
    scenario["progress"] = [p for p in scenario["progress"] if (p["user"], p["product"]) != (1002, 103)]
    sim = simulator(scenario, week=1)
    records, pieces, roster = extract_all(sim.client(), 5001, [101, 102, 103], budget_s=60, week="2026-03-09")
    assert len(pieces) == 1 and roster == (1001, 1002, 1003, 1004, 1005)
    served = {(p["user"], p["product"]): p for p in scenario["progress"]}
    assert [(r.user_id, r.product_id) for r in records] == [(u, p) for u in range(1001, 1006) for p in (101, 102, 103)]
    for r in records:
        assert r.snapshot_date == date(2026, 3, 9) and r.run_id == "2026-03-09" and r.tag_id == 5001
        if (r.user_id, r.product_id) == (1002, 103):
            assert (r.status, r.total, r.assistidas) == ("no_access", None, None)
            continue
        entry = served[(r.user_id, r.product_id)]
        assert r.status == "ok" and r.error is None
        assert r.total == float(entry["total"][1].rstrip("%"))
        assert (r.assistidas, r.completas) == (entry["assistidas"][1], entry["completas"][1])


def test_a_malformed_total_is_a_failed_record_never_zero(simulator) -> None:
    scenario = school(n_students=2, products=(101, 102))
    scenario["progress"][0]["total"] = ["abc", "150%"]
    sim = simulator(scenario)
    records, _, _ = extract_all(sim.client(), 5001, [101, 102], budget_s=60)
    bad = [r for r in records if (r.user_id, r.product_id) == (1001, 101)]
    assert len(bad) == 1 and bad[0].status == "failed" and bad[0].total is None and "total" in (bad[0].error or "")
    assert all(r.status == "ok" for r in records if r is not bad[0])


def test_a_progress_call_that_keeps_failing_is_recorded_as_failed(simulator) -> None:
    scenario = school(n_students=2, products=(101,))
    scenario["faults"] = [{"path": "/usuario/progresso_por_produto/1002/101", "status": 503, "times": 50}]
    sim = simulator(scenario)
    records, _, _ = extract_all(sim.client(max_attempts=3), 5001, [101], budget_s=60)
    by_user = {r.user_id: r for r in records}
    assert by_user[1001].status == "ok"
    assert by_user[1002].status == "failed" and by_user[1002].total is None and "503" in (by_user[1002].error or "")


def test_pieces_concatenate_to_exactly_the_single_run(simulator) -> None:
    sim = simulator(school(n_students=40, products=(101, 102, 103)))
    single, single_pieces, _ = extract_all(sim.client(), 5001, [101, 102, 103], budget_s=600)
    pieced, pieces, _ = extract_all(sim.client(), 5001, [101, 102, 103], budget_s=0.0)
    assert len(single_pieces) == 1
    assert len(pieces) > 5  # a zero budget still makes progress, one student or so per piece
    assert [key(r) for r in pieced] == [key(r) for r in single]
    assert len({(r.user_id, r.product_id) for r in pieced}) == 120
    assert sum(p.students_done for p in pieces) == 40


def test_later_pieces_do_not_list_the_tag_again(simulator) -> None:
    sim = simulator(school(n_students=10, products=(101,)))
    _, pieces, _ = extract_all(sim.client(), 5001, [101], budget_s=0.0)
    assert len(pieces) == 10  # a zero budget: one student per piece
    assert [p.task.start_index for p in pieces] == list(range(10))
    assert sim.admin.counters()["lista_por_tag"] == 1  # the roster frozen by piece 0 is all they read


def test_no_cpf_or_login_auto_in_records_students_or_logs(simulator, capsys, caplog) -> None:
    scenario = school(n_students=4, products=(101,))
    scenario["faults"] = [{"path": "/usuario/progresso_por_produto/1001/101", "status": 500, "times": 1}]
    sim = simulator(scenario)
    client = sim.client()
    records, _, _ = extract_all(client, 5001, [101], budget_s=60)
    dumped = json.dumps([r.to_json() for r in records]) + repr(list(client.iter_tag_students(5001)))
    dumped += capsys.readouterr().out + caplog.text
    assert len(records) == 4
    assert not CPF.search(dumped)
    assert "crstk" not in dumped and "login_auto" not in dumped and "test-key" not in dumped


def test_a_tag_of_151_students_is_extracted_completely(simulator) -> None:
    sim = simulator(school(n_students=151, products=(101,)))
    records, _, _ = extract_all(sim.client(), 5001, [101], budget_s=600, workers=4)
    assert len(records) == 151 and {r.status for r in records} == {"ok"}


def test_a_task_past_the_end_of_its_roster_is_refused(simulator) -> None:
    sim = simulator(school(n_students=3, products=(101,)))
    task = ProgressTask(RunId(date(2026, 3, 2)), 5001, (101,), piece=1, start_index=3)
    with pytest.raises(PermanentError, match="outside the roster"):
        PieceExtraction(sim.client(), task, (1001, 1002, 1003), budget_s=60)
