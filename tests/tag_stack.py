"""The add_tag stack, shared by the two modules of tests/add_tag/ (their package-scoped fixture): the IAP key
pair made for the test, the form's and Slack's environment, and the environment applied around a module's
tests."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.auth import crypt, jwt

from devstack.stack import LocalStack
from progress_monitor.add_tag import registry as registries
from tests.pipeline_world import world

AUDIENCE = "/projects/000/apps/escola-local"
STAFF = "coordenacao@escola.local"
TEAM, COORDINATOR = "TESCOLA01", "UANA0001"


def make_iap_key(directory: Path) -> tuple[crypt.Signer, Path]:
    """An ES256 key pair: the signer for the test's IAP assertions, the public keys file the form reads."""
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    keys = directory / "keys.json"
    keys.write_text(json.dumps({"test-kid": public}))
    return crypt.ES256Signer.from_string(pem, "test-kid"), keys


def iap_assertion(signer: crypt.Signer, email: str, audience: str = AUDIENCE, hd: str | None = "escola.local") -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"hd": hd} if hd else {}
    claims |= {
        "iss": "https://cloud.google.com/iap",
        "aud": audience,
        "email": email,
        "sub": "accounts.google.com:1",
        "iat": now,
        "exp": now + 600,
    }
    token: bytes = jwt.encode(signer, claims)
    return token.decode()


def form_env(keys_file: Path) -> dict[str, str]:
    return {
        "FORM_AUTH": "iap",
        "IAP_PUBLIC_KEYS_FILE": str(keys_file),
        "IAP_AUDIENCE": AUDIENCE,
        "FORM_ALLOWED_DOMAIN": "escola.local",
        "FORM_ALLOWED_EMAILS": "",
        "SLACK_TEAM_ID": TEAM,
        "SLACK_ALLOWED_USERS": f"{COORDINATOR},UOTHER02",
    }


def start(workdir: Path, keys_file: Path) -> LocalStack:
    scenario = workdir / "scenario.json"
    scenario.write_text(json.dumps(world()))
    return LocalStack.start(workdir, scenario, piece_budget_s=5.0, extra_env=form_env(keys_file))


@contextmanager
def used_here(stack: LocalStack, keys_file: Path) -> Iterator[LocalStack]:
    """The stack's and the form's environment in this process for one module's tests, restored after."""
    saved = dict(os.environ)
    stack.use_here()
    os.environ.update(form_env(keys_file))
    os.environ.update(stack.local_secrets)
    registries.reset_instance_registry()
    try:
        yield stack
    finally:
        os.environ.clear()
        os.environ.update(saved)
        registries.reset_instance_registry()
