"""Extract every registered tag of a scenario from the simulator, week by week, and print a summary."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

from cademi_sim import demo
from cademi_sim.admin import SimulatorAdmin
from cademi_sim.scenario import load
from devstack.procs import start_simulator
from progress_monitor import logs
from progress_monitor.cademi import CademiClient
from progress_monitor.extraction import PieceExtraction
from progress_monitor.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenario", help="scenario file (default: the generated demo school)")
    parser.add_argument("--weeks", type=int, default=2, help="number of simulated weeks to extract")
    parser.add_argument("--piece-budget", type=float, default=10.0, help="seconds per extraction piece")
    args = parser.parse_args(argv)
    logs.configure(logging.WARNING)

    workdir = Path(tempfile.mkdtemp(prefix="progress-monitor-"))
    scenario_path = Path(args.scenario) if args.scenario else workdir / "demo-scenario.json"
    if not args.scenario:
        scenario_path.write_text(json.dumps(demo.generate()), encoding="utf-8")
    scenario = load(scenario_path)
    rate = scenario.rate_limit
    settings = Settings(
        cademi_base_url="http://127.0.0.1",
        cademi_rate_per_second=float(rate["per_second"]),
        cademi_rate_per_minute=float(rate["per_minute"]),
        piece_budget_s=args.piece_budget,
    )
    sim = start_simulator(scenario_path)
    try:
        admin = SimulatorAdmin(sim.info["port"], sim.info["admin_token"])
        settings = Settings(**{**settings.__dict__, "cademi_base_url": sim.info["base_url"]})
        client = CademiClient.from_settings(settings, scenario.api_key)
        tracks = {t["id"]: [p["product"] for p in t["products"]] for t in scenario.raw["registry"]["tracks"]}
        note = "production default" if settings.rate_is_production else "demo speed, above Cademi's 2 req/s"
        budget = f"{settings.cademi_rate_per_second:g} req/s, {settings.cademi_rate_per_minute:g} req/min"
        print(f"client budget {budget} ({note})")
        summaries: list[dict[str, Any]] = []
        for week in range(min(args.weeks, len(scenario.weeks))):
            admin.set_week(week)
            admin.reset()
            before = client.stats.snapshot().get("requests", 0)
            started = time.monotonic()
            statuses: Counter[str] = Counter()
            students = pieces = 0
            for tag in scenario.raw["registry"]["tags"]:
                continuation = None
                while True:
                    piece = PieceExtraction(
                        client,
                        tag_id=tag["tag_id"],
                        product_ids=tracks[tag["track"]],
                        snapshot_date=date.fromisoformat(scenario.raw["weeks"][week]),
                        run_id=f"demo-{week}",
                        budget_s=settings.piece_budget_s,
                        workers=settings.cademi_workers,
                        start=continuation,
                    )
                    statuses.update(r.status for r in piece.records())
                    students += piece.students_done
                    pieces += 1
                    continuation = piece.continuation
                    if continuation is None:
                        break
            counters = admin.counters()
            summary = {
                "week": scenario.raw["weeks"][week],
                "tags": len(scenario.raw["registry"]["tags"]),
                "students": students,
                "pieces": pieces,
                "records": sum(statuses.values()),
                "ok": statuses["ok"],
                "no_access": statuses["no_access"],
                "failed": statuses["failed"],
                "api_calls": client.stats.snapshot().get("requests", 0) - before,
                "breaches": counters.get("breaches", 0),
                "elapsed_s": round(time.monotonic() - started, 1),
            }
            summaries.append(summary)
            print("  ".join(f"{k}={v}" for k, v in summary.items()), flush=True)
        print(json.dumps({"weeks": summaries, "rate_per_second": settings.cademi_rate_per_second}))
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
