"""Fast unit tests: Cademi response parsing, paths, the rate limiter and settings (no network)."""

from __future__ import annotations

import copy
import itertools
import threading
import time
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from progress_monitor.cademi.ratelimit import RateLimiter, late_tolerance
from progress_monitor.cademi.v1 import cursor_of, parse_progress, parse_student, parse_total, user_path
from progress_monitor.cademi.v3 import FIELDS, CademiV3Client
from progress_monitor.commands import cademi_check, options
from progress_monitor.commands.cademi_check import ContractReport, check_contract
from progress_monitor.errors import CademiMalformedError
from progress_monitor.settings import Settings, SettingsError
from tests.unit.offline import ManualClock, offline_services


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("41.7%", 41.7), ("0%", 0.0), ("100%", 100.0), (" 12,5 % ", 12.5), ("7", 7.0), (33, 33.0), (12.5, 12.5)],
)
def test_parse_total_accepts_percentages(raw: object, expected: float) -> None:
    assert parse_total(raw) == expected


@pytest.mark.parametrize("raw", ["", "abc", "41.7%%", "-3%", "100.1%", "1e3", None, True, [], "NaN%"])
def test_parse_total_refuses_malformed_values_instead_of_zero(raw: object) -> None:
    with pytest.raises(CademiMalformedError):
        parse_total(raw)


def test_parse_progress_keeps_assistidas_and_completas() -> None:
    progress = parse_progress({"progresso": {"total": "41.7%", "assistidas": 7, "completas": 5, "aulas": []}})
    assert (progress.total, progress.assistidas, progress.completas) == (41.7, 7, 5)


@pytest.mark.parametrize(
    "progresso",
    [
        None,
        {"total": "10%", "assistidas": "7", "completas": 5},
        {"total": "10%", "assistidas": 7},
        {"total": "10%", "assistidas": -1, "completas": 0},
        {"total": "10%", "assistidas": True, "completas": 0},
    ],
)
def test_parse_progress_refuses_bad_counts(progresso: object) -> None:
    with pytest.raises(CademiMalformedError):
        parse_progress({"progresso": progresso})


def test_parse_student_drops_cpf_and_login_auto() -> None:
    student = parse_student(
        {
            "id": 1051,
            "nome": "Joana C",
            "email": "joana+ds@example.com",
            "doc": "123.123.123-12",
            "login_auto": "https://x/auth/login?crstk=abc",
            "celular": None,
            "gratis": False,
            "criado_em": "2020-01-12 19:59:20",
        }
    )
    text = repr(student) + str(student.__dict__)
    assert student.user_id == 1051 and student.email == "joana+ds@example.com"
    assert "123.123.123-12" not in text and "crstk" not in text and "login_auto" not in text


@pytest.mark.parametrize("item", [{}, {"id": 0}, {"id": "abc"}, {"id": True}, "x", {"id": -5}])
def test_parse_student_requires_a_positive_id(item: object) -> None:
    with pytest.raises(CademiMalformedError):
        parse_student(item)


def test_cursor_is_taken_from_the_url_and_its_host_ignored() -> None:
    assert cursor_of("http://membros.dvp/api/v1/usuario/lista_por_tag/1?cursor=XYZ") == "XYZ"
    assert cursor_of("https://evil.example/steal?cursor=abc&x=1") == "abc"
    assert cursor_of(None) is None and cursor_of("") is None and cursor_of("http://h/p?page=2") is None


def test_emails_are_url_encoded_in_paths() -> None:
    assert user_path("joana+ds@example.com") == "joana%2Bds%40example.com"
    assert user_path("a/b@x.com") == "a%2Fb%40x.com"
    assert user_path(1051) == "1051"


def test_rate_limiter_spaces_starts_by_the_tighter_budget() -> None:
    clock = ManualClock()
    limiter = RateLimiter(per_second=2, per_minute=60, safety=0.0, clock=clock.time, sleep=clock.sleep)
    starts = []
    for _ in range(5):
        limiter.acquire()
        starts.append(clock.time())
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(gap == pytest.approx(1.0) for gap in gaps)  # 60/min binds before 2/s


def test_rate_limiter_never_admits_more_than_the_budget_across_threads() -> None:
    """80 calls from 8 threads at 50/s: unlimited they would start within milliseconds of each other."""
    limiter = RateLimiter(per_second=50, per_minute=3000, safety=0.0)
    stamps: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(10):
            limiter.acquire()
            with lock:
                stamps.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stamps.sort()
    assert len(stamps) == 80
    # Evenly spaced starts: every one-second window holds at most 50 (one more if a thread was descheduled
    # between its slot and its stamp), and the 80 starts span at least 79 intervals of 20 ms.
    busiest = max(sum(1 for s in stamps[i:] if s - start < 1.0) for i, start in enumerate(stamps))
    assert busiest <= 51
    assert stamps[-1] - stamps[0] >= 79 * 0.020 * 0.97


def test_settings_from_env_parses_and_validates() -> None:
    settings = Settings.from_env(
        {"CADEMI_RATE_PER_SECOND": "5", "SECRETS_BACKEND": "env", "CADEMI_API_KEY": "s3cr3t-value"}
    )
    assert settings.cademi_rate_per_second == 5.0
    assert settings.local_secrets["CADEMI_API_KEY"] == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(settings)
    assert Settings.from_env({}).cademi_rate_per_second == 2.0 and Settings.from_env({}).rate_is_production
    with pytest.raises(SettingsError, match="CADEMI_WORKERS"):
        Settings.from_env({"CADEMI_WORKERS": "many"})
    with pytest.raises(SettingsError, match="https"):
        Settings.from_env({"CADEMI_BASE_URL": "http://cademi.example.com/api/v1"})


def test_rate_limiter_widens_its_spacing_after_a_breach() -> None:
    clock = ManualClock()
    limiter = RateLimiter(per_second=2, per_minute=120, safety=0.0, clock=clock.time, sleep=clock.sleep)
    limiter.acquire()
    limiter.breached()
    starts = []
    for _ in range(4):
        limiter.acquire()
        starts.append(clock.time())
    assert [b - a for a, b in itertools.pairwise(starts)] == pytest.approx([0.75] * 3)  # 1.5 x 0.5 s


def tolerance(cfg: Settings) -> float:
    return late_tolerance(cfg.cademi_rate_per_second, cfg.cademi_rate_per_minute, cfg.cademi_interval_s)


def test_a_budget_slot_may_be_late_by_half_the_safety_slack_whatever_the_rate() -> None:
    assert tolerance(Settings()) == pytest.approx(0.015)  # 2 req/s, 120 req/min, 3 %
    assert tolerance(Settings(cademi_rate_per_second=150, cademi_rate_per_minute=9000)) == pytest.approx(0.015)
    # The minute binds (100 req/s allowed, 120 req/min): half the minute's slack, 0.9 s, not the second's 25 s.
    assert tolerance(Settings(cademi_rate_per_second=100)) == pytest.approx(0.9)
    with pytest.raises(SettingsError, match="CADEMI_RATE_SAFETY"):  # no slack: every slot missed, no call ever
        Settings.from_env({"CADEMI_RATE_SAFETY": "0"})


@given(
    per_second=st.integers(1, 500),
    per_minute=st.integers(1, 30_000),
    safety=st.floats(0.001, 0.999),
    late=st.floats(0, 1),
)
def test_a_slot_used_late_within_its_tolerance_never_crowds_either_window(
    per_second: int, per_minute: int, safety: float, late: float
) -> None:
    """Every accepted budget lets a slot start a little late; and however late within that, the calls a window
    allows and one more, spaced as the budget spaces them, still span more than the window (by the other half)."""
    env = {"CADEMI_RATE_PER_SECOND": str(per_second), "CADEMI_RATE_PER_MINUTE": str(per_minute)}
    cfg = Settings.from_env({**env, "CADEMI_RATE_SAFETY": repr(safety)})
    allowed, interval = tolerance(cfg), cfg.cademi_interval_s
    assert allowed > 0
    lateness = late * allowed  # the first of those calls late by this much, the last on time
    for window, calls in ((1.0, per_second), (60.0, per_minute)):
        first_to_last = calls * interval  # the first and the last of `calls + 1` calls, `calls` gaps apart
        assert first_to_last - lateness >= window + allowed - 1e-9


def test_a_fractional_rate_budget_is_refused() -> None:
    """A window holds whole calls: 1.5 req/s would space calls 0.69 s apart, two in a second Cademi allows one."""
    for name in ("CADEMI_RATE_PER_SECOND", "CADEMI_RATE_PER_MINUTE"):
        with pytest.raises(SettingsError, match=name):
            Settings.from_env({name: "1.5"})


def test_the_api_version_and_its_base_url_must_agree() -> None:
    v3 = "https://api.cademi.com.br/api/v3"
    assert Settings.from_env({"CADEMI_API_VERSION": "v3", "CADEMI_BASE_URL": v3}).cademi_api_version == "v3"
    for env in (
        {"CADEMI_API_VERSION": "v3"},  # still the v1 base URL
        {"CADEMI_API_VERSION": "v1", "CADEMI_BASE_URL": v3},
        {"CADEMI_API_VERSION": "v2"},
    ):
        with pytest.raises(SettingsError, match="CADEMI_"):
            Settings.from_env(env)


# -- where `response_url` replies may go -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "prefix",
    [
        "https://hooks.slack.com",  # would admit https://hooks.slack.com.evil.example/…
        "https://hooks.slack.com/commands",
        "https://hooks.slack.com:443",
        "https:///",
        "https://",
        "http://hooks.slack.com/",  # plain http
        "http://localhost:8080/response/",  # plain http is only the local stand-in on 127.0.0.1
        "http://127.0.0.1.evil.example/response/",
        "https://user@hooks.slack.com/",
        "https://hooks.slack.com/?x=/",
        "ftp://hooks.slack.com/",
    ],
)
def test_a_response_url_prefix_must_end_its_host_with_a_slash_and_be_https(prefix: str) -> None:
    with pytest.raises(SettingsError, match="SLACK_RESPONSE_URL_PREFIX"):
        Settings.from_env({"SLACK_RESPONSE_URL_PREFIX": prefix})


def test_only_urls_under_the_prefix_over_https_are_replied_to() -> None:
    slack = Settings.from_env({})
    assert slack.slack_response_url_prefix == "https://hooks.slack.com/"
    assert slack.slack_response_url_ok("https://hooks.slack.com/commands/T0/1/abc")
    for url in (
        "https://hooks.slack.com.evil.example/commands/T0/1/abc",
        "https://hooks.slack.com:8443/commands/T0/1/abc",
        "http://hooks.slack.com/commands/T0/1/abc",
        "https://hooks.slack.com/commands/../../x",
        "https://hooks.slack.com/commands/T0/1/abc\r\nHost: evil.example",
        "https://hooks.slack.com/commands/T0/1/ab c",
        "https://hooks.slack.com/commands/T0/1/ábc",
        "https://hooks.slack.com/" + "a" * 500,
        None,
        ["https://hooks.slack.com/commands/T0/1/abc"],
    ):
        assert not slack.slack_response_url_ok(url), url
    # a prefix set without validation (Settings built in code) cannot widen the check either
    assert not Settings(slack_response_url_prefix="https://hooks.slack.com").slack_response_url_ok(
        "https://hooks.slack.com.evil.example/x"
    )
    assert not Settings(slack_response_url_prefix="http://hooks.slack.com/").slack_response_url_ok(
        "http://hooks.slack.com/x"
    )


def test_the_local_stacks_stand_in_is_the_one_plain_http_prefix() -> None:
    local = Settings.from_env({"SLACK_RESPONSE_URL_PREFIX": "http://127.0.0.1:8123/response/"})
    assert local.slack_response_url_ok("http://127.0.0.1:8123/response/lista-a")
    assert not local.slack_response_url_ok("http://127.0.0.1:8124/response/lista-a")
    assert not local.slack_response_url_ok("http://127.0.0.1:8123/other")


# -- the v3 contract check on hostile documents ------------------------------------------------------------------


class CannedCademi:
    """What check_contract calls of the v3 client (`_get`), answering canned documents."""

    def __init__(self, openapi: Any, capabilities: Any) -> None:
        self.answers = {"/openapi.json": openapi, "/capabilities": capabilities}

    def _get(self, path: str) -> Any:
        return copy.deepcopy(self.answers[path])


def good_openapi() -> dict[str, Any]:
    schemas = {
        s.name: {"type": "object", "properties": {name: {"type": "string"} for name in s.properties.values()}}
        for s in (FIELDS.user, FIELDS.progress)
    }
    return {"openapi": "3.1.0", "components": {"schemas": schemas}}


def good_capabilities() -> dict[str, Any]:
    return {"data": {"permissions": list(FIELDS.permissions), "rate_limits": {"per_second": 2}}}


def check(openapi: Any, capabilities: Any) -> ContractReport:
    return check_contract(cast(CademiV3Client, CannedCademi(openapi, capabilities)))


def planted(path: tuple[str, ...], value: Any, document: dict[str, Any] | None = None) -> dict[str, Any]:
    document = document or good_openapi()
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return document


def test_the_contract_check_passes_a_good_contract_and_names_absent_fields() -> None:
    assert check(good_openapi(), good_capabilities()).ok
    report = check(planted(("components", "schemas", "User", "properties"), {"id": {}}), good_capabilities())
    assert not report.ok and report.fields["User.id (id)"] and not report.fields["User.email (email)"]
    absent = check({"openapi": "3.1.0"}, {"data": {}})  # absent names are a mismatch (exit 1), never a pass
    assert not absent.ok and not any(absent.fields.values()) and len(absent.missing_permissions) == 4


@pytest.mark.parametrize(
    ("openapi", "capabilities", "what"),
    [
        ([], good_capabilities(), "openapi.json is list"),
        ("openapi", good_capabilities(), "openapi.json is str"),
        (None, good_capabilities(), "openapi.json is NoneType"),
        (planted(("components",), None), good_capabilities(), "components is NoneType"),
        (planted(("components",), ""), good_capabilities(), "components is str"),
        (planted(("components",), []), good_capabilities(), "components is list"),
        (planted(("components", "schemas"), "User ProgressItem"), good_capabilities(), "schemas is str"),
        (planted(("components", "schemas"), []), good_capabilities(), "schemas is list"),
        (planted(("components", "schemas", "User"), "id name email"), good_capabilities(), "User is str"),
        (planted(("components", "schemas", "ProgressItem", "properties"), []), good_capabilities(), "properties"),
        (planted(("components", "schemas", "User", "properties"), ""), good_capabilities(), "properties is str"),
        (
            planted(("components", "schemas", "User", "properties"), "id name email phone created_at last_access_at"),
            good_capabilities(),
            "schemas.User.properties is str",
        ),
        (good_openapi(), [], "capabilities is list"),
        (good_openapi(), {"data": "users.read"}, "data is str"),
        (good_openapi(), {"data": None}, "data is NoneType"),
        # a string holding every name passed by substring match before
        (good_openapi(), {"data": {"permissions": " ".join(FIELDS.permissions)}}, "permissions"),
        (good_openapi(), {"data": {"permissions": {p: True for p in FIELDS.permissions}}}, "permissions"),
        (good_openapi(), {"data": {"permissions": [*FIELDS.permissions, 7]}}, "permissions"),
        (good_openapi(), {"data": {"permissions": None}}, "permissions"),
    ],
)
def test_a_document_of_the_wrong_shape_is_unreadable_never_a_pass(openapi: Any, capabilities: Any, what: str) -> None:
    with pytest.raises(CademiMalformedError, match=what):
        check(openapi, capabilities)


def test_the_check_command_exits_2_on_a_wrong_type_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    answers: dict[str, Any] = {"openapi": good_openapi(), "capabilities": good_capabilities()}

    class FakeV3:
        @staticmethod
        def from_settings(*args: Any) -> CannedCademi:
            return CannedCademi(answers["openapi"], answers["capabilities"])

    monkeypatch.setattr(cademi_check, "CademiV3Client", FakeV3)
    monkeypatch.setattr(cademi_check, "get_secret", lambda *args: "ck_test_key")
    monkeypatch.setattr(options, "build", lambda *_: offline_services(Settings.from_env()))
    monkeypatch.setenv("CADEMI_API_VERSION", "v3")
    monkeypatch.setenv("CADEMI_BASE_URL", "https://api.cademi.com.br/api/v3")
    assert cademi_check.main([]) == 0
    assert "the mapping matches" in capsys.readouterr().out
    answers["capabilities"] = {"data": {"permissions": " ".join(FIELDS.permissions)}}
    assert cademi_check.main([]) == 2
    out = capsys.readouterr().out
    assert out.startswith("the contract could not be read: ") and "permissions" in out and "Traceback" not in out
    answers["capabilities"] = good_capabilities()
    answers["openapi"] = planted(("components", "schemas"), None)
    assert cademi_check.main([]) == 2
    unreadable = "the contract could not be read: openapi.json components.schemas is NoneType, not an object\n"
    assert capsys.readouterr().out == unreadable
    answers["openapi"] = planted(("components", "schemas", "User", "properties"), {})
    assert cademi_check.main([]) == 1
    assert "MISMATCH" in capsys.readouterr().out
