"""Terraform itself on infra/terraform: `init`, `validate`, `plan` and `show -json` with stand-in providers.

The providers cannot be downloaded here; tests/tf_standin/ serves their schemas over Terraform's plugin
protocol, from a filesystem mirror, so Terraform does all of its own evaluation of the real configuration
with the example variables: types, references, functions, `for_each` keys and values, exported attributes.
The plan is a first apply's: no state, every computed attribute unknown until apply. The evaluator that the
fast checks run on (tests/tf_eval.py) must agree with it (tests/tf_standin/agree.py).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests import tf_eval
from tests.test_terraform import ROOT, TF
from tests.tf_eval import Config
from tests.tf_standin.agree import disagreements
from tests.tf_standin.plan import StandIns, Terraform, install_mirror

TOOL_VENV = ROOT / ".venv-tfschema"
STANDIN_SCHEMAS = TOOL_VENV / "standin-schemas.json"
STANDIN_PYTHON = TOOL_VENV / "bin" / "python"


@cache
def standin_schemas() -> dict[str, Any]:
    assert STANDIN_SCHEMAS.exists(), "`make test` builds the stand-in's schemas (.venv-tfschema); run it through make"
    loaded: dict[str, Any] = json.loads(STANDIN_SCHEMAS.read_text())
    return loaded


def terraform(work: Path, python: Path = STANDIN_PYTHON) -> Terraform:
    """Terraform on a copy of infra/terraform (edit `.config` before `init`), providers from a fresh mirror."""
    install_mirror(standin_schemas(), python, work / "mirror")
    return Terraform.prepare(ROOT, work, work / "mirror")


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`init` and `validate` start the providers as installed from the mirror (go-plugin's handshake and TLS
    included); the plan then reattaches to the same stand-ins kept running, which spares the twelve provider
    starts a plan makes (about 10 s on this machine) and changes nothing Terraform evaluates."""
    tf = terraform(tmp_path_factory.mktemp("plan"))
    tf.init()
    tf.validate()
    running = StandIns(tf.mirror).start_all(STANDIN_PYTHON)
    try:
        tf.env["TF_REATTACH_PROVIDERS"] = running.reattach()
        return tf.plan()
    finally:
        running.stop()


def _change(plan: dict[str, Any], address: str) -> dict[str, Any]:
    found: dict[str, Any] = next(rc["change"] for rc in plan["resource_changes"] if rc["address"] == address)
    return found


def test_terraform_plans_a_first_apply_that_creates_every_resource(plan: dict[str, Any]) -> None:
    managed = [rc for rc in plan["resource_changes"] if rc["mode"] == "managed"]
    assert (plan["errored"], plan["complete"], plan["applyable"]) == (False, True, True)
    assert {tuple(rc["change"]["actions"]) for rc in managed} == {("create",)}
    assert {rc["provider_name"] for rc in managed} == {
        f"registry.terraform.io/{source}" for source in ("hashicorp/google", "hashicorp/google-beta", "hashicorp/time")
    }


def test_the_evaluator_resolves_every_instance_and_value_terraform_plans(plan: dict[str, Any]) -> None:
    assert disagreements(Config.load(TF), plan) == []


def test_the_agreement_fails_on_an_evaluator_that_resolves_a_function_unlike_terraform(
    plan: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planted: the evaluator's jsonencode as Python writes JSON (spaces, keys in order), as it was before
    Terraform first checked it. Every table's schema and the daily check's message then disagree."""
    monkeypatch.setitem(tf_eval.FUNCTIONS, "jsonencode", lambda config, value: json.dumps(value))
    found = {line.split(":")[0].rsplit(".", 1)[0] for line in disagreements(Config.load(TF), plan)}
    assert found >= {'google_bigquery_table.table["runs"]', "google_cloud_scheduler_job.daily_health.pubsub_target[0]"}


def test_what_only_apply_knows_is_unknown_in_the_plan_as_in_a_first_apply(plan: dict[str, Any]) -> None:
    """The stand-in's plan is a first apply's: a function's URL, and so every push endpoint, is not known."""
    function = _change(plan, 'google_cloudfunctions2_function.fn["extract_tags"]')
    push = _change(plan, 'google_pubsub_subscription.push["extract_tags"]')
    assert function["after_unknown"]["service_config"][0]["uri"] is True
    assert push["after_unknown"]["push_config"][0]["push_endpoint"] is True
    assert push["after_unknown"]["push_config"][0]["oidc_token"][0]["audience"] is True
    # what the configuration sets is known: the function's name from the prefix of the example's variables
    assert function["after"]["name"] == "escola-extract-tags"
