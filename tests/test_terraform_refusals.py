"""What Terraform itself refuses, planted: each refusal names the resource and carries Terraform's own message.

The mutants judged by Terraform (tests/test_terraform_mutants.py, killer `terraform validate` or `terraform
plan`) each go into a copy of infra/terraform, and Terraform must refuse that copy at that step with an error
located in the block the defect was planted in (a `plan` mutant is one `validate` lets through: only the plan
evaluates `for_each` keys, indexes into them, and attributes behind them). The stand-ins keep running between
the runs (reattached), so a run costs a second or two. Bad input of the stand-in itself (a provider that
cannot start, a schema without a type the configuration uses) fails the same way, never skips.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_terraform import ROOT
from tests.test_terraform_mutants import MUTANTS, PLAN, VALIDATE, Mutant
from tests.test_terraform_plan import STANDIN_PYTHON, standin_schemas, terraform
from tests.tf_standin.plan import PLATFORM, StandIns, Terraform, TerraformRefused, install_mirror

MISSING_TYPE = "google_monitoring_notification_channel"
TOP_LEVEL = re.compile(r"^(resource|data|locals|variable|output|module|terraform|provider)\b")
TERRAFORM_MUTANTS = [m for m in MUTANTS if m.killer in (VALIDATE, PLAN)]


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIns]:
    mirror = tmp_path_factory.mktemp("mirror")
    install_mirror(standin_schemas(), STANDIN_PYTHON, mirror)
    running = StandIns(mirror).start_all(STANDIN_PYTHON)
    yield running
    running.stop()


def _plant(tf: Terraform, mutant: Mutant) -> range:
    """The mutant written into the copy; the lines of the top-level block Terraform's error must be in: the
    one it is planted in, or the one it names (`refused_in`: a local is refused where a resource uses it)."""
    path = tf.config / mutant.file
    text = path.read_text()
    assert text.count(mutant.old) == 1, f"{mutant.name}: its text occurs {text.count(mutant.old)} times"
    line = text[: text.index(mutant.old)].count("\n") + 1
    path.write_text(text.replace(mutant.old, mutant.new))
    lines = path.read_text().splitlines()
    if mutant.refused_in is not None:
        line = lines.index(mutant.refused_in + " {") + 1
    starts = [i + 1 for i, text in enumerate(lines) if TOP_LEVEL.match(text)]
    first = max(s for s in starts if s <= line)
    following = [s for s in starts if s > first]
    return range(first, following[0] if following else len(lines) + 1)


def _errors_in(refused: TerraformRefused, file: str, lines: range) -> list[str]:
    return [
        d["summary"]
        for d in refused.diagnostics
        if d["severity"] == "error"
        and d.get("range", {}).get("filename") == file
        and d["range"]["start"]["line"] in lines
    ]


def _refusal(step: str, run: Any) -> TerraformRefused:
    with pytest.raises(TerraformRefused) as refused:
        run()
    assert refused.value.step == step, str(refused.value)
    return refused.value


@pytest.mark.parametrize("mutant", TERRAFORM_MUTANTS, ids=[m.name for m in TERRAFORM_MUTANTS])
def test_terraform_refuses_the_mutant_in_the_block_it_is_planted_in(
    mutant: Mutant, stand_ins: StandIns, tmp_path: Path
) -> None:
    tf = Terraform.prepare(ROOT, tmp_path, stand_ins.mirror, stand_ins.reattach())
    lines = _plant(tf, mutant)
    refused = _refusal("validate", tf.validate) if mutant.killer == VALIDATE else _refusal("plan", tf.plan)
    assert _errors_in(refused, mutant.file, lines), str(refused)


def test_a_schema_without_a_type_the_configuration_uses_is_refused_naming_it(
    stand_ins: StandIns, tmp_path: Path
) -> None:
    schema = copy.deepcopy(standin_schemas()["hashicorp/google"])
    del schema["resource"][MISSING_TYPE]
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    lacking = StandIns(stand_ins.mirror)
    lacking.start("hashicorp/google", tmp_path / "schema.json", STANDIN_PYTHON)
    reattach = json.dumps(json.loads(stand_ins.reattach()) | json.loads(lacking.reattach()))
    try:
        refused = _refusal("validate", Terraform.prepare(ROOT, tmp_path / "work", stand_ins.mirror, reattach).validate)
    finally:
        lacking.stop()
    assert [(d["summary"], d["detail"].splitlines()[0]) for d in refused.diagnostics] == [
        ("Invalid resource type", f'The provider hashicorp/google does not support resource type "{MISSING_TYPE}".')
    ]


def test_a_stand_in_provider_that_cannot_start_fails_the_run_with_terraforms_message(tmp_path: Path) -> None:
    tf = terraform(tmp_path, python=tmp_path / "no-such-python")
    tf.init()
    refused = _refusal("validate", tf.validate)
    assert [d["summary"] for d in refused.diagnostics] == ["Failed to load plugin schemas"]


def test_the_mirror_holds_every_provider_the_configuration_requires(stand_ins: StandIns) -> None:
    held = {p.relative_to(stand_ins.mirror).parts[1:3] for p in stand_ins.mirror.glob(f"*/*/*/*/{PLATFORM}")}
    assert {"/".join(h) for h in held} == {
        "hashicorp/google",
        "hashicorp/google-beta",
        "hashicorp/time",
        "hashicorp/archive",
    }
