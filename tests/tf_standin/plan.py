"""Terraform itself on infra/terraform: `init`, `validate`, `plan`, `show -json`, with the stand-in providers.

Every provider the configuration requires is installed from a filesystem mirror (unpacked layout) whose
executables start tests/tf_standin/provider.py with that provider's schema. Terraform runs in a copy of the
configuration, laid out as in the repository (`<work>/infra/terraform`, with `src` and `functions` linked
beside it) so `path.module/../..` finds the same files, and the repository gets no lock file or `.terraform`.
The variables are those of `terraform.tfvars.example`. A refusal at any step raises `TerraformRefused` with
Terraform's own diagnostics; nothing is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROVIDER = Path(__file__).with_name("provider.py")
PLATFORM = "linux_amd64"
STEP_TIMEOUT_S = 240


@dataclass
class TerraformRefused(Exception):
    """Terraform refused a step: its diagnostics (severity, summary, detail, address) and its raw output."""

    step: str
    diagnostics: list[dict[str, Any]] = field(default_factory=list)
    output: str = ""

    def __str__(self) -> str:
        found = [f"{d.get('address', '')} {d['summary']}: {d.get('detail', '')}".strip() for d in self.diagnostics]
        return f"terraform {self.step} refused: " + ("; ".join(found) if found else self.output[-2000:])


def install_mirror(schemas: dict[str, Any], python: Path, mirror: Path) -> None:
    """One executable per provider in `mirror` (registry.terraform.io/<source>/<version>/linux_amd64/)."""
    for source, schema in schemas.items():
        name = source.split("/")[1]
        directory = mirror / "registry.terraform.io" / source / schema["version"] / PLATFORM
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "schema.json").write_text(json.dumps(schema, separators=(",", ":")))
        executable = directory / f"terraform-provider-{name}_v{schema['version']}"
        executable.write_text(f'#!/bin/sh\nexec "{python}" "{PROVIDER}" "{directory / "schema.json"}"\n')
        executable.chmod(0o755)


def _layout(repo: Path, work: Path) -> Path:
    """`<work>/infra/terraform` holding the configuration and the example's variables."""
    config = work / "infra" / "terraform"
    config.mkdir(parents=True)
    for path in (repo / "infra" / "terraform").glob("*.tf"):
        shutil.copy(path, config / path.name)
    shutil.copy(repo / "infra" / "terraform" / "terraform.tfvars.example", config / "terraform.tfvars")
    for linked in ("src", "functions"):
        (work / linked).symlink_to(repo / linked)
    return config


@dataclass
class Terraform:
    """The terraform binary run in one configuration directory, providers from one mirror."""

    config: Path
    mirror: Path
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def prepare(cls, repo: Path, work: Path, schemas: dict[str, Any], python: Path) -> Terraform:
        install_mirror(schemas, python, work / "mirror")
        cli_config = work / "terraformrc"
        cli_config.write_text(
            "provider_installation {\n"
            f'  filesystem_mirror {{\n    path    = "{work / "mirror"}"\n'
            '    include = ["registry.terraform.io/*/*"]\n  }\n}\n'
        )
        env = {
            **os.environ,
            "TF_CLI_CONFIG_FILE": str(cli_config),
            "TF_IN_AUTOMATION": "1",
            "CHECKPOINT_DISABLE": "1",
            "TF_INPUT": "0",
        }
        env.pop("TF_PLUGIN_CACHE_DIR", None)
        return cls(_layout(repo, work), work / "mirror", env)

    def run(self, step: str, *args: str, json_lines: bool = False) -> str:
        done = subprocess.run(
            ["terraform", f"-chdir={self.config}", step, "-no-color", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            raise TerraformRefused(step, _diagnostics(done.stdout) if json_lines else [], done.stdout + done.stderr)
        return done.stdout

    def init(self) -> None:
        self.run("init", "-input=false", "-backend=false")

    def validate(self) -> None:
        out = self.run("validate", "-json", json_lines=True)
        result = json.loads(out)
        if not result["valid"] or result.get("warning_count", 0):
            raise TerraformRefused("validate", result["diagnostics"], out)

    def plan(self) -> dict[str, Any]:
        """The plan as `terraform show -json` renders it."""
        self.run("plan", "-input=false", "-refresh=false", "-out=plan.bin", "-json", json_lines=True)
        shown: dict[str, Any] = json.loads(self.run("show", "-json", "plan.bin"))
        return shown


def _diagnostics(output: str) -> list[dict[str, Any]]:
    """The diagnostics of `-json` output: one JSON document (validate) or one message per line (plan)."""
    try:
        whole = json.loads(output)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict) and "diagnostics" in whole:
        return list(whole["diagnostics"])
    found = []
    for line in output.splitlines():
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            continue
        if message.get("type") == "diagnostic":
            found.append(message["diagnostic"])
    return found
