"""Start child processes on 127.0.0.1 and stop each one by its own PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any


class StartupError(RuntimeError):
    """A child process exited or never became ready."""


@dataclass
class Child:
    """One started process and where its output goes."""

    name: str
    proc: subprocess.Popen[str]
    log_path: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate this process (SIGTERM, then SIGKILL) by its PID."""
        if self.proc.poll() is not None:
            return
        try:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=timeout)
        except ProcessLookupError:
            pass


def start_simulator(
    scenario: Path,
    *,
    week: int = 0,
    admin_token: str = "local-admin",  # noqa: S107 - guards a loopback-only test endpoint
    extra_args: list[str] | None = None,
    stderr: IO[str] | None = None,
    timeout: float = 30.0,
) -> Child:
    """Run `python -m cademi_sim` and wait for its ready line (which carries the chosen port)."""
    cmd = [
        sys.executable,
        "-m",
        "cademi_sim",
        "--scenario",
        str(scenario),
        "--port",
        "0",
        "--week",
        str(week),
        "--admin-token",
        admin_token,
        *(extra_args or []),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True)
    child = Child("cademi-simulator", proc)
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line or time.monotonic() > deadline:
        child.stop()
        raise StartupError(f"simulator did not start (exit code {proc.poll()})")
    child.info = json.loads(line)
    child.info["admin_token"] = admin_token
    return child
