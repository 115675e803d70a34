"""What add_tag accepts from people and from Slack: form fields, CSRF tokens, Slack request signatures."""

from __future__ import annotations

import hashlib
import hmac
from datetime import date
from typing import Any
from urllib.parse import parse_qs, urlencode

import pytest

from progress_monitor.add_tag.identity import CSRF_TTL_S, csrf_token, csrf_valid
from progress_monitor.add_tag.registry import NewTag, parse_fields
from progress_monitor.settings import Settings
from progress_monitor.slack.signing import slack_signature_valid
from tests.unit.offline import offline_services

TRACKS = {"analista", "cientista"}
TODAY = date(2026, 11, 25)
GOOD = {"tag_id": "5012", "track": "analista", "turma": "2026-03", "start_date": "2026-03-02"}


@pytest.mark.parametrize("start", ["2026-03-02", "02/03/2026", " 2026-03-02 "])
def test_good_fields_parse_in_both_date_styles(start: str) -> None:
    tag, errors = parse_fields({**GOOD, "start_date": start}, TRACKS, TODAY)
    assert errors == {} and tag == NewTag(5012, "analista", "2026-03", date(2026, 3, 2))


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"tag_id": ""}, "tag_id", "obrigatório"),
        ({"tag_id": "50a"}, "tag_id", "número"),
        ({"tag_id": "0"}, "tag_id", "número"),
        ({"tag_id": "1234567890"}, "tag_id", "9 dígitos"),
        ({"tag_id": "5" * 65}, "tag_id", "longo demais"),
        ({"track": "engenheiro"}, "track", "trilhas cadastradas"),
        ({"turma": "2026-13"}, "turma", "AAAA-MM"),
        ({"turma": "03/2026"}, "turma", "AAAA-MM"),
        ({"start_date": "2026-02-30"}, "start_date", "data inválida"),
        ({"start_date": "30/02/2026"}, "start_date", "data inválida"),
        ({"start_date": "2014-12-31"}, "start_date", "parece errada"),
        ({"start_date": "2028-01-01"}, "start_date", "parece errada"),
        ({"start_date": ["2026-03-02"]}, "start_date", "obrigatório"),
    ],
)
def test_each_bad_field_gets_its_own_portuguese_message(change: dict[str, Any], field: str, words: str) -> None:
    tag, errors = parse_fields({**GOOD, **change}, TRACKS, TODAY)
    assert tag is None and set(errors) == {field} and words in errors[field]


def test_every_missing_field_is_reported_at_once() -> None:
    tag, errors = parse_fields({}, TRACKS, TODAY)
    assert tag is None and set(errors) == {"tag_id", "track", "turma", "start_date"}


# -- CSRF tokens -------------------------------------------------------------------------------------------

SECRET = "csrf-secret"
ISSUED = 1_800_000_000.0


def test_a_fresh_token_is_valid_for_its_identity() -> None:
    token = csrf_token(SECRET, "ana@escola.com", now=ISSUED)
    assert csrf_valid(SECRET, "ana@escola.com", token, now=ISSUED + 60)
    assert csrf_valid(SECRET, "ana@escola.com", token, now=ISSUED + CSRF_TTL_S)


@pytest.mark.parametrize(
    ("identity", "secret", "now"),
    [
        ("ana@escola.com", SECRET, ISSUED + CSRF_TTL_S + 1),  # expired
        ("ana@escola.com", SECRET, ISSUED - 5),  # issued in the future
        ("bruno@escola.com", SECRET, ISSUED + 60),  # someone else's page
        ("ana@escola.com", "other-secret", ISSUED + 60),  # another deployment's secret
    ],
)
def test_a_token_is_refused_out_of_its_time_identity_or_secret(identity: str, secret: str, now: float) -> None:
    token = csrf_token(SECRET, "ana@escola.com", now=ISSUED)
    assert not csrf_valid(secret, identity, token, now=now)


def test_a_tampered_or_malformed_token_is_refused() -> None:
    token = csrf_token(SECRET, "ana@escola.com", now=ISSUED)
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    for bad in (flipped, "", "x" * 201, "not-base64!", None, 42, csrf_token(SECRET, "ana@escola.com", ISSUED + 1)[:-1]):
        assert not csrf_valid(SECRET, "ana@escola.com", bad, now=ISSUED + 60)


# -- Slack signatures -------------------------------------------------------------------------------------

SIGNING = "slack-signing-secret"
NOW = 1_800_000_000
BODY = urlencode({"command": "/turma", "text": "adicionar 5012 analista 2026-03 02/03/2026", "user_name": "ana"})


def signed(body: str, timestamp: int = NOW, secret: str = SIGNING) -> dict[str, str]:
    base = f"v0:{timestamp}:{body}".encode()
    signature = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": signature}


def test_a_signed_request_is_accepted_within_the_skew() -> None:
    assert slack_signature_valid(SIGNING, signed(BODY), BODY.encode(), 300, now=NOW + 299)
    assert slack_signature_valid(SIGNING, signed(BODY), BODY.encode(), 300, now=NOW - 299)


def test_a_replayed_request_outside_the_skew_is_refused() -> None:
    assert not slack_signature_valid(SIGNING, signed(BODY), BODY.encode(), 300, now=NOW + 301)


def test_the_signature_covers_the_raw_body_not_a_re_encoding() -> None:
    # The same form fields re-encoded (another order, %20 for +) no longer match what Slack signed.
    fields = {k: v[0] for k, v in parse_qs(BODY).items()}
    reencoded = urlencode(dict(reversed(list(fields.items()))))
    assert parse_qs(reencoded) == parse_qs(BODY) and reencoded != BODY
    assert not slack_signature_valid(SIGNING, signed(BODY), reencoded.encode(), 300, now=NOW)
    assert not slack_signature_valid(SIGNING, signed(BODY), (BODY + "&x=1").encode(), 300, now=NOW)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Slack-Request-Timestamp": str(NOW)},
        {"X-Slack-Signature": signed(BODY)["X-Slack-Signature"]},
        {**signed(BODY), "X-Slack-Request-Timestamp": "soon"},
        {**signed(BODY), "X-Slack-Signature": signed(BODY)["X-Slack-Signature"].replace("v0=", "v1=")},
        signed(BODY, secret="another-secret"),
        signed(BODY, timestamp=NOW + 1) | {"X-Slack-Request-Timestamp": str(NOW)},
    ],
)
def test_missing_or_wrong_signature_headers_are_refused(headers: dict[str, str]) -> None:
    assert not slack_signature_valid(SIGNING, headers, BODY.encode(), 300, now=NOW)


@pytest.mark.parametrize("timestamp", ["²", "١٧٠٠٠٠٠٠٠٠", "１７００", "1700000000\n", "-1", ""])
def test_a_slack_timestamp_that_is_not_ascii_digits_is_refused_without_an_error(timestamp: str) -> None:
    headers = {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": "v0=" + "0" * 64}
    assert slack_signature_valid("secret", headers, b"text=x", max_skew_s=300) is False


def test_slack_and_form_fail_closed_without_their_allow_lists() -> None:
    assert Settings().slack_config_error() is not None
    assert Settings(slack_team_id="TESCOLA01").slack_config_error() is not None
    assert Settings(slack_team_id="TESCOLA01", slack_allowed_users="u01, UANA0001 ,x").slack_users == {"UANA0001"}
    assert Settings(slack_team_id="TESCOLA01", slack_allowed_users="UANA0001").slack_config_error() is None
    iap_without_audience = Settings(form_allowed_domain="escola.local")
    assert "IAP_AUDIENCE" in (iap_without_audience.form_config_error() or "")
    assert Settings(form_allowed_domain="escola.local", iap_audience="/projects/1/x").form_config_error() is None


def test_a_secret_hiccup_is_not_cached_for_the_instances_life() -> None:
    """The first request finds Secret Manager failing: that request cannot check tags, the next one can."""
    from progress_monitor.add_tag import registry as registries

    registries.reset_instance_registry()
    try:
        missing = offline_services(Settings(secrets_backend="env", local_secrets={}))
        assert registries.instance_registry(missing).cademi is None
        present = offline_services(Settings(secrets_backend="env", local_secrets={"CADEMI_API_KEY": "k"}))
        registry = registries.instance_registry(present)
        assert registry.cademi is not None and registries.instance_registry(present) is registry
    finally:
        registries.reset_instance_registry()
