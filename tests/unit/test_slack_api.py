"""Slack's rate limit, redirects and rotated secrets, over real HTTP against the Slack stand-in run in-process.

The stand-in (devstack/slack_standin.py) listens on 127.0.0.1 in a thread of the test process; each test gets a
fresh State. Secret Manager is the one thing played: `secret_store._read_secret_manager` (the call to the Secret
Manager client) is replaced by a read of a dict the test rotates, counting reads. The "env" backend cannot
express a rotation the process has not seen yet: it has no cache (it reads `Settings.local_secrets` at every
call), which is exactly what the fresh reads bypass in the cloud.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from flask import Request, Response
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.test import EnvironBuilder

from devstack.slack_standin import SlackStandin, StandinServer, State
from progress_monitor.errors import (
    SLACK_AUTH_CODES,
    Kind,
    SecretUnavailableError,
    SlackRefusedError,
    SlackUnavailableError,
    classify,
)
from progress_monitor.platform import secret_store
from progress_monitor.services import Services
from progress_monitor.settings import SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, Settings
from progress_monitor.slack import signing
from progress_monitor.slack.web import (
    DEFAULT_RETRY_AFTER_S,
    MAX_RETRY_AFTER_S,
    RATE_LIMIT_RETRIES,
    SlackClient,
    respond,
)
from tests.unit.offline import offline_services

TOKEN, NEW_TOKEN = "xoxb-old-token", "xoxb-new-token"
CHANNEL = "C0TUTORES"
TEAM, USER = "TESCOLA01", "UCOORD01"


@dataclass
class Sleeps:
    """The injected sleep: records each wait instead of waiting."""

    waits: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@dataclass
class Standin:
    server: StandinServer
    record_dir: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def api(self) -> SlackStandin:
        return SlackStandin(self.base_url)

    def reset(self) -> None:
        self.server.state = State(TOKEN, self.record_dir)

    def client(self, sleeps: Sleeps, token: str | Callable[[bool], str] = TOKEN) -> SlackClient:
        return SlackClient(f"{self.base_url}/api", token, timeout_s=5, sleep=sleeps)

    def attempts(self, method: str) -> list[dict[str, Any]]:
        return [a for a in self.api.attempts() if a["method"] == method]


@pytest.fixture(scope="module")
def standin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standin]:
    record_dir = tmp_path_factory.mktemp("slack")
    server = StandinServer(0, State(TOKEN, record_dir))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield Standin(server, record_dir)
    server.shutdown()
    server.server_close()


@pytest.fixture
def standin(standin_server: Standin) -> Standin:
    standin_server.reset()
    return standin_server


class StoredSecrets:
    """Secret Manager as the test sees it: the stored values (rotated by the test) and every read made."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = dict(values)
        self.reads: list[str] = []
        self.down = False

    def read(self, project: str, name: str) -> str:
        self.reads.append(name)
        if self.down:
            raise SecretUnavailableError(f"cannot read secret projects/{project}/secrets/{name}: ServiceUnavailable")
        return self.values[name]

    def count(self, env_name: str) -> int:
        return self.reads.count(secret_store.secret_id(env_name))


def install(monkeypatch: pytest.MonkeyPatch, values: dict[str, str]) -> StoredSecrets:
    stored = StoredSecrets({secret_store.secret_id(k): v for k, v in values.items()})
    monkeypatch.setattr(secret_store, "_cache", {})
    monkeypatch.setattr(secret_store, "_read_secret_manager", stored.read)
    return stored


def cloud_settings(**overrides: Any) -> Settings:
    return Settings(secrets_backend="secret_manager", gcp_project="escola", **overrides)


# -- Slack's rate limit ---------------------------------------------------------------------------------------

# One rate-limited answer: how Slack says it, and the Retry-After header (None: no header).
Style = st.sampled_from(["429", "rate_limited", "ratelimited"])
RateLimit = st.tuples(Style, st.one_of(st.none(), st.integers(0, 2 * int(MAX_RETRY_AFTER_S))))


def plan(standin: Standin, method: str, answers: list[tuple[str, int | None]]) -> None:
    for style, retry_after in answers:
        status, error = (429, "ratelimited") if style == "429" else (200, style)
        standin.api.fail(method, status, 1, error=error, retry_after=retry_after)


def expected_waits(answers: list[tuple[str, int | None]]) -> tuple[list[float], float | None]:
    """The model: waits slept, then the Retry-After of the rate limit raised (None: the call succeeds)."""
    waits: list[float] = []
    for i, (_, retry_after) in enumerate(answers):
        wait = DEFAULT_RETRY_AFTER_S if retry_after is None else float(retry_after)
        if i >= RATE_LIMIT_RETRIES or wait > MAX_RETRY_AFTER_S:
            return waits, wait
        waits.append(wait)
    return waits, None


@settings(max_examples=40, deadline=None)
@given(answers=st.lists(RateLimit, max_size=4))
def test_a_rate_limit_is_waited_out_as_slack_says_then_left_to_the_redelivery(
    standin_server: Standin, answers: list[tuple[str, int | None]]
) -> None:
    standin_server.reset()
    plan(standin_server, "chat.postMessage", answers)
    sleeps = Sleeps()
    waits, raised = expected_waits(answers)
    client = standin_server.client(sleeps)
    if raised is None:
        assert client.post_message(CHANNEL, "oi", [])
        assert len(standin_server.api.messages()) == 1
    else:
        with pytest.raises(SlackUnavailableError) as caught:
            client.post_message(CHANNEL, "oi", [])
        assert caught.value.retry_after == raised
        assert classify(caught.value) is Kind.TRANSIENT
        assert standin_server.api.messages() == []
    assert sleeps.waits == waits
    assert len(standin_server.attempts("chat.postMessage")) == len(waits) + 1


def test_rate_limited_in_the_body_is_retried_not_refused(standin: Standin) -> None:
    """Slack's `rate_limited` (HTTP 200) used to be read as a permanent refusal."""
    standin.api.fail("chat.update", 200, 2, error="rate_limited", retry_after=3)
    sleeps = Sleeps()
    client = standin.client(sleeps)
    ts = client.post_message(CHANNEL, "v1", [])
    client.update_message(CHANNEL, ts, "v2", [])
    assert sleeps.waits == [3.0, 3.0]
    assert [m["text"] for m in standin.api.messages()] == ["v2"]


def test_a_retry_after_beyond_the_cap_is_not_slept_but_carried(standin: Standin) -> None:
    standin.api.fail("chat.postMessage", 429, 1, error="ratelimited", retry_after=120)
    sleeps = Sleeps()
    with pytest.raises(SlackUnavailableError) as caught:
        standin.client(sleeps).post_message(CHANNEL, "oi", [])
    assert (sleeps.waits, caught.value.retry_after) == ([], 120.0)
    assert len(standin.attempts("chat.postMessage")) == 1


@pytest.mark.parametrize(("offset_s", "low", "high"), [(-3600, 0.0, 0.0), (8, 4.0, 8.0)])
def test_retry_after_as_an_http_date(standin: Standin, offset_s: int, low: float, high: float) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=offset_s), usegmt=True)
    standin.api.fail("chat.postMessage", 429, 1, error="ratelimited", retry_after=when)
    sleeps = Sleeps()
    standin.client(sleeps).post_message(CHANNEL, "oi", [])
    assert len(sleeps.waits) == 1 and low <= sleeps.waits[0] <= high


def test_other_failures_keep_their_old_sorting(standin: Standin) -> None:
    """A 503 is transient without an in-process wait (Pub/Sub retries it); a refusal is never retried."""
    sleeps = Sleeps()
    standin.api.fail("chat.postMessage", 503, 1, retry_after=1)
    with pytest.raises(SlackUnavailableError) as caught:
        standin.client(sleeps).post_message(CHANNEL, "oi", [])
    assert caught.value.retry_after is None
    standin.api.missing(CHANNEL)
    with pytest.raises(SlackRefusedError, match="channel_not_found"):
        standin.client(sleeps).post_message(CHANNEL, "oi", [])
    assert sleeps.waits == []
    assert len(standin.attempts("chat.postMessage")) == 2


# -- response_url ---------------------------------------------------------------------------------------------


def test_a_response_url_429_is_waited_out_then_carried(standin: Standin) -> None:
    sleeps = Sleeps()
    standin.api.fail("response_url", 429, 2, retry_after=2)
    respond(standin.api.response_url("a"), {"text": "lista"}, sleep=sleeps)
    assert sleeps.waits == [2.0, 2.0]
    assert [r["body"] for r in standin.api.responses()] == [{"text": "lista"}]
    standin.api.fail("response_url", 429, 1, retry_after=45)
    with pytest.raises(SlackUnavailableError) as caught:
        respond(standin.api.response_url("b"), {"text": "lista"}, sleep=sleeps)
    assert caught.value.retry_after == 45.0 and sleeps.waits == [2.0, 2.0]


def recording(seen: list[tuple[str, str]]) -> type[BaseHTTPRequestHandler]:
    """A redirect's target: records every request whatever its method."""

    class Target(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _record(self) -> None:
            seen.append((self.command, self.path))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = do_PUT = do_HEAD = _record

    return Target


@pytest.fixture
def target() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    seen: list[tuple[str, str]] = []
    handler = recording(seen)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/collect", seen
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirecting_response_url_is_refused_and_never_followed(
    standin: Standin, target: tuple[str, list[tuple[str, str]]], status: int
) -> None:
    url, seen = target
    standin.api.redirect("elsewhere", url, status)
    with pytest.raises(SlackRefusedError) as caught:
        respond(standin.api.response_url("elsewhere"), {"text": "Aluna 201"}, sleep=Sleeps())
    assert caught.value.code == f"response_url_http_{status}"
    assert classify(caught.value) is Kind.PERMANENT
    assert seen == []
    assert standin.api.responses() == []


# -- a rotated bot token --------------------------------------------------------------------------------------


@pytest.fixture
def cloud(standin: Standin, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Services, StoredSecrets]]:
    stored = install(monkeypatch, {SLACK_BOT_TOKEN: TOKEN})
    yield offline_services(cloud_settings(slack_api_url=f"{standin.base_url}/api")), stored


def test_a_renewed_token_is_read_again_once_and_used_at_once(
    standin: Standin, cloud: tuple[Services, StoredSecrets]
) -> None:
    svc, stored = cloud
    svc.slack().post_message(CHANNEL, "antes", [])
    stored.values[secret_store.secret_id(SLACK_BOT_TOKEN)] = NEW_TOKEN  # renewed in Secret Manager ...
    standin.api.rotate_token(NEW_TOKEN)  # ... and the old one revoked at Slack
    svc.slack().post_message(CHANNEL, "depois", [])
    svc.slack().post_message(CHANNEL, "e mais", [])
    assert stored.count(SLACK_BOT_TOKEN) == 2  # the first read, then one fresh read; the next call uses it
    outcomes = [a["error"] for a in standin.attempts("chat.postMessage")]
    assert outcomes == [None, "invalid_auth", None, None]
    assert sorted(m["text"] for m in standin.api.messages()) == ["antes", "depois", "e mais"]


def test_a_token_still_refused_after_the_fresh_read_is_a_refusal(
    standin: Standin, cloud: tuple[Services, StoredSecrets]
) -> None:
    svc, stored = cloud
    standin.api.rotate_token("xoxb-nobody-told-us")  # not renewed in Secret Manager
    with pytest.raises(SlackRefusedError, match="invalid_auth"):
        svc.slack().post_message(CHANNEL, "oi", [])
    assert stored.count(SLACK_BOT_TOKEN) == 2
    assert len(standin.attempts("chat.postMessage")) == 1  # the same token is not sent twice
    stored.values[secret_store.secret_id(SLACK_BOT_TOKEN)] = NEW_TOKEN  # renewed, but not the one Slack has
    with pytest.raises(SlackRefusedError, match="invalid_auth"):
        svc.slack().post_message(CHANNEL, "oi", [])
    assert stored.count(SLACK_BOT_TOKEN) == 3  # one fresh read per call, never a loop
    assert [a["error"] for a in standin.attempts("chat.postMessage")] == ["invalid_auth"] * 3
    assert standin.api.messages() == []


@pytest.mark.parametrize("code", sorted(SLACK_AUTH_CODES))
def test_every_refusal_of_the_token_reads_it_again(
    standin: Standin, cloud: tuple[Services, StoredSecrets], code: str
) -> None:
    svc, stored = cloud
    svc.slack().post_message(CHANNEL, "antes", [])
    stored.values[secret_store.secret_id(SLACK_BOT_TOKEN)] = NEW_TOKEN
    standin.api.rotate_token(NEW_TOKEN)
    standin.api.fail("chat.postMessage", 200, 1, error=code)  # how Slack refuses the old one this time
    svc.slack().post_message(CHANNEL, "depois", [])
    assert stored.count(SLACK_BOT_TOKEN) == 2
    assert [a["error"] for a in standin.attempts("chat.postMessage")] == [None, code, None]


def test_other_refusals_and_unreadable_tokens_do_not_read_again(
    standin: Standin, cloud: tuple[Services, StoredSecrets]
) -> None:
    svc, stored = cloud
    standin.api.fail("chat.postMessage", 200, 1, error="not_in_channel")
    with pytest.raises(SlackRefusedError, match="not_in_channel"):
        svc.slack().post_message(CHANNEL, "oi", [])
    assert stored.count(SLACK_BOT_TOKEN) == 1
    standin.api.rotate_token(NEW_TOKEN)
    stored.down = True  # Slack refuses the token and Secret Manager cannot say whether it was renewed
    with pytest.raises(SlackUnavailableError, match="token unavailable"):
        svc.slack().post_message(CHANNEL, "oi", [])


def test_a_fresh_read_bypasses_the_cache_and_a_failed_one_keeps_it(monkeypatch: pytest.MonkeyPatch) -> None:
    stored = install(monkeypatch, {SLACK_BOT_TOKEN: TOKEN})
    cfg = cloud_settings()
    assert [secret_store.get_secret(cfg, SLACK_BOT_TOKEN) for _ in range(3)] == [TOKEN] * 3
    stored.values[secret_store.secret_id(SLACK_BOT_TOKEN)] = NEW_TOKEN
    assert secret_store.get_secret(cfg, SLACK_BOT_TOKEN) == TOKEN  # cached
    assert secret_store.get_secret(cfg, SLACK_BOT_TOKEN, fresh=True) == NEW_TOKEN
    assert secret_store.get_secret(cfg, SLACK_BOT_TOKEN) == NEW_TOKEN
    stored.down = True
    with pytest.raises(SecretUnavailableError):
        secret_store.get_secret(cfg, SLACK_BOT_TOKEN, fresh=True)
    assert secret_store.get_secret(cfg, SLACK_BOT_TOKEN) == NEW_TOKEN
    assert stored.count(SLACK_BOT_TOKEN) == 3


# -- a rotated signing secret ---------------------------------------------------------------------------------

OLD_SECRET, NEW_SECRET, FORGED = "old-signing-secret", "new-signing-secret", "not-the-secret"


def signed_request(secret: str, body: str = "command=%2Fturma&text=alunos", timestamp: int | None = None) -> Request:
    sent_at = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{sent_at}:{body}".encode(), hashlib.sha256).hexdigest()
    headers = {"X-Slack-Request-Timestamp": sent_at, "X-Slack-Signature": "v0=" + digest}
    builder = EnvironBuilder(
        method="POST", data=body, headers=list(headers.items()), content_type="application/x-www-form-urlencoded"
    )
    return Request(builder.get_environ())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def signing_world(monkeypatch: pytest.MonkeyPatch) -> tuple[Settings, StoredSecrets, Clock]:
    stored = install(monkeypatch, {SLACK_SIGNING_SECRET: OLD_SECRET})
    clock = Clock()
    monkeypatch.setattr(signing, "_signing_secret_rereads", signing.RereadWindow(60.0, clock))
    return cloud_settings(slack_team_id=TEAM, slack_allowed_users=USER), stored, clock


def verified(cfg: Settings, request: Request) -> bool:
    outcome = signing.verified_slack_body(request, cfg)
    assert isinstance(outcome, bytes) or (isinstance(outcome, Response) and outcome.status_code == 401)
    return isinstance(outcome, bytes)


def test_a_rotated_signing_secret_is_read_again_and_then_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, stored, _ = signing_world(monkeypatch)
    assert verified(cfg, signed_request(OLD_SECRET))
    stored.values[secret_store.secret_id(SLACK_SIGNING_SECRET)] = NEW_SECRET
    assert verified(cfg, signed_request(NEW_SECRET))
    assert verified(cfg, signed_request(NEW_SECRET))
    assert not verified(cfg, signed_request(OLD_SECRET))  # the old secret no longer verifies
    assert stored.count(SLACK_SIGNING_SECRET) == 2


def test_malformed_or_stale_signatures_never_read_the_secret_again(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, stored, _ = signing_world(monkeypatch)
    stale = signed_request(FORGED, timestamp=int(time.time()) - 3600)
    unsigned = Request(EnvironBuilder(method="POST", data="text=x").get_environ())
    assert not verified(cfg, stale) and not verified(cfg, unsigned)
    assert stored.count(SLACK_SIGNING_SECRET) == 1


@settings(max_examples=60, deadline=None)
@given(gaps=st.lists(st.floats(0, 130, allow_nan=False), min_size=1, max_size=12))
def test_forged_requests_read_the_secret_at_most_once_a_minute(gaps: list[float]) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        cfg, stored, clock = signing_world(monkeypatch)
        expected, last = 0, None
        for gap in gaps:
            clock.now += gap
            if last is None or clock.now - last >= 60.0:
                expected, last = expected + 1, clock.now
            assert not verified(cfg, signed_request(FORGED))
        assert stored.count(SLACK_SIGNING_SECRET) == 1 + expected  # the first, cached read, then the windows


def test_a_window_spent_by_a_forgery_delays_a_rotation_by_at_most_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, stored, clock = signing_world(monkeypatch)
    assert not verified(cfg, signed_request(FORGED))  # spends the window (and reads the unchanged secret)
    stored.values[secret_store.secret_id(SLACK_SIGNING_SECRET)] = NEW_SECRET
    clock.now += 30
    assert not verified(cfg, signed_request(NEW_SECRET))
    clock.now += 30
    assert verified(cfg, signed_request(NEW_SECRET))
    assert stored.count(SLACK_SIGNING_SECRET) == 3
