"""`make soak`: weeks of runs under injected faults, then the history compared with the ground truth.

Faults, drawn from a fixed seed: 5xx and 429 bursts, slow and hung responses, non-JSON bodies (all within
the client's retry budget), every Pub/Sub message delivered twice for a stretch, extract_progress killed in
the middle of a tag and restarted, the loader failing between its load job and its MERGE (`soak_faults.py`,
a wrapper of load_history's source: production code carries no hook), the BigQuery emulator restarted mid-run,
poison messages. Students whose progress never answers are designated up front
(scenario faults) and must be recorded as `failed`. Everything runs through the local fronts (Cloud Run's
admission rules), with two instances of extract_progress sharing the school's one budget.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from cademi_sim import demo
from cademi_sim.scenario import Scenario, load
from cademi_sim.truth import expected_rows
from devstack import soak_faults
from devstack.emulators import pubsub_clients
from devstack.here import services_here
from devstack.stack import LocalStack
from devstack.wiring import PROJECT
from progress_monitor.contracts.values import RunId
from progress_monitor.platform import warehouse
from progress_monitor.stages.daily import resume_run

EVENTS = ("duplicates", "kill", "bigquery_restart", "poison")
ALWAYS_FAILING_TIMES = 100_000


@dataclass
class SoakReport:
    weeks: int
    expected: int = 0
    present: int = 0
    missing: list[Any] = field(default_factory=list)
    duplicated: list[Any] = field(default_factory=list)
    wrong: list[Any] = field(default_factory=list)
    unexpected: list[Any] = field(default_factory=list)
    run_mismatches: list[str] = field(default_factory=list)
    dead_letters_unaccounted: list[str] = field(default_factory=list)
    events: dict[str, list[str]] = field(default_factory=dict)
    resumes: list[str] = field(default_factory=list)
    faults_fired: int = 0
    rate_breaches: int = 0  # Cademi's own count of calls over its limit: the school-wide budget must keep it 0

    @property
    def ok(self) -> bool:
        return not (
            self.missing
            or self.duplicated
            or self.wrong
            or self.unexpected
            or self.run_mismatches
            or self.dead_letters_unaccounted
            or self.rate_breaches
        )

    def summary(self) -> dict[str, Any]:
        return {
            "weeks": self.weeks,
            "expected": self.expected,
            "present": self.present,
            "missing": len(self.missing),
            "duplicated": len(self.duplicated),
            "wrong": len(self.wrong),
            "unexpected": len(self.unexpected),
            "run_mismatches": self.run_mismatches,
            "dead_letters_unaccounted": self.dead_letters_unaccounted,
            "faults_fired": self.faults_fired,
            "rate_breaches": self.rate_breaches,
            "events": self.events,
            "resumes": self.resumes,
            "ok": self.ok,
        }


def designated_failures(scenario: Scenario) -> set[tuple[int, int]]:
    """(user, product) pairs whose progress call the scenario makes fail on every attempt, every week."""
    pairs = set()
    for fault in scenario.raw.get("faults", []):
        path = fault.get("path", "")
        if path.startswith("/usuario/progresso_por_produto/") and fault.get("times", 1) >= ALWAYS_FAILING_TIMES:
            user, product = path.rsplit("/", 2)[-2:]
            pairs.add((int(user), int(product)))
    return pairs


def served_pairs(scenario: Scenario, week: int) -> list[tuple[int, int]]:
    """(user, product) pairs of registered students in the week, in a stable order."""
    members = {u for t in scenario.raw["registry"]["tags"] for u in scenario.members(t["tag_id"], week)}
    return sorted(pair for pair in scenario.progress if pair[0] in members)


def week_faults(rng: random.Random, scenario: Scenario, week: int) -> list[dict[str, Any]]:
    """Transient faults for one week, each on its own path (none the scenario already faults) and within
    the client's 5 attempts, so every one of them must end in the served value."""
    tags = [t["tag_id"] for t in scenario.raw["registry"]["tags"]]
    taken = {f.get("path") for f in scenario.raw.get("faults", [])}
    pairs = [p for p in served_pairs(scenario, week) if f"/usuario/progresso_por_produto/{p[0]}/{p[1]}" not in taken]
    chosen = rng.sample(pairs, min(len(pairs), 40))
    faults: list[dict[str, Any]] = []
    kinds: list[dict[str, Any]] = [
        {"status": 503, "times": 3},
        {"status": 429, "times": 2},
        {"status": 500, "times": 1},
        {"body": "<html>Bad gateway</html>", "times": 2},
        {"delay_ms": 2500, "times": 1},
        {"delay_ms": 600, "times": 2},
    ]
    for i, (user, product) in enumerate(chosen):
        faults.append(
            {"path": f"/usuario/progresso_por_produto/{user}/{product}", "week": week, **kinds[i % len(kinds)]}
        )
    burst_tag = rng.choice(tags)
    if not any(f.get("path_prefix", "").startswith("/usuario/lista_por_tag") for f in scenario.raw.get("faults", [])):
        faults.append({"path_prefix": f"/usuario/lista_por_tag/{burst_tag}", "week": week, "status": 502, "times": 2})
    return faults


def plan(weeks: int, rng: random.Random) -> list[set[str]]:
    """Which events happen in which week: every kind at least once, then at random."""
    schedule: list[set[str]] = [set() for _ in range(weeks)]
    for i, event in enumerate(EVENTS):
        schedule[i % weeks].add(event)
    for week in range(len(EVENTS), weeks):
        schedule[week] |= {e for e in EVENTS if rng.random() < 0.35}
    return schedule


def run_soak(scenario_path: Path, weeks: int, seed: int, workdir: Path, log: Any = print) -> SoakReport:
    rng = random.Random(seed)
    scenario = load(scenario_path)
    weeks = min(weeks, len(scenario.weeks))
    env = {
        soak_faults.RATE: "0.15",
        "CADEMI_READ_TIMEOUT_S": "1.5",
        "CADEMI_BACKOFF_BASE_S": "0.1",
        "CADEMI_BACKOFF_CAP_S": "1.0",
    }
    # Through the fronts, with two instances of extract_progress (two processes, one school-wide budget).
    stack = LocalStack.start(
        workdir,
        scenario_path,
        piece_budget_s=8.0,
        progress_instances=2,
        progress_concurrency=2,
        ack_deadline_s=60,
        extra_env=env,
        sources={soak_faults.FUNCTION: soak_faults.SOURCE},  # the loader's fault, outside production code
    )
    report = SoakReport(weeks)
    poisons: list[bytes] = []
    try:
        stack.use_here()
        admin = stack.admin()
        schedule = plan(weeks, rng)
        for week in range(weeks):
            expected_calls = len(served_pairs(scenario, week))
            events = schedule[week]
            report.events[scenario.weeks[week].isoformat()] = sorted(events)
            admin.add_faults(week_faults(rng, scenario, week))
            if "duplicates" in events:
                stack.duplicate_deliveries(True)
            if "poison" in events:
                poison = json.dumps({"run_id": "garbage", "tag_id": "x", "soak_poison": week}).encode()
                poisons.append(poison)
                publisher, _ = pubsub_clients(stack.endpoints)
                publisher.publish(publisher.topic_path(PROJECT, "progress-tasks"), poison).result()
            admin.set_week(week)
            admin.reset()
            run_id = stack.trigger(scenario.weeks[week])
            if "kill" in events:
                _wait_calls(admin, max(20, expected_calls // 3))
                stack.kill("extract_progress")
                time.sleep(1.0)
                stack.restart("extract_progress", stack.port_of("extract_progress"))
            if "bigquery_restart" in events:
                _wait_calls(admin, max(20, expected_calls // 2))
                stack.restart("bqemulator", stack.port_of("bqemulator"))
            row = wait_resuming(stack, run_id, report)
            counters = admin.counters()
            report.faults_fired += int(counters.get("faults_fired", 0))
            report.rate_breaches += int(counters.get("breaches", 0))
            if "duplicates" in events:
                time.sleep(2.0)  # let the second deliveries drain before the stretch ends
                stack.duplicate_deliveries(False)
            log(
                f"week {run_id}: {row.get('status')} {row.get('records_loaded')} records, "
                f"{row.get('failed_extractions')} failed; events {sorted(events) or '-'}"
            )
        time.sleep(3.0)  # late duplicates and dead letters
        compare(stack, scenario, weeks, report, poisons)
    finally:
        stack.stop()
    return report


def wait_resuming(stack: LocalStack, run_id: RunId, report: SoakReport, quiet_s: float = 90.0) -> dict[str, Any]:
    """Wait for the run; when nothing is loaded for `quiet_s`, do what the daily health check does in the
    cloud (resume_run) and count it: the Pub/Sub emulator can drop a push that was in flight to a killed
    process, which Pub/Sub itself redelivers."""
    deadline = time.monotonic() + 900
    last_pieces, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        row = stack.wait_run(run_id, timeout=5)
        if row.get("status") == "succeeded" and row.get("reports_refreshed_at"):
            return row
        pieces = row.get("pieces_loaded") or 0
        if pieces != last_pieces:
            last_pieces, quiet_since = pieces, time.monotonic()
        elif time.monotonic() - quiet_since > quiet_s:
            resumed = resume_run(services_here(), run_id)
            report.resumes.append(f"{run_id}: {resumed}")
            quiet_since = time.monotonic()
    return stack.run_row(run_id) or {"run_id": str(run_id), "status": "missing"}


def _wait_calls(admin: Any, calls: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while admin.counters().get("requests_total", 0) < calls and time.monotonic() < deadline:
        time.sleep(0.2)


def compare(stack: LocalStack, scenario: Scenario, weeks: int, report: SoakReport, poisons: list[bytes]) -> None:
    """Every served (week, tag, student, product) exactly once with the served values; runs and DLQs match."""
    failing = designated_failures(scenario)
    cfg = services_here()
    expected: dict[Any, Any] = {}
    for week in range(weeks):
        expected.update(expected_rows(scenario, week, failing))
    rows = warehouse.query(
        cfg, "SELECT * FROM `${progress_history}` WHERE snapshot_date <= @last", last=scenario.weeks[weeks - 1]
    )
    counts: Counter[Any] = Counter()
    actual: dict[Any, Any] = {}
    for r in rows:
        key = (r["snapshot_date"].isoformat(), r["tag_id"], r["user_id"], r["product_id"])
        counts[key] += 1
        actual[key] = (r["status"], r["total"], r["assistidas"], r["completas"])
    report.expected, report.present = len(expected), len(actual)
    report.missing = sorted(set(expected) - set(actual))
    report.unexpected = sorted(set(actual) - set(expected))
    report.duplicated = sorted(k for k, n in counts.items() if n > 1)
    report.wrong = sorted(k for k in set(expected) & set(actual) if expected[k] != actual[k])
    for week in range(weeks):
        snapshot = scenario.weeks[week].isoformat()
        week_rows = [v for k, v in expected.items() if k[0] == snapshot]
        run = stack.run_row(RunId.parse(snapshot)) or {}
        want = {
            "status": "succeeded",
            "records_loaded": len(week_rows),
            "failed_extractions": sum(1 for v in week_rows if v[0] == "failed"),
        }
        got = {k: run.get(k) for k in want}
        if got != want:
            ledger = warehouse.query(
                cfg,
                "SELECT shard, generation, rows_in_shard, rows_merged, dq_duplicates, "
                "students FROM `${loads}` WHERE run_id = @r",
                r=snapshot,
            )
            report.run_mismatches.append(f"{snapshot}: runs table says {got}, truth {want}; ledger {ledger}")
    known = set(poisons)
    for message in stack.dead_letters(1000):
        if message["data"].encode() not in known:
            report.dead_letters_unaccounted.append(f"{message['topic']}: {message['attributes']}")


def soak_scenario(path: Path, weeks: int, seed: int) -> Path:
    """The demo school over `weeks` past weeks, with two students whose progress never answers."""
    first = date(2026, 11, 16) - timedelta(weeks=weeks - 1)
    raw = demo.generate(seed=seed, n_weeks=weeks, first_week=first)
    users = [u["id"] for u in raw["users"]]
    raw["faults"].append(
        {"path": f"/usuario/progresso_por_produto/{users[40]}/102", "status": 500, "times": ALWAYS_FAILING_TIMES}
    )
    path.write_text(json.dumps(raw), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devstack.soak", description=__doc__)
    parser.add_argument("--weeks", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--scenario", help="scenario file (default: the demo school over past weeks)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    scenario = Path(args.scenario) if args.scenario else soak_scenario(workdir / "scenario.json", args.weeks, args.seed)
    report = run_soak(scenario, args.weeks, args.seed, workdir / "stack")
    summary = report.summary()
    print(
        f"expected {report.expected}, present {report.present}, missing {len(report.missing)}, "
        f"duplicated {len(report.duplicated)}, wrong {len(report.wrong)}, unexpected {len(report.unexpected)}, "
        f"run mismatches {len(report.run_mismatches)}, unaccounted dead letters "
        f"{len(report.dead_letters_unaccounted)}"
    )
    for line in report.run_mismatches + report.dead_letters_unaccounted:
        print(f"  {line}")
    print(json.dumps(summary))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
