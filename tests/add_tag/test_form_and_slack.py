"""add_tag: contract tests of both entry points through functions-framework, and a real Chromium filling the
form on the local stack (IAP identity verified with a key pair made for the test)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from functions_framework import create_app
from google.auth import crypt

from devstack.here import services_here
from devstack.stack import LocalStack
from progress_monitor.add_tag import registry as registries
from progress_monitor.add_tag.registry import Registry
from progress_monitor.platform import warehouse
from progress_monitor.slack import signing
from tests.pipeline_world import UNREGISTERED_TAG, WEEKS
from tests.tag_stack import COORDINATOR, STAFF, TEAM, iap_assertion, used_here

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SOURCE = str(ROOT / "functions" / "add_tag" / "main.py")


@pytest.fixture(scope="module")
def stack(add_tag_stack: LocalStack, iap_key: tuple[crypt.Signer, Path]) -> Iterator[LocalStack]:
    with used_here(add_tag_stack, iap_key[1]) as stack:
        yield stack


def registered(tag_id: int) -> list[dict[str, Any]]:
    return warehouse.query(services_here(), "SELECT * FROM `${registered_tags}` WHERE tag_id = @t", t=tag_id)


def count_tags() -> int:
    return int(warehouse.query(services_here(), "SELECT COUNT(*) AS n FROM `${registered_tags}`")[0]["n"])


# -- the form through functions-framework ------------------------------------------------------------------


@pytest.fixture
def form(stack: LocalStack, iap_key: tuple[crypt.Signer, Path]) -> Any:
    client = create_app("add_tag", SOURCE, "http").test_client()
    client.environ_base["HTTP_X_GOOG_IAP_JWT_ASSERTION"] = iap_assertion(iap_key[0], STAFF)
    return client


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match
    return match.group(1)


def post_form(form: Any, **fields: str) -> Any:
    token = csrf_of(form.get("/").get_data(as_text=True))
    return form.post("/", data={"csrf": token, "acao": "adicionar", **fields})


def test_the_form_refuses_requests_without_a_valid_staff_identity(stack: LocalStack, iap_key: Any) -> None:
    client = create_app("add_tag", SOURCE, "http").test_client()
    response = client.get("/")
    assert response.status_code == 401 and "Entre com sua conta Google da escola" in response.get_data(as_text=True)
    forged = iap_assertion(
        crypt.ES256Signer.from_string(
            ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            "test-kid",
        ),
        STAFF,
    )
    assert client.get("/", headers={"X-Goog-IAP-JWT-Assertion": forged}).status_code == 401
    other_app = iap_assertion(iap_key[0], STAFF, audience="/projects/000/apps/other")
    assert client.get("/", headers={"X-Goog-IAP-JWT-Assertion": other_app}).status_code == 401
    outsider = iap_assertion(iap_key[0], "someone@gmail.com", hd=None)
    response = client.get("/", headers={"X-Goog-IAP-JWT-Assertion": outsider})
    assert response.status_code == 403 and "lista da equipe" in response.get_data(as_text=True)
    # An address at the school's domain from a consumer Google account (no Workspace `hd` claim), or from
    # another Workspace, is not staff.
    for hd in (None, "outra.escola"):
        look_alike = iap_assertion(iap_key[0], STAFF, hd=hd)
        assert client.get("/", headers={"X-Goog-IAP-JWT-Assertion": look_alike}).status_code == 403


def test_the_form_fails_closed_without_an_iap_audience(
    stack: LocalStack, iap_key: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an audience any IAP application's token of the organisation would pass: nobody gets in."""
    monkeypatch.setenv("IAP_AUDIENCE", "")
    try:
        client = create_app("add_tag", SOURCE, "http").test_client()
        response = client.get("/", headers={"X-Goog-IAP-JWT-Assertion": iap_assertion(iap_key[0], STAFF)})
        assert response.status_code == 503 and "não está configurado" in response.get_data(as_text=True)
    finally:
        monkeypatch.undo()


def test_get_shows_tracks_and_registered_tags_and_changes_nothing(form: Any) -> None:
    before = count_tags()
    response = form.get("/")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert '<option value="analista"' in html and "7001" in html
    assert (
        response.headers["X-Frame-Options"] == "DENY"
        and "script-src" not in response.headers["Content-Security-Policy"]
        and "default-src 'none'" in response.headers["Content-Security-Policy"]
    )
    assert count_tags() == before


def test_a_post_without_a_valid_csrf_token_is_refused(form: Any) -> None:
    before = count_tags()
    fields = {
        "acao": "adicionar",
        "tag_id": str(UNREGISTERED_TAG),
        "track": "analista",
        "turma": "2027-01",
        "start_date": "2027-01-04",
    }
    assert form.post("/", data=fields).status_code == 403
    assert form.post("/", data={**fields, "csrf": "forged"}).status_code == 403
    assert count_tags() == before


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"tag_id": "", "track": "", "turma": "", "start_date": ""}, "tag_id", "campo obrigatório"),
        (
            {"tag_id": "   ", "track": "analista", "turma": "2027-01", "start_date": "2027-01-04"},
            "tag_id",
            "campo obrigatório",
        ),
        (
            {
                "tag_id": "1; DROP TABLE registered_tags;--",
                "track": "analista",
                "turma": "2027-01",
                "start_date": "2027-01-04",
            },
            "tag_id",
            "apenas o número",
        ),
        (
            {"tag_id": "7999", "track": "analista' OR '1'='1", "turma": "2027-01", "start_date": "2027-01-04"},
            "track",
            "trilhas cadastradas",
        ),
        ({"tag_id": "7999", "track": "analista", "turma": "março 🎓", "start_date": "2027-01-04"}, "turma", "AAAA-MM"),
        ({"tag_id": "7999", "track": "analista", "turma": "2027-13", "start_date": "2027-01-04"}, "turma", "AAAA-MM"),
        (
            {"tag_id": "7999", "track": "analista", "turma": "2027-01", "start_date": "2027-02-30"},
            "start_date",
            "data inválida",
        ),
        (
            {"tag_id": "7" * 10_000, "track": "analista", "turma": "2027-01", "start_date": "2027-01-04"},
            "tag_id",
            "longo demais",
        ),
        (
            {"tag_id": "7999", "track": "analista", "turma": "x" * 10_000, "start_date": "2027-01-04"},
            "turma",
            "longo demais",
        ),
        (
            {"tag_id": "123456", "track": "analista", "turma": "2027-01", "start_date": "2027-01-04"},
            "tag_id",
            "não existe na Cademi",
        ),
        (
            {"tag_id": "7001", "track": "analista", "turma": "2027-01", "start_date": "2027-01-04"},
            "tag_id",
            "já está registrada",
        ),
        (
            {"tag_id": "7999", "track": "analista", "turma": "2026-08", "start_date": "2026-08-03"},
            "turma",
            "já tem a turma 2026-08",
        ),
    ],
)
def test_each_invalid_submission_gets_a_portuguese_field_message_and_nothing_is_inserted(
    form: Any, fields: dict[str, str], field: str, message: str
) -> None:
    before = count_tags()
    response = post_form(form, **fields)
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert re.search(rf'id="erro-{field}">[^<]*{re.escape(message)}', html), html[:3000]
    assert 'aria-invalid="true"' in html
    assert count_tags() == before


def test_hostile_text_is_escaped_when_shown_back(form: Any) -> None:
    response = post_form(
        form, tag_id='"><script>alert(1)</script>', track="analista", turma="2027-01", start_date="2027-01-04"
    )
    html = response.get_data(as_text=True)
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_the_form_deactivates_a_class_softly(form: Any) -> None:
    token = csrf_of(form.get("/").get_data(as_text=True))
    response = form.post("/", data={"csrf": token, "acao": "desativar", "tag_id": "7003"})
    assert response.status_code == 200 and "desativada" in response.get_data(as_text=True)
    row = registered(7003)[0]
    assert row["active"] is False and row["deactivated_by"] == STAFF
    history = warehouse.query(services_here(), "SELECT COUNT(*) AS n FROM `${registered_tags}`")
    assert history[0]["n"] >= 3  # soft: the row stays


def test_cademi_down_gives_a_try_again_answer_and_nothing_inserted(stack: LocalStack, form: Any) -> None:
    stack.admin().add_faults([{"path": "/tag", "status": 503, "times": 2}])
    before = count_tags()
    response = post_form(form, tag_id=str(UNREGISTERED_TAG), track="analista", turma="2027-02", start_date="2027-02-01")
    assert "tente novamente" in response.get_data(as_text=True)
    assert count_tags() == before


def test_two_coordinators_registering_the_same_tag_at_once_make_one_row(stack: LocalStack) -> None:
    results = []
    barrier = threading.Barrier(2)

    def register(who: str) -> None:
        registry = Registry(
            services_here(), registries.instance_registry(services_here()).cademi
        )  # one "instance" each
        barrier.wait()
        results.append(
            registry.register(
                {"tag_id": str(UNREGISTERED_TAG), "track": "cientista", "turma": "2027-03", "start_date": "2027-03-01"},
                who,
                f"req-{who}",
            )
        )

    threads = [threading.Thread(target=register, args=(w,)) for w in ("ana@escola.local", "bia@escola.local")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.ok for r in results) == [False, True]
    loser = next(r for r in results if not r.ok)
    assert "já está registrada" in loser.field_errors["tag_id"]
    rows = registered(UNREGISTERED_TAG)
    assert len(rows) == 1
    # Leave the registry as it was for the browser test.
    warehouse.query(services_here(), "DELETE FROM `${registered_tags}` WHERE tag_id = @t", t=UNREGISTERED_TAG)


# -- Slack -------------------------------------------------------------------------------------------------


def slack_post(
    client: Any,
    stack: LocalStack,
    text: str,
    *,
    ts: int | None = None,
    secret: str | None = None,
    tamper: bool = False,
    headers: dict[str, str] | None = None,
    user_id: str = COORDINATOR,
    team_id: str = TEAM,
) -> Any:
    body = urlencode({"command": "/turma", "text": text, "user_name": "ana", "user_id": user_id, "team_id": team_id})
    timestamp = str(ts if ts is not None else int(time.time()))
    key = (secret or stack.local_secrets["SLACK_SIGNING_SECRET"]).encode()
    signature = "v0=" + hmac.new(key, f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()
    if tamper:
        body = body.replace("ana", "eve")
    sent = headers if headers is not None else {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature}
    return client.post("/", data=body, headers={**sent, "Content-Type": "application/x-www-form-urlencoded"})


@pytest.fixture
def slack(stack: LocalStack) -> Any:
    return create_app("slack_command", SOURCE, "http").test_client()


def test_slack_refuses_unsigned_tampered_stale_and_wrongly_signed_requests(slack: Any, stack: LocalStack) -> None:
    before = count_tags()
    text = f"adicionar {UNREGISTERED_TAG} analista 2027-04 2027-04-05"
    assert slack_post(slack, stack, text, headers={}).status_code == 401
    assert slack_post(slack, stack, text, headers={"X-Slack-Signature": "v0=abc"}).status_code == 401
    assert slack_post(slack, stack, text, secret="not-the-secret").status_code == 401
    assert slack_post(slack, stack, text, tamper=True).status_code == 401
    assert slack_post(slack, stack, text, ts=int(time.time()) - 301).status_code == 401
    assert count_tags() == before


def test_slack_commands_answer_ephemerally_in_portuguese(slack: Any, stack: LocalStack) -> None:
    help_text = slack_post(slack, stack, "ajuda").get_json()
    assert help_text["response_type"] == "ephemeral" and "/turma adicionar" in help_text["text"]
    assert "7001" in slack_post(slack, stack, "listar").get_json()["text"]
    bad = slack_post(slack, stack, "adicionar 🎓 analista 2027-04 2027-04-05").get_json()["text"]
    assert "apenas o número da tag" in bad
    assert "Uso:" in slack_post(slack, stack, "adicionar 7999").get_json()["text"]
    assert "campo" not in slack_post(slack, stack, "").get_json()["text"]  # empty text -> help


def test_a_replayed_slack_request_registers_one_tag(slack: Any, stack: LocalStack) -> None:
    text = f"adicionar {UNREGISTERED_TAG} analista 2027-05 05/05/2027"
    ts = int(time.time())
    first = slack_post(slack, stack, text, ts=ts)
    second = slack_post(slack, stack, text, ts=ts)  # the very same signed request, delivered twice
    assert first.status_code == second.status_code == 200
    assert "registrada" in first.get_json()["text"] and "registrada" in second.get_json()["text"]
    rows = registered(UNREGISTERED_TAG)
    assert (
        len(rows) == 1 and rows[0]["added_by"] == f"slack:{COORDINATOR}" and str(rows[0]["start_date"]) == "2027-05-05"
    )
    answer = slack_post(slack, stack, f"desativar {UNREGISTERED_TAG}").get_json()["text"]
    assert "desativada" in answer and registered(UNREGISTERED_TAG)[0]["active"] is False
    warehouse.query(services_here(), "DELETE FROM `${registered_tags}` WHERE tag_id = @t", t=UNREGISTERED_TAG)


# -- a real browser on the local stack -----------------------------------------------------------------------

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_a_coordinator_registers_a_class_in_chromium(
    stack: LocalStack, iap_key: tuple[crypt.Signer, Path], tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    url = stack.endpoints["functions"]["add_tag"] + "/"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        try:
            # Nobody signed in: refused.
            anonymous = browser.new_page()
            anonymous.goto(url)
            assert "Acesso restrito" in anonymous.content()

            staff = browser.new_context(
                extra_http_headers={"X-Goog-IAP-JWT-Assertion": iap_assertion(iap_key[0], STAFF)}
            )
            page = staff.new_page()
            page.goto(url)
            assert page.get_by_label("Tag da Cademi").is_visible()

            # Nothing filled: every field says what is missing.
            page.get_by_role("button", name="Cadastrar turma").click()
            for field in ("tag_id", "track", "turma", "start_date"):
                assert "campo obrigatório" in page.locator(f"#erro-{field}").inner_text()

            # Each validation error, one at a time.
            def submit(tag: str, track: str, turma: str, start: str) -> None:
                page.get_by_label("Tag da Cademi").fill(tag)
                if track:
                    page.get_by_label("Trilha").select_option(track)
                page.get_by_role("textbox", name=re.compile(r"^Turma")).fill(turma)
                page.get_by_label("Início da turma").fill(start)
                page.get_by_role("button", name="Cadastrar turma").click()

            submit("12ab", "analista", "2026-10", "2026-10-05")
            assert "apenas o número" in page.locator("#erro-tag_id").inner_text()
            assert (
                page.get_by_role("textbox", name=re.compile(r"^Turma")).input_value() == "2026-10"
            )  # what was typed is kept
            submit("424242", "analista", "2026-10", "2026-10-05")
            assert "não existe na Cademi" in page.locator("#erro-tag_id").inner_text()
            submit("7001", "analista", "2026-10", "2026-10-05")
            assert "já está registrada" in page.locator("#erro-tag_id").inner_text()
            submit(str(UNREGISTERED_TAG), "analista", "10/2026", "2026-10-05")
            assert "AAAA-MM" in page.locator("#erro-turma").inner_text()

            # Success: the class appears in the list and in BigQuery.
            submit(str(UNREGISTERED_TAG), "analista", "2026-10", "2026-09-14")
            assert "Turma registrada" in page.locator("#resultado").inner_text()
            assert page.locator("table").get_by_text(str(UNREGISTERED_TAG), exact=True).is_visible()
            page.screenshot(path=str(tmp_path / "form-success.png"), full_page=True)
            rows = registered(UNREGISTERED_TAG)
            assert len(rows) == 1 and rows[0]["added_by"] == STAFF and rows[0]["active"]

            # A forged cross-site form posting to us (no CSRF token) is refused.
            attacker = staff.new_page()
            attacker.set_content(
                f'<form method="post" action="{url}"><input name="acao" value="adicionar">'
                '<input name="tag_id" value="7999"><button>go</button></form>'
            )
            attacker.get_by_role("button", name="go").click()
            attacker.wait_for_load_state()
            assert "Envio recusado" in attacker.content()
        finally:
            browser.close()

    # The next run extracts the new class.
    run_id = stack.trigger(__import__("datetime").date.fromisoformat(WEEKS[1]))
    assert stack.wait_run(run_id, timeout=240)["status"] == "succeeded"
    rows = warehouse.query(
        services_here(), "SELECT COUNT(*) AS n FROM `${progress_history}` WHERE tag_id = @t", t=UNREGISTERED_TAG
    )
    assert rows[0]["n"] == 2  # its one student x the track's two products


# -- hostile inputs: each gets a named answer and changes nothing --------------------------------------------


def registry_state() -> list[tuple[Any, ...]]:
    rows = warehouse.query(services_here(), "SELECT tag_id, active, turma FROM `${registered_tags}` ORDER BY tag_id")
    return [(r["tag_id"], r["active"], r["turma"]) for r in rows]


class CountingStream(io.BytesIO):
    """A request body that counts what the server read of it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk


def chunked_post(client: Any, body: bytes, headers: dict[str, str] | None = None) -> tuple[Any, int]:
    """POST `body` with no Content-Length, as a chunked request reaches the function (gunicorn marks such a
    body's end itself: wsgi.input_terminated)."""
    stream = CountingStream(body)
    response = client.post(
        "/",
        input_stream=stream,
        headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
        environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": "", "HTTP_TRANSFER_ENCODING": "chunked"},
    )
    response.get_data()
    return response, stream.bytes_read


def issued_token(identity: str, issued: str) -> str:
    secret = os.environ["FORM_CSRF_SECRET"].encode()
    mac = hmac.new(secret, f"{identity}|{issued}".encode(), hashlib.sha256).hexdigest()
    return base64.urlsafe_b64encode(f"{issued}.{mac}".encode()).decode()


VALID = {"tag_id": str(UNREGISTERED_TAG), "track": "analista", "turma": "2027-06", "start_date": "2027-06-07"}
# (name, fields replacing the valid ones; None: use the page's CSRF token), expected status, text in the answer.
FORM_HOSTILE: list[tuple[str, dict[str, str], int, str]] = [
    ("no csrf", {"csrf": ""}, 403, "Nada foi alterado"),
    ("csrf of another identity", {"csrf": "@other"}, 403, "Nada foi alterado"),
    ("expired csrf", {"csrf": "@expired"}, 403, "Nada foi alterado"),
    ("csrf with non-ASCII digits", {"csrf": "@unicode"}, 403, "Nada foi alterado"),
    ("csrf not base64", {"csrf": "%%%not-base64%%%"}, 403, "Nada foi alterado"),
    ("formula as tag", {"tag_id": "=1+1"}, 422, "apenas o número"),
    ("arabic-indic digits as tag", {"tag_id": "٧٩٩٩"}, 422, "apenas o número"),
    ("superscript digits as tag", {"tag_id": "²³"}, 422, "apenas o número"),
    ("tag with trailing newline", {"tag_id": f"{UNREGISTERED_TAG}\n\n"}, 200, "registrada"),  # stripped, valid
    ("arabic-indic digits in turma", {"turma": "٢٠٢٧-06"}, 422, "AAAA-MM"),
    ("turma with a newline inside", {"turma": "2027-06\nx"}, 422, "AAAA-MM"),
    ("markup as track", {"track": "<script>alert(1)</script>"}, 422, "trilhas cadastradas"),
    ("sql as date", {"start_date": "2027-06-07'; DELETE FROM x;--"}, 422, "data inválida"),
    ("full-width digits in date", {"start_date": "２０２７-06-07"}, 422, "data inválida"),
    ("unknown action", {"acao": "apagar-tudo"}, 422, "Ação desconhecida"),
]


@pytest.mark.parametrize(("fields", "status", "text"), [c[1:] for c in FORM_HOSTILE], ids=[c[0] for c in FORM_HOSTILE])
def test_hostile_form_posts_get_a_named_answer_and_change_nothing(
    form: Any, fields: dict[str, str], status: int, text: str
) -> None:
    warehouse.query(services_here(), "DELETE FROM `${registered_tags}` WHERE tag_id = @t", t=UNREGISTERED_TAG)
    before = registry_state()
    token = csrf_of(form.get("/").get_data(as_text=True))
    special = {
        "@other": issued_token("someone-else@escola.local", str(int(time.time()))),
        "@expired": issued_token(STAFF, str(int(time.time()) - 5 * 3600)),
        "@unicode": issued_token(STAFF, "١٧٦٤٠٠٠٠٠٠"),
    }
    data = {"csrf": token, "acao": "adicionar", **VALID, **fields}
    data["csrf"] = special.get(data["csrf"], data["csrf"])
    response = form.post("/", data=data)
    html = response.get_data(as_text=True)
    assert response.status_code == status and text in html, re.findall(r'id="erro-[^"]+">[^<]*', html)
    if status == 200:  # the one valid case: exactly one row, then removed again
        assert len(registered(UNREGISTERED_TAG)) == 1
        warehouse.query(services_here(), "DELETE FROM `${registered_tags}` WHERE tag_id = @t", t=UNREGISTERED_TAG)
    assert registry_state() == before


def test_oversized_and_undecodable_form_bodies_are_refused_unread(form: Any) -> None:
    before = registry_state()
    token = csrf_of(form.get("/").get_data(as_text=True))
    big = urlencode({"csrf": token, "acao": "adicionar", **VALID, "pad": "x" * (2 * 1024 * 1024)}).encode()
    response, read = chunked_post(form, big)
    assert response.status_code == 413 and "grande demais" in response.get_data(as_text=True)
    assert read == signing.MAX_BODY + 1  # the stream was capped, not read whole
    response = form.post("/", data=big, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413
    response = form.post("/", data=b"csrf=\xff\xfe&acao=adicionar", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400 and "não pôde ser lido" in response.get_data(as_text=True)
    many = urlencode({"csrf": token, "acao": "adicionar", **{f"f{i}": "x" for i in range(60)}})
    response = form.post("/", data=many, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400
    assert form.put("/", data={"x": "1"}).status_code == 405
    assert registry_state() == before


def signed(body: str, ts: str | None = None, secret: str | None = None) -> dict[str, str]:
    timestamp = ts if ts is not None else str(int(time.time()))
    key = (secret or os.environ["SLACK_SIGNING_SECRET"]).encode()
    mac = hmac.new(key, f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": "v0=" + mac}


def slack_body(text: str, user_id: str = COORDINATOR, team_id: str = TEAM) -> str:
    return urlencode({"command": "/turma", "text": text, "user_id": user_id, "user_name": "ana", "team_id": team_id})


DEACTIVATE = "desativar 7001"
Sign = Callable[[str], dict[str, str]]


def at(offset_s: int) -> Sign:
    return lambda body: signed(body, ts=str(int(time.time()) + offset_s))


def ts(text: str) -> Sign:
    return lambda body: signed(body, ts=text)


# (name, body, how it is signed), expected status, text in the ephemeral answer ("" for a bare 401).
SLACK_HOSTILE: list[tuple[str, str, Sign, int, str]] = [
    ("no signature", slack_body(DEACTIVATE), lambda body: {}, 401, ""),
    ("signature without v0", slack_body(DEACTIVATE), lambda body: {**signed(body), "X-Slack-Signature": "x"}, 401, ""),
    ("wrong secret", slack_body(DEACTIVATE), lambda body: signed(body, secret="not-it"), 401, ""),
    ("stale timestamp", slack_body(DEACTIVATE), at(-400), 401, ""),
    ("future timestamp", slack_body(DEACTIVATE), at(+400), 401, ""),
    ("superscript timestamp", slack_body(DEACTIVATE), ts("²"), 401, ""),
    ("arabic-indic timestamp", slack_body(DEACTIVATE), ts("١٧٠٠٠٠٠٠٠٠"), 401, ""),
    ("another workspace", slack_body(DEACTIVATE, team_id="TOTHER001"), signed, 200, "só funciona no Slack da escola"),
    ("no workspace", slack_body(DEACTIVATE, team_id=""), signed, 200, "só funciona no Slack da escola"),
    ("member not allowed", slack_body(DEACTIVATE, user_id="UGUEST001"), signed, 200, "não tem permissão"),
    ("no member id", slack_body(DEACTIVATE, user_id=""), signed, 200, "não tem permissão"),
    ("allowed id and a newline", slack_body(DEACTIVATE, user_id=COORDINATOR + "\n"), signed, 200, "não tem permissão"),
    ("arabic-indic digits as tag", slack_body("desativar ٧٠٠١"), signed, 200, "Informe o número"),
    ("sql as tag", slack_body("desativar 7001' OR '1'='1"), signed, 200, "Uso:"),
    ("formula as tag", slack_body("adicionar =1+1 analista 2027-04 2027-04-05"), signed, 200, "apenas o número"),
    ("markup as track", slack_body("adicionar 7999 <b>x</b> 2027-04 2027-04-05"), signed, 200, "trilhas cadastradas"),
]


@pytest.mark.parametrize(
    ("body", "sign", "status", "text"), [c[1:] for c in SLACK_HOSTILE], ids=[c[0] for c in SLACK_HOSTILE]
)
def test_hostile_slack_requests_get_a_named_answer_and_change_nothing(
    slack: Any, body: str, sign: Sign, status: int, text: str
) -> None:
    before = registry_state()
    response = slack.post("/", data=body, headers={**sign(body), "Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == status
    if text:
        answer = response.get_json()
        assert answer["response_type"] == "ephemeral" and text in answer["text"], answer
    assert registry_state() == before


def test_oversized_and_undecodable_slack_bodies_are_refused_unread(slack: Any) -> None:
    before = registry_state()
    big = slack_body(DEACTIVATE) + "&pad=" + "x" * (2 * 1024 * 1024)
    response, read = chunked_post(slack, big.encode(), signed(big))
    assert response.status_code == 413 and read == signing.MAX_BODY + 1
    response = slack.post("/", data=big, headers={**signed(big), "Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413
    raw = b"text=desativar+7001&user_id=" + COORDINATOR.encode() + b"&team_id=" + TEAM.encode() + b"&x=\xff"
    timestamp = str(int(time.time()))
    mac = hmac.new(
        os.environ["SLACK_SIGNING_SECRET"].encode(), b"v0:" + timestamp.encode() + b":" + raw, hashlib.sha256
    )
    headers = {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": "v0=" + mac.hexdigest()}
    response = slack.post("/", data=raw, headers={**headers, "Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200 and "ilegível" in response.get_json()["text"]
    assert slack.get("/").status_code == 405
    assert registry_state() == before
