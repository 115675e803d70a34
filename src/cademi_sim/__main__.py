"""Start the simulator: python -m cademi_sim --scenario FILE [--port N] [--week I] [--admin-token T]."""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import sys
from types import FrameType

from cademi_sim.scenario import ScenarioError, load
from cademi_sim.server import SimServer
from cademi_sim.state import SimState


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cademi_sim", description=__doc__)
    parser.add_argument("--scenario", required=True, help="scenario JSON file")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--week", type=int, default=0, help="initial simulated week index")
    parser.add_argument("--admin-token", default="", help="token for /_admin endpoints (default: random)")
    parser.add_argument("--rate-per-second", type=float, help="override the scenario's rate_limit.per_second")
    parser.add_argument("--rate-per-minute", type=float, help="override the scenario's rate_limit.per_minute")
    parser.add_argument("--latency-ms", type=float, help="override the scenario's latency_ms")
    args = parser.parse_args(argv)
    try:
        scenario = load(args.scenario)
    except ScenarioError as exc:
        print(f"cademi_sim: invalid scenario: {exc}", file=sys.stderr)
        return 2
    if args.rate_per_second is not None:
        scenario.raw["rate_limit"]["per_second"] = args.rate_per_second
    if args.rate_per_minute is not None:
        scenario.raw["rate_limit"]["per_minute"] = args.rate_per_minute
    if args.latency_ms is not None:
        scenario.raw["latency_ms"] = args.latency_ms
    if not 0 <= args.week < len(scenario.weeks):
        print(f"cademi_sim: --week {args.week} is out of range 0..{len(scenario.weeks) - 1}", file=sys.stderr)
        return 2
    token = args.admin_token or secrets.token_urlsafe(16)
    server = SimServer(SimState(scenario, token, week=args.week), args.port)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    port = server.server_address[1]
    # One JSON line tells the parent process where we listen (the admin token only if it chose none).
    ready = {"event": "ready", "port": port, "base_url": f"http://127.0.0.1:{port}/api/v1"}
    if not args.admin_token:
        ready["admin_token"] = token
    print(json.dumps(ready), flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
