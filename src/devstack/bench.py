"""`make bench`: how close the pipeline gets to the school's rate limit, measured side by side in one run.

Phases (each on its own local stack, simulator and client budget set to the same rate):
1. the pipeline at BENCH_RATE req/s with BENCH_LATENCY_MS latency: utilisation, breaches, calls per
   student-product, end-to-end overhead; then the old in-house way (one call at a time, 0.8 s sleep) on a
   sample of the same school, and the speed-up;
2. Cademi's real 2 req/s with production defaults, >= 1,000 calls, 150 +- 100 ms latency, three ways side by
   side: a limiter per process (the design before the school-wide budget), the school-wide budget with one
   instance, and with two instances of extract_progress;
3. peak memory of the extract_progress process on one 300-student x 15-product tag;
4. a projection to a 60-tag x 300-student x 15-product school at 2 req/s;
5. the same school on Cademi's API v1 and v3 side by side at 2 req/s (`--v1-v3-only` runs just this phase and
   rewrites only its section of BENCHMARKS.md);
6. what tutors wait for in Slack, on the demo school with the Slack stand-in (`--slack-only`): a run's end to
   its digests, `/turma alunos` acknowledged vs answered, a button click to the message updated in place;
7. carrying students who did not study, INCREMENTAL off and on side by side for five weeks on v1 and v3 (a
   whole carrying cycle up to the forced full read), and the projection from the measured read share
   (`--carry-only`; `bench_carry.py`).
Writes BENCHMARKS.md and prints the figures as one JSON object on its last line. The measurements are in
`bench_measurements.py`, the report's text in `bench_report.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devstack import bench_carry
from devstack.bench_measurements import (
    FUNCTION_MEMORY_MB,
    PIECE_BUDGET_S,
    PROJECTED_PRODUCTS,
    legacy_run,
    peak_rss_mb,
    pipeline_run,
    projection,
    running_stack,
    school,
    slack_latencies,
    v1_and_v3,
)
from devstack.bench_report import SLACK_SECTION, markdown, slack_markdown, v3_markdown, write_section, write_v3_section


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devstack.bench", description=__doc__)
    parser.add_argument("--rate", type=float, default=float(os.environ.get("BENCH_RATE", 20)))
    parser.add_argument("--latency-ms", type=float, default=float(os.environ.get("BENCH_LATENCY_MS", 50)))
    parser.add_argument("--tags", type=int, default=4)
    parser.add_argument("--students", type=int, default=60)
    parser.add_argument("--products", type=int, default=5)
    parser.add_argument("--legacy-students", type=int, default=4, help="students per tag timed the old way")
    parser.add_argument("--out", default="BENCHMARKS.md")
    parser.add_argument("--v1-v3-only", action="store_true", help="run only phase 5 and rewrite only its section")
    parser.add_argument("--slack-only", action="store_true", help="run only phase 6 and rewrite only its section")
    parser.add_argument("--carry-only", action="store_true", help="run only phase 7 and rewrite only its section")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench-"))
    results: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    if args.carry_only:
        return carry_only(root, results, Path(args.out))
    if args.slack_only:
        print("phase 6: what tutors wait for in Slack", flush=True)
        results["slack"] = {"date": results["date"], **slack_latencies(root)}
        write_section(Path(args.out), slack_markdown(results["slack"]), SLACK_SECTION)
        print(json.dumps(results))
        return 0
    if args.v1_v3_only:
        print("phase 5: the same school on API v1 and v3 at 2 req/s", flush=True)
        results["v1_v3"] = {"date": results["date"], **v1_and_v3(root)}
        write_v3_section(Path(args.out), v3_markdown(results["v1_v3"]))
        print(json.dumps(results))
        return 0

    print(f"phase 1: pipeline at {args.rate:g} req/s, {args.latency_ms:g} ms latency", flush=True)
    scenario = school(args.tags, args.students, args.products, args.rate, args.latency_ms)
    with running_stack(root / "fast", scenario, piece_budget_s=60.0) as stack:
        fast = pipeline_run(stack)
        print(f"  {fast}", flush=True)
        legacy = legacy_run(stack, args.legacy_students)
        print(f"  legacy: {legacy}", flush=True)
    legacy_projected_s = fast["calls"] / legacy["rate"]
    fast["legacy"] = {
        **legacy,
        "projected_s_for_school": round(legacy_projected_s, 1),
        "speedup": round(legacy_projected_s / fast["end_to_end_s"], 2),
    }
    results["fast"] = fast

    print("phase 2: Cademi's real 2 req/s, production defaults, >= 1,000 calls, 150 +- 100 ms latency", flush=True)
    real_school = school(4, 85, 3, 2.0, {"mean": 150, "jitter": 100})
    ways: dict[str, dict[str, Any]] = {
        "per_process": {"extra_env": {"CADEMI_FLEET_BUDGET": "process"}},
        "fleet": {},
        "fleet_two_instances": {"progress_instances": 2, "progress_concurrency": 2},
    }
    real: dict[str, Any] = {}
    for name, options in ways.items():
        with running_stack(root / name, real_school, piece_budget_s=PIECE_BUDGET_S, **options) as stack:
            real[name] = pipeline_run(stack)
            print(f"  {name}: {real[name]}", flush=True)
            if name == "fleet":
                legacy_real = legacy_run(stack, 2)
                print(f"  legacy: {legacy_real}", flush=True)
    fleet = real["fleet"]
    real["legacy"] = {**legacy_real, "speedup_in_rate": round(fleet["achieved_rate"] / legacy_real["rate"], 2)}
    real["guard_cost"] = round((real["per_process"]["utilisation"] or 0) - (fleet["utilisation"] or 0), 3)
    results["real"] = real

    print("phase 3: memory of extract_progress on a 300-student x 15-product tag", flush=True)
    with running_stack(root / "memory", school(1, 300, 15, 2000, 0), piece_budget_s=PIECE_BUDGET_S) as stack:
        big = pipeline_run(stack)
        memory = peak_rss_mb(stack.child("extract_progress").pid)
    results["memory"] = {
        "peak_rss_mb": memory,
        "function_memory_mb": FUNCTION_MEMORY_MB,
        "calls": big["calls"],
        "records": big["records_loaded"],
        "pieces": big["pieces"],
    }
    print(f"  {results['memory']}", flush=True)

    results["projection"] = projection(
        fast["calls_per_student_product"] * PROJECTED_PRODUCTS, fleet["utilisation"] or 0.97
    )
    guarded = (fleet, real["fleet_two_instances"])
    results["targets"] = {
        "utilisation_ge_0_95": (fast["utilisation"] or 0) >= 0.95,
        "zero_breaches": fast["breaches"] == 0,
        "real_utilisation_ge_0_95": all((w["utilisation"] or 0) >= 0.95 for w in guarded),
        "real_zero_breaches": all(w["breaches"] == 0 for w in guarded),
        "real_calls_ge_1000": all(w["calls"] >= 1000 for w in guarded),
        "overhead_le_1_10": fast["overhead"] <= 1.10,
        "memory_under_function_limit": memory < FUNCTION_MEMORY_MB,
    }
    print("phase 5: the same school on API v1 and v3 at 2 req/s", flush=True)
    results["v1_v3"] = {"date": results["date"], **v1_and_v3(root)}
    Path(args.out).write_text(markdown(results, args), encoding="utf-8")
    write_v3_section(Path(args.out), v3_markdown(results["v1_v3"]))
    print("phase 6: what tutors wait for in Slack", flush=True)
    results["slack"] = {"date": results["date"], **slack_latencies(root)}
    write_section(Path(args.out), slack_markdown(results["slack"]), SLACK_SECTION)
    carry_only(root, results, Path(args.out))
    print(f"wrote {args.out}", flush=True)
    print(json.dumps(results))
    return 0


def carry_only(root: Path, results: dict[str, Any], out: Path) -> int:
    """Phase 7 (bench_carry.py): carrying off and on, side by side; rewrites only its section."""
    print("phase 7: carrying off and on, five weeks on v1 and v3 at 2 req/s", flush=True)
    results["carry"] = {"date": results["date"], **bench_carry.carry_phase(root)}
    write_section(out, bench_carry.markdown(results["carry"]), bench_carry.CARRY_SECTION)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
