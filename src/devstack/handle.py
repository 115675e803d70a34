"""A handle on a local stack, started or attached: its workdir, endpoints and processes, the environment its
functions run with, one process stopped, killed or restarted, and the state file `make up` leaves for
`make trigger` and `make down`."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from cademi_sim.scenario import Scenario, load
from devstack.procs import Child, StartupError, spawn, wait_for_port
from devstack.wiring import LOCAL_PRIVACY_KEY, PROJECT


@dataclass
class StackHandle:
    """A running local stack; `state` is everything needed to drive or stop it from another process."""

    workdir: Path
    scenario_path: Path
    endpoints: dict[str, Any] = field(default_factory=dict)
    children: list[Child] = field(default_factory=list)
    _scenario: Scenario | None = None
    # Throw-away local secrets, never written to disk (tests read them to sign Slack requests).
    local_secrets: dict[str, str] = field(
        default_factory=lambda: {
            name: secrets.token_urlsafe(24) for name in ("FORM_CSRF_SECRET", "SLACK_SIGNING_SECRET", "SLACK_BOT_TOKEN")
        },
        repr=False,
    )

    @property
    def scenario(self) -> Scenario:
        if self._scenario is None:
            self._scenario = load(self.scenario_path)
        return self._scenario

    # -- the functions' environment --------------------------------------------------------------------------

    def function_env(self) -> dict[str, str]:
        """The environment the functions (and local tools) run with: only emulator endpoints differ."""
        return {
            "GCP_PROJECT": PROJECT,
            "BQ_DATASET": self.endpoints["dataset"],
            "SHARDS_BUCKET": self.endpoints["bucket"],
            "STATE_BUCKET": self.endpoints.get("state_bucket", "progress-state"),
            "BIGQUERY_EMULATOR_HOST": self.endpoints["bigquery"],
            "STORAGE_EMULATOR_HOST": self.endpoints["gcs"],
            "PUBSUB_EMULATOR_HOST": self.endpoints["pubsub"],
            "CADEMI_API_VERSION": self.cademi_api,
            "INCREMENTAL": self.incremental,
            "CADEMI_BASE_URL": self.endpoints["cademi"].replace("/api/v1", f"/api/{self.cademi_api}"),
            "SECRETS_BACKEND": "env",
            # The erasures registry's key (privacy/erasures.py): fixed on the local stack, so the functions
            # and a later `make privacy-erase` hash ids alike; local simulated students only.
            "PRIVACY_KEY": LOCAL_PRIVACY_KEY,
            # the local Slack stand-in (devstack/slack_standin.py) in place of slack.com and hooks.slack.com
            "SLACK_API_URL": f"{self.endpoints['slack']}/api",
            "SLACK_RESPONSE_URL_PREFIX": f"{self.endpoints['slack']}/response/",
        }

    @property
    def cademi_api(self) -> str:
        return str(self.endpoints.get("cademi_api", "v1"))

    @property
    def incremental(self) -> str:
        """The functions' INCREMENTAL ("on": extraction carries students who did not study)."""
        return str(self.endpoints.get("incremental", "off"))

    @property
    def cademi_api_key(self) -> str:
        """The school's key for the API the functions use (v3 keys are `ck_…`)."""
        from cademi_sim import v3

        return v3.settings_of(self.scenario.raw)["api_key"] if self.cademi_api == "v3" else self.scenario.api_key

    def use_here(self) -> None:
        """Point this process's Google clients and settings at the stack."""
        os.environ.update(self.function_env())
        os.environ["CADEMI_API_KEY"] = self.cademi_api_key  # Services are built per environment (devstack.here)

    # -- processes ---------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every process this stack started, each by its PID, newest first."""
        for child in reversed(self.children):
            child.stop()
        self.children.clear()
        state = self.workdir / "stack.json"
        if state.exists():
            state.unlink()

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    def port_of(self, name: str) -> int:
        """The port a stack process listens on (a function's process, not its front)."""
        urls = {"bqemulator": self.endpoints["bigquery"], **self.endpoints["functions"], **self.endpoints["processes"]}
        return int(urls[name].rsplit(":", 1)[1])

    def kill(self, name: str) -> None:
        """Kill one process abruptly (SIGKILL to its group), as a crashed instance would die."""
        child = self.child(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        if child.proc is not None:
            child.proc.wait(timeout=10)

    def restart(self, name: str, port: int, env_changes: dict[str, str] | None = None) -> None:
        """Start a stopped or killed process again with the same command and environment (plus changes)."""
        old = self.child(name)
        old.stop()
        assert old.log_path is not None
        env = {**old.env, **env_changes} if old.env is not None and env_changes else old.env
        new = spawn(name, old.cmd, old.log_path.parent, env)
        self.children[self.children.index(old)] = new
        wait_for_port(new, port, timeout=90)
        self.save()

    # -- state for `make up` / `make trigger` / `make down` ----------------------------------------------

    def save(self) -> None:
        state = {
            "workdir": str(self.workdir),
            "scenario": str(self.scenario_path),
            "endpoints": self.endpoints,
            "children": [c.to_json() for c in self.children],
        }
        (self.workdir / "stack.json").write_text(json.dumps(state, indent=1))

    @classmethod
    def attach(cls, workdir: Path) -> Self:
        path = workdir / "stack.json"
        if not path.exists():
            raise StartupError(f"no running stack in {workdir}: run `make up` first")
        state = json.loads(path.read_text())
        children = [
            Child(c["name"], c["pid"], None, Path(c["log"]) if c["log"] else None, c["info"]) for c in state["children"]
        ]
        return cls(Path(state["workdir"]), Path(state["scenario"]), state["endpoints"], children)
