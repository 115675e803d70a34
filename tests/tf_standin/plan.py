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
        found = [f"{_where(d)}{d['summary']}: {d.get('detail', '')}" for d in self.diagnostics]
        return f"terraform {self.step} refused: " + ("; ".join(found) if found else self.output[-2000:])


def _where(diagnostic: dict[str, Any]) -> str:
    """`pubsub.tf:70 google_pubsub_subscription.push["x"]: ` (what Terraform says of the error's place)."""
    place = diagnostic.get("range")
    at = f"{place['filename']}:{place['start']['line']} " if place else ""
    return f"{at}{diagnostic.get('address', '')}".strip() + (": " if at or diagnostic.get("address") else "")


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


class StandIns:
    """The stand-ins of a mirror kept running, for many short Terraform runs (TF_REATTACH_PROVIDERS): a run
    then costs about a second instead of starting every provider anew (twice in a validate, more in a plan).
    Only the mutation tests use this; the plan of the configuration itself installs from the mirror."""

    def __init__(self, mirror: Path) -> None:
        self.mirror = mirror
        self.processes: dict[str, subprocess.Popen[str]] = {}
        self.addresses: dict[str, str] = {}

    def start(self, source: str, schema_file: Path, python: Path) -> None:
        """Start (or replace) the stand-in of `source` ("hashicorp/google") serving `schema_file`."""
        if source in self.processes:
            self.processes.pop(source).kill()
        process = subprocess.Popen(
            [str(python), str(PROVIDER), str(schema_file), "--reattach"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.processes[source] = process
        assert process.stdout is not None
        line = process.stdout.readline()  # "1|6|unix|<socket>|grpc|"
        if not line:
            raise TerraformRefused("start", [], f"the stand-in for {source} exited ({process.wait()})")
        self.addresses[source] = line.split("|")[3]

    def start_all(self, python: Path) -> StandIns:
        for schema_file in sorted(self.mirror.glob(f"registry.terraform.io/*/*/*/{PLATFORM}/schema.json")):
            source = "/".join(schema_file.relative_to(self.mirror).parts[1:3])
            self.start(source, schema_file, python)
        return self

    def reattach(self) -> str:
        return json.dumps(
            {
                f"registry.terraform.io/{source}": {
                    "Protocol": "grpc",
                    "ProtocolVersion": 6,
                    "Pid": self.processes[source].pid,
                    "Test": True,
                    "Addr": {"Network": "unix", "String": address},
                }
                for source, address in self.addresses.items()
            }
        )

    def stop(self) -> None:
        for process in self.processes.values():
            process.kill()
            process.wait()
        self.processes.clear()


@dataclass
class Terraform:
    """The terraform binary run in one configuration directory, providers from one mirror (or reattached)."""

    config: Path
    mirror: Path
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def prepare(cls, repo: Path, work: Path, mirror: Path, reattach: str | None = None) -> Terraform:
        work.mkdir(parents=True, exist_ok=True)
        cli_config = work / "terraformrc"
        cli_config.write_text(
            "provider_installation {\n"
            f'  filesystem_mirror {{\n    path    = "{mirror}"\n'
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
        env.pop("TF_REATTACH_PROVIDERS", None)
        if reattach is not None:
            env["TF_REATTACH_PROVIDERS"] = reattach
        return cls(_layout(repo, work), mirror, env)

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
