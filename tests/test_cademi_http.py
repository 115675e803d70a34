"""The Cademi client against the simulator over real HTTP: pagination, error classes, retries, limits."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from progress_monitor.cademi.v1 import MAX_PAGES
from progress_monitor.errors import (
    CademiBusinessError,
    CademiConfigError,
    CademiPaginationError,
    CademiUnavailableError,
)
from tests.scenarios import school

pytestmark = pytest.mark.integration
Start = Callable[..., object]


def test_a_tag_of_151_students_yields_151(simulator) -> None:
    sim = simulator(school(n_students=151, products=(101,)))
    client = sim.client()
    students = list(client.iter_tag_students(5001))
    assert len(students) == 151
    assert len({s.user_id for s in students}) == 151
    assert sim.admin.counters()["lista_por_tag"] == 2  # two pages, never a request to the dev host


def test_overlapping_pages_are_deduplicated(simulator) -> None:
    scenario = school(n_students=151, products=(101,))
    scenario["quirks"] = {"overlap_pages": [5001]}
    sim = simulator(scenario)
    ids = [s.user_id for s in sim.client().iter_tag_students(5001)]
    assert sorted(ids) == list(range(1001, 1152))


def test_an_empty_last_page_stops_pagination(simulator) -> None:
    scenario = school(n_students=151, products=(101,))
    scenario["quirks"] = {"empty_last_page": [5001]}
    sim = simulator(scenario)
    assert len(list(sim.client().iter_tag_students(5001))) == 151
    assert sim.admin.counters()["lista_por_tag"] == 3


def test_a_repeated_cursor_stops_pagination(simulator) -> None:
    scenario = school(n_students=151, products=(101,))
    scenario["quirks"] = {"repeat_cursor": [5001]}
    sim = simulator(scenario)
    assert len(list(sim.client().iter_tag_students(5001))) == 151
    assert sim.admin.counters()["lista_por_tag"] == 2


def test_a_cursor_that_never_ends_is_refused_after_the_page_cap(simulator) -> None:
    scenario = school(n_students=3, products=(101,))
    scenario["quirks"] = {"endless_cursor": [5001], "per_page": 2}
    sim = simulator(scenario)
    with pytest.raises(CademiPaginationError, match=f"more than {MAX_PAGES} pages"):
        list(sim.client().iter_tag_students(5001))
    assert sim.admin.counters()["lista_por_tag"] == MAX_PAGES


@pytest.mark.parametrize("code", [403, 405])
def test_configuration_errors_are_not_retried(simulator, code: int) -> None:
    scenario = school()
    scenario["faults"] = [{"path": "/tag", "status": code, "times": 5}]
    sim = simulator(scenario)
    client = sim.client()
    with pytest.raises(CademiConfigError) as info:
        client.list_tags()
    assert info.value.code == code
    assert sim.admin.counters()["faults_fired"] == 1


def test_a_wrong_api_key_is_a_configuration_error(simulator) -> None:
    sim = simulator(school())
    sim.api_key = "wrong-key"
    with pytest.raises(CademiConfigError) as info:
        sim.client().list_tags()
    assert info.value.code == 405
    assert sim.admin.counters()["requests_total"] == 1


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_transient_statuses_are_retried_then_succeed(simulator, status: int) -> None:
    scenario = school()
    scenario["faults"] = [{"path": "/usuario/progresso_por_produto/1001/101", "status": status, "times": 2}]
    sim = simulator(scenario)
    client = sim.client()
    progress = client.progress(1001, 101)
    assert progress.total == 7.5
    assert client.stats.snapshot()["retries"] == 2


def test_retries_are_bounded(simulator) -> None:
    scenario = school()
    scenario["faults"] = [{"path": "/usuario/progresso_por_produto/1001/101", "status": 503, "times": 10}]
    sim = simulator(scenario)
    client = sim.client(max_attempts=3)
    with pytest.raises(CademiUnavailableError, match="3 times"):
        client.progress(1001, 101)
    assert sim.admin.counters()["faults_fired"] == 3


def test_a_non_json_body_is_retried(simulator) -> None:
    scenario = school()
    scenario["faults"] = [{"path_prefix": "/usuario/lista_por_tag/5001", "body": "<html>oops</html>", "times": 1}]
    sim = simulator(scenario)
    client = sim.client()
    assert len(list(client.iter_tag_students(5001))) == 3
    assert client.stats.snapshot()["retries"] == 1


def test_a_hung_response_hits_the_read_timeout(simulator) -> None:
    scenario = school()
    scenario["faults"] = [{"path": "/tag", "delay_ms": 3000, "times": 5}]
    sim = simulator(scenario)
    client = sim.client(read_timeout_s=0.3, max_attempts=2)
    with pytest.raises(CademiUnavailableError, match="timeout"):
        client.list_tags()


def test_a_hang_then_success_is_recovered(simulator) -> None:
    scenario = school()
    scenario["faults"] = [{"path": "/tag", "delay_ms": 3000, "times": 1}]
    sim = simulator(scenario)
    tags = sim.client(read_timeout_s=0.3).list_tags()
    assert [t.tag_id for t in tags] == [5001]


def test_no_access_is_a_business_error(simulator) -> None:
    scenario = school()
    scenario["progress"] = [p for p in scenario["progress"] if (p["user"], p["product"]) != (1001, 102)]
    sim = simulator(scenario)
    with pytest.raises(CademiBusinessError) as info:
        sim.client().progress(1001, 102)
    assert info.value.code == 409 and "acesso" in info.value.msg


def test_emails_with_plus_are_encoded_in_paths(simulator) -> None:
    sim = simulator(school())
    assert sim.client().progress("aluno0+ds@example.com", 101).total == 7.5


@pytest.mark.parametrize("breach", ["429", "429-bare", "409"])
def test_every_breach_style_is_recognised_and_retried(simulator, breach: str) -> None:
    # The simulator allows 5 req/s; a client allowed 1000 req/s breaches it and must recover.
    sim = simulator(school(rate=(5, 300), breach=breach))
    client = sim.client(backoff_base_s=0.2, backoff_cap_s=2.0, max_attempts=6)
    results = [client.progress(1001, 101).total for _ in range(8)]
    assert results == [7.5] * 8
    assert client.stats.snapshot()["rate_limited"] >= 1
    assert sim.admin.counters()["breaches"] == client.stats.snapshot()["rate_limited"]


def test_retry_after_is_honoured(simulator) -> None:
    sim = simulator(school(rate=(2, 120), breach="429"))
    slept: list[float] = []
    # Record instead of sleeping: every retry comes too early on purpose, so each one breaches again.
    client = sim.client(sleep=slept.append, backoff_base_s=0.01, backoff_cap_s=5.0)
    client.progress(1001, 101)
    client.progress(1001, 101)
    with pytest.raises(CademiUnavailableError):
        client.progress(1001, 101)  # third call within one second breaches every attempt
    assert len(slept) == 4 and min(slept) >= 1.0  # jitter alone would be 0.005-0.08 s; Retry-After says 1 s


def test_the_limiter_keeps_the_breach_counter_at_zero(simulator) -> None:
    sim = simulator(school(n_students=60, products=(101, 102, 103, 104, 105), rate=(40, 2400)))
    client = sim.client(rate=(40, 2400))
    from concurrent.futures import ThreadPoolExecutor

    pairs = [(1001 + i, p) for i in range(60) for p in (101, 102, 103, 104, 105)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        totals = list(pool.map(lambda pair: client.progress(*pair).total, pairs))
    assert len(totals) == 300
    counters = sim.admin.counters()
    assert counters["progresso_por_produto"] == 300
    assert counters.get("breaches", 0) == 0


def test_the_api_key_is_sent_raw_without_a_bearer_prefix(simulator) -> None:
    sim = simulator(school())
    client = sim.client()
    sent: list[str] = []
    client._session.hooks["response"].append(lambda r, **_: sent.append(r.request.headers["Authorization"]))
    assert client.list_tags()  # the simulator, like Cademi, accepts only the raw key
    assert sent == [sim.api_key] and not sent[0].startswith("Bearer")
    sim.api_key = "Bearer " + sim.api_key
    with pytest.raises(CademiConfigError):
        sim.client().list_tags()
