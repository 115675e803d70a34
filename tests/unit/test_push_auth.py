"""The local stack's push authentication (devstack.push_auth): the token the relay mints for a push
subscription's declared audience, and the check the fronts make as Cloud Run does."""

from __future__ import annotations

import jwt
import pytest

from devstack.push_auth import ALGORITHM, ISSUER, mint, refusal, relay_endpoint, target_of

SERVICE = "http://127.0.0.1:9101"
ENDPOINT = f"{SERVICE}/projects/local-project/topics/weekly-schedule"
PUSHER = "pubsub-push@local-project.iam.gserviceaccount.com"
NOW = 1_750_000_000.0
INVOKERS = frozenset({PUSHER})  # Terraform's roles/run.invoker on the pushed functions
WRONG_AUDIENCE = (401, "the token's audience is not this service's URL")


def bearer(token: str) -> str:
    return f"Bearer {token}"


@pytest.mark.parametrize("audience", [SERVICE, f"{SERVICE}/"])
def test_a_token_for_the_service_url_is_admitted(audience: str) -> None:
    assert refusal(bearer(mint(audience, PUSHER, NOW)), [SERVICE], NOW + 60, INVOKERS) is None


@pytest.mark.parametrize(
    "audience",
    [ENDPOINT, "http://127.0.0.1:9102", "https://127.0.0.1:9101"],
    ids=["push endpoint with its path (Pub/Sub's default)", "another service", "another scheme"],
)
def test_a_token_for_another_audience_is_refused_401(audience: str) -> None:
    assert refusal(bearer(mint(audience, PUSHER, NOW)), [SERVICE], NOW + 60, INVOKERS) == WRONG_AUDIENCE


@pytest.mark.parametrize("header", [None, "", "Bearer ", "Basic dXNlcjpwdw=="])
def test_a_push_without_an_identity_token_is_refused_403(header: str | None) -> None:
    assert refusal(header, [SERVICE], NOW, INVOKERS) == (403, "no identity token")


def test_a_valid_token_of_an_identity_without_the_invoker_role_is_refused_403() -> None:
    token = bearer(mint(SERVICE, "intruder@local-project.iam.gserviceaccount.com", NOW))
    assert refusal(token, [SERVICE], NOW + 60, INVOKERS) == (403, "the token's identity may not invoke this service")


def test_a_token_not_signed_with_the_key_expired_or_from_another_issuer_is_refused_401() -> None:
    claims = {"iss": ISSUER, "aud": SERVICE, "email": PUSHER, "iat": int(NOW), "exp": int(NOW) + 3600}
    forged = jwt.encode(claims, "another-key-of-at-least-32-bytes!", algorithm=ALGORITHM)
    assert refusal(bearer(forged), [SERVICE], NOW, INVOKERS) == (401, "invalid identity token: InvalidSignatureError")
    assert refusal(bearer(mint(SERVICE, PUSHER, NOW)), [SERVICE], NOW + 3600, INVOKERS) == (
        401,
        "expired identity token",
    )
    unsigned = jwt.encode(claims, None, algorithm="none")
    assert refusal(bearer(unsigned), [SERVICE], NOW, INVOKERS) == (401, "invalid identity token: InvalidAlgorithmError")
    assert refusal(bearer("not.a.jwt"), [SERVICE], NOW, INVOKERS) == (401, "invalid identity token: DecodeError")


def test_the_relay_endpoint_stands_for_the_push_endpoint() -> None:
    relayed = relay_endpoint("http://127.0.0.1:9000", ENDPOINT)
    assert relayed == "http://127.0.0.1:9000/127.0.0.1:9101/projects/local-project/topics/weekly-schedule"
    assert target_of(relayed.removeprefix("http://127.0.0.1:9000")) == ENDPOINT
