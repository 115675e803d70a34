"""The local stack's own plumbing: ports for its children, and proof that each child is the one listening."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from devstack.procs import StartupError, _ephemeral_range, free_port, spawn, wait_for_port


def test_ports_are_never_handed_out_twice_and_stay_below_the_ephemeral_range() -> None:
    """A port from bind(0) lies in the ephemeral range, where any outgoing connection may take it before the
    child binds; and closing each probe socket let the same port come back twice (CI lost a stack to it)."""
    low, _ = _ephemeral_range()
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= p < low for p in ports)


def test_a_port_held_by_another_process_does_not_make_a_child_ready(tmp_path: Path) -> None:
    port = free_port()
    server = spawn("holder", [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], tmp_path)
    idle = spawn("idle", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path)
    try:
        wait_for_port(server, port, timeout=20)  # the holder itself is ready
        with pytest.raises(StartupError, match="is not the process listening"):
            wait_for_port(idle, port, timeout=20)
    finally:
        server.stop()
        idle.stop()
