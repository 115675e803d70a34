"""Start child processes on 127.0.0.1 and stop each one by its own PID."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any


class StartupError(RuntimeError):
    """A child process exited or never became ready."""


@dataclass
class Child:
    """One started process (leader of its own process group) and where its output goes."""

    name: str
    pid: int
    proc: subprocess.Popen[str] | None = None
    log_path: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)
    # How it was started (kept in memory only: the environment may hold local secrets).
    cmd: list[str] = field(default_factory=list, repr=False)
    env: dict[str, str] | None = field(default=None, repr=False)

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM this PID's process group (the child and what it spawned), then SIGKILL if needed."""
        if not self.alive():
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc is not None:
                    try:
                        self.proc.wait(timeout=0.1)
                        return
                    except subprocess.TimeoutExpired:
                        continue
                if not self.alive():
                    return
                time.sleep(0.1)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "pid": self.pid, "log": str(self.log_path or ""), "info": self.info}


_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _port_slice() -> tuple[int, int]:
    """The ports this process may hand out: 12,000 below the ephemeral range, or the slice
    DEVSTACK_PORT_SLICE=`index/count` of them, so that stacks started side by side by separate processes (the
    test suite's workers) never race for one port."""
    low, _ = _ephemeral_range()
    start = max(1024, low - 12000)
    index, _, count = os.environ.get("DEVSTACK_PORT_SLICE", "0/1").partition("/")
    width = (low - start) // max(1, int(count))
    return start + int(index) * width, start + (int(index) + 1) * width


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now, for a child to bind a moment later.

    Chosen below the kernel's ephemeral range: a port from bind(0) lies inside it, and any outgoing
    connection started before the child binds may take it as its local port (a CI run lost a stack to
    that). Never the same port twice in one process, so a stack's children cannot collide either."""
    start, stop = _port_slice()
    for _ in range(1000):
        port = random.randrange(start, stop)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise StartupError("no free port below the ephemeral range")


def spawn(name: str, cmd: list[str], log_dir: Path, env: Mapping[str, str] | None = None) -> Child:
    """Start `cmd` in its own session with output to log_dir/<name>.log."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            cmd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            text=True,
        )
    return Child(name, proc.pid, proc, log_path, cmd=cmd, env=dict(env) if env is not None else None)


def listener_pids(port: int) -> set[int] | None:
    """The processes holding a listening TCP socket on `port` (Linux /proc), or None where /proc cannot tell."""
    inodes: set[str] = set()
    try:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(fields[9])
    except (OSError, ValueError, IndexError):
        return None
    sockets = {f"socket:[{inode}]" for inode in inodes}
    pids: set[int] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isascii() or not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in sockets for fd in (proc / "fd").iterdir()):
                pids.add(int(proc.name))
        except OSError:
            continue  # gone, or not ours to read
    return pids


def _check_owner(child: Child, port: int) -> None:
    """A port that answers is not proof: another process may hold it. The listener must be in the child's
    process group (each child leads its own session), or the stack would report up with a dead child."""
    pids = listener_pids(port)
    if pids is None:
        return
    owners = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            owners.add(os.getpgid(pid))
    if child.pid not in owners:
        raise StartupError(f"port {port} answers, but {child.name} (pid {child.pid}) is not the process listening")


def wait_for_port(child: Child, port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise StartupError(f"{child.name} exited during start-up; see {child.log_path}")
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                _check_owner(child, port)
                return
        time.sleep(0.1)
    raise StartupError(f"{child.name} did not listen on port {port} within {timeout:.0f}s; see {child.log_path}")


def wait_for_http(child: Child, url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise StartupError(f"{child.name} exited during start-up; see {child.log_path}")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback URL built by us
                port = urllib.parse.urlsplit(url).port
                if port is not None:
                    _check_owner(child, port)
                return
        except OSError:
            time.sleep(0.2)
    raise StartupError(f"{child.name} did not answer {url} within {timeout:.0f}s; see {child.log_path}")


def start_simulator(
    scenario: Path,
    *,
    week: int = 0,
    admin_token: str = "local-admin",  # noqa: S107 - guards a loopback-only test endpoint
    extra_args: list[str] | None = None,
    stderr: IO[str] | None = None,
    port: int = 0,
) -> Child:
    """Run `python -m cademi_sim` and wait for its ready line (which carries the chosen port)."""
    cmd = [
        sys.executable,
        "-m",
        "cademi_sim",
        "--scenario",
        str(scenario),
        "--port",
        str(port),
        "--week",
        str(week),
        "--admin-token",
        admin_token,
        *(extra_args or []),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True)
    child = Child("cademi-simulator", proc.pid, proc)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        child.stop()
        raise StartupError(f"simulator did not start (exit code {proc.poll()})")
    child.info = json.loads(line)
    child.info["admin_token"] = admin_token
    return child
