"""`make run`, `make up`, `make trigger`, `make down`: the local stack from the command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from cademi_sim import demo
from devstack.here import services_here
from devstack.preview import write_report
from devstack.stack import LocalStack, remove_workdir
from devstack.wiring import LOCAL_SLACK_TEAM, LOCAL_SLACK_USER, LOCAL_STAFF
from progress_monitor.commands.replay import replay_history
from progress_monitor.contracts.values import RunId
from progress_monitor.privacy import retention
from progress_monitor.settings import Settings
from progress_monitor.stages.daily import resume_run

DEFAULT_UP_DIR = Path("var/stack")
_INC = "carry students who did not study (the functions' INCREMENTAL; default: $INCREMENTAL or off)"


def _scenario_path(arg: str | None, workdir: Path) -> Path:
    if arg:
        return Path(arg).resolve()
    path = workdir / "demo-scenario.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(demo.generate()), encoding="utf-8")
    return path


def run_week(stack: LocalStack, week: date, timeout: float = 900.0, **trigger: Any) -> dict[str, Any]:
    """Trigger one weekly run, wait for it, and summarise it from the runs table and the simulator."""
    admin = stack.admin()
    admin.reset()
    # fake-gcs-server has no lifecycle rules: apply the bucket's retention rule here (docs/privacy.md).
    retention.expire_raw_objects(services_here())
    started = time.monotonic()
    before = stack.run_row(RunId(week - timedelta(days=week.weekday()), trigger.get("rerun")))
    run_id = stack.trigger(week, **trigger)
    if before is not None and before.get("status") == "running":
        # A stack stopped mid-run left it `running`: the schedule message is now a duplicate and publishes
        # nothing, so ask for what the run still waits for, as the daily health check would.
        print(f"run {run_id} was left running (a stopped stack?); resuming it", file=sys.stderr)
        resumed = resume_run(services_here(), run_id)
        print(f"  re-published: {', '.join(resumed) or 'nothing'}", file=sys.stderr)
    row = stack.wait_run(run_id, timeout=timeout, progress=_progress_line)
    digests = stack.wait_digests(run_id) if row.get("status") in ("succeeded", "incomplete") else []
    counters = admin.counters()
    dead = stack.dead_letters()
    return {
        "run_id": str(run_id),
        "status": row.get("status"),
        "tags": row.get("tags_total"),
        "tags_done": row.get("tags_done"),
        "students": row.get("students"),
        "records_loaded": row.get("records_loaded"),
        "failed_extractions": row.get("failed_extractions"),
        "no_access": row.get("no_access"),
        "api_calls": counters.get("requests_total", 0),
        # carrying (INCREMENTAL=on): rows written from an earlier observation, the calls that saved, and the
        # verification sample's compared pairs and mismatches
        "incremental": stack.incremental,
        "carried": row.get("rows_carried") or 0,
        "calls_saved": row.get("calls_saved") or 0,
        "carry_checked": row.get("carry_checked") or 0,
        "carry_mismatches": row.get("carry_mismatches") or 0,
        "rate_limit_breaches": counters.get("breaches", 0),
        "dead_lettered": len(dead),
        "digests": sorted(f"{d['channel_id']}:{d['status']}" for d in digests),
        "elapsed_s": round(time.monotonic() - started, 1),
    }


def _progress_line(row: dict[str, Any] | None) -> None:
    """Printed while a run is awaited, so a stuck run is visible instead of a silent wait."""
    if row is None:
        print("  waiting: the run is not recorded yet", file=sys.stderr)
    else:
        print(
            f"  {row['status']}: {row.get('tags_done') or 0}/{row.get('tags_total') or 0} tags, "
            f"{row.get('records_loaded') or 0} records loaded, {row.get('errors') or 0} errors",
            file=sys.stderr,
        )


def _print_run(summary: dict[str, Any]) -> None:
    print(
        f"run {summary['run_id']}: {summary['status']}, {summary['tags_done']}/{summary['tags']} tags, "
        f"{summary['students']} students, {summary['records_loaded']} records loaded, "
        f"{summary['failed_extractions']} failed extractions, {summary['no_access']} no access, "
        f"{summary['api_calls']} API calls, {summary['carried']} rows carried ({summary['calls_saved']} calls saved, "
        f"{summary['carry_mismatches']} mismatches in {summary['carry_checked']} checked), "
        f"{summary['rate_limit_breaches']} rate-limit breaches, "
        f"{summary['dead_lettered']} dead-lettered, {len(summary['digests'])} Slack digests, {summary['elapsed_s']} s",
        flush=True,
    )


def show_digests(stack: LocalStack, path: Path) -> str:
    """What the tutors' channels received, from the Slack stand-in: every message to `path`, the last week's
    printed."""
    from devstack.slack_standin import as_text

    messages = sorted(stack.slack().messages(), key=lambda m: (m["text"], m["channel"]))
    texts = [f"#{m['channel']} (ts {m['ts']}, {m['versions']} version(s))\n{as_text(m['blocks'])}\n" for m in messages]
    path.write_text("\n".join(texts), encoding="utf-8")
    latest = max((m["text"].split(":")[0] for m in messages), default="")
    print(f"\nSlack digests posted (the latest week below; all {len(messages)} in {path}):\n", flush=True)
    for m, text in zip(messages, texts, strict=True):
        if m["text"].startswith(latest):
            print(text, flush=True)
    return str(path)


def _rate_note(stack: LocalStack) -> str:
    rate = stack.endpoints["client_rate"]
    budget = Settings(
        cademi_rate_per_second=float(rate["per_second"]), cademi_rate_per_minute=float(rate["per_minute"])
    )
    note = (
        "Cademi's real limit"
        if budget.rate_is_production
        else "faster than Cademi's real 2 req/s, simulator set to match"
    )
    return f"client rate budget {rate['per_second']} req/s, {rate['per_minute']} req/min ({note})"


def cmd_run(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir or f"var/run-{int(time.time())}").resolve()
    scenario = _scenario_path(args.scenario, workdir)
    print(f"starting the local stack in {workdir} ...", flush=True)
    started = time.monotonic()
    stack = LocalStack.start(
        workdir, scenario, piece_budget_s=args.piece_budget, cademi_api=args.cademi_api, incremental=args.incremental
    )
    summaries = []
    report: Path | None = None
    digests = ""
    try:
        print(
            f"stack up in {time.monotonic() - started:.1f} s, Cademi API {stack.cademi_api}, "
            f"INCREMENTAL={stack.incremental}; {_rate_note(stack)}",
            flush=True,
        )
        for week in stack.scenario.weeks[: args.weeks]:
            summary = run_week(stack, week)
            summaries.append(summary)
            _print_run(summary)
        report = write_report(services_here(), Path(args.report).resolve())
        print(f"dashboard preview written to {report}", flush=True)
        digests = show_digests(stack, report.with_name("slack-digests.txt"))
    finally:
        stack.stop()
    total = {
        "runs": summaries,
        "report": str(report),
        "client_rate_per_second": float(stack.endpoints["client_rate"]["per_second"]),
        "production_rate_per_second": 2.0,
        "all_succeeded": all(s["status"] == "succeeded" for s in summaries),
        "slack_digests": digests,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    if not args.keep:
        remove_workdir(workdir)
    print(json.dumps(total))
    return 0 if total["all_succeeded"] else 1


def cmd_up(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir or DEFAULT_UP_DIR).resolve()
    if (workdir / "stack.json").exists():
        print(f"a stack is already up in {workdir}; run `make down` first", file=sys.stderr)
        return 1
    scenario = _scenario_path(args.scenario, workdir)
    stack = LocalStack.start(
        workdir, scenario, piece_budget_s=args.piece_budget, cademi_api=args.cademi_api, incremental=args.incremental
    )
    e = stack.endpoints
    print(f"local stack up ({_rate_note(stack)})")
    print(f"  BigQuery   {e['bigquery']}  project={e['project']} dataset={e['dataset']}")
    print(f"  Storage    {e['gcs']}  bucket={e['bucket']}")
    print(f"  Pub/Sub    {e['pubsub']}")
    cademi_url = stack.function_env()["CADEMI_BASE_URL"]
    print(f"  Cademi     {cademi_url}  (simulator, API {stack.cademi_api}; key in the scenario file)")
    print(f"  carrying   INCREMENTAL={stack.incremental}")
    for name, url in e["functions"].items():
        print(f"  {name:<17}{url}")
    print(f"  form       {e['functions']['add_tag']}/  (open in a browser; local identity {LOCAL_STAFF})")
    print(
        f"  slack      {e['functions']['slack_command']}/  (signed with a throw-away local secret; "
        f"team_id {LOCAL_SLACK_TEAM}, user_id {LOCAL_SLACK_USER})"
    )
    print(f"  weeks      {', '.join(d.isoformat() for d in stack.scenario.weeks)}")
    print(f"  logs       {workdir / 'logs'}")
    print("next: make trigger WEEK=<one of the weeks>; make down")
    return 0


def cmd_trigger(args: argparse.Namespace) -> int:
    stack = LocalStack.attach(Path(args.workdir or DEFAULT_UP_DIR).resolve())
    if args.incremental and args.incremental != stack.incremental:
        # The functions read INCREMENTAL when they start, and their environment holds local secrets kept only
        # in the memory of `make up`: the stack is restarted with the other value, not patched.
        print(
            f"the stack runs with INCREMENTAL={stack.incremental}; for {args.incremental}: "
            f"make down && make up INCREMENTAL={args.incremental}",
            file=sys.stderr,
        )
        return 2
    stack.use_here()
    summary = run_week(stack, date.fromisoformat(args.week), rerun=args.rerun)
    _print_run(summary)
    print(json.dumps(summary))
    return 0 if summary["status"] == "succeeded" else 1


def cmd_replay(args: argparse.Namespace) -> int:
    stack = LocalStack.attach(Path(args.workdir or DEFAULT_UP_DIR).resolve())
    stack.use_here()
    summary = replay_history(services_here(), date.fromisoformat(args.first), date.fromisoformat(args.last))
    print(json.dumps(summary.__dict__))
    return 0


def cmd_reextract(args: argparse.Namespace) -> int:
    stack = LocalStack.attach(Path(args.workdir or DEFAULT_UP_DIR).resolve())
    stack.use_here()
    label = f"tag{args.tag}-{int(time.time()) % 100000}"
    summary = run_week(stack, date.fromisoformat(args.week), rerun=label, tag_ids=[args.tag])
    _print_run(summary)
    print(json.dumps(summary))
    return 0 if summary["status"] == "succeeded" else 1


def cmd_export_tutors(args: argparse.Namespace) -> int:
    from progress_monitor.pipeline.reporting import export_tutors

    stack = LocalStack.attach(Path(args.workdir or DEFAULT_UP_DIR).resolve())
    stack.use_here()
    out = Path(args.out).resolve()
    count = export_tutors(services_here(), out, args.tag)
    print(f"{count} students written to {out}")
    return 0


def cmd_privacy(args: argparse.Namespace) -> int:
    """`python -m progress_monitor privacy …` on the running stack (its settings and local privacy key)."""
    from progress_monitor.commands import privacy

    stack = LocalStack.attach(Path(args.workdir or DEFAULT_UP_DIR).resolve())
    stack.use_here()
    return privacy.main(args.rest)


def cmd_down(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir or DEFAULT_UP_DIR).resolve()
    try:
        stack = LocalStack.attach(workdir)
    except RuntimeError as exc:
        print(exc)
        return 0
    stack.stop()
    print(f"stopped {workdir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devstack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start the stack, run several weeks, print a summary, stop")
    run.add_argument("--scenario")
    run.add_argument("--weeks", type=int, default=4)
    run.add_argument("--workdir")
    run.add_argument("--piece-budget", type=float, default=20.0)
    run.add_argument(
        "--cademi-api",
        choices=["v1", "v3"],
        default=os.environ.get("CADEMI_API_VERSION") or "v1",
        help="the Cademi API the functions use (default: $CADEMI_API_VERSION or v1)",
    )
    run.add_argument("--incremental", choices=["on", "off"], default=os.environ.get("INCREMENTAL") or "off", help=_INC)
    run.add_argument("--keep", action="store_true", help="keep the work directory (logs, shards)")
    run.add_argument("--report", default="var/report.html", help="where to write the HTML dashboard preview")
    run.set_defaults(func=cmd_run)
    up = sub.add_parser("up", help="start the stack and leave it running")
    up.add_argument("--scenario")
    up.add_argument("--workdir")
    up.add_argument("--piece-budget", type=float, default=20.0)
    up.add_argument(
        "--cademi-api",
        choices=["v1", "v3"],
        default=os.environ.get("CADEMI_API_VERSION") or "v1",
        help="the Cademi API the functions use (default: $CADEMI_API_VERSION or v1)",
    )
    up.add_argument("--incremental", choices=["on", "off"], default=os.environ.get("INCREMENTAL") or "off", help=_INC)
    up.set_defaults(func=cmd_up)
    trigger = sub.add_parser("trigger", help="fire one weekly run on the running stack and wait for it")
    trigger.add_argument("--week", required=True)
    trigger.add_argument("--rerun", help="label of a deliberate re-extraction of the week")
    trigger.add_argument("--workdir")
    trigger.add_argument(
        "--incremental",
        choices=["on", "off"],
        default=os.environ.get("INCREMENTAL") or None,
        help="refuse to run unless the stack's INCREMENTAL is this (default: $INCREMENTAL, else any)",
    )
    trigger.set_defaults(func=cmd_trigger)
    replay = sub.add_parser("replay", help="rebuild the history of a week range from the kept shards")
    replay.add_argument("--from", dest="first", required=True)
    replay.add_argument("--to", dest="last", required=True)
    replay.add_argument("--workdir")
    replay.set_defaults(func=cmd_replay)
    reextract = sub.add_parser("reextract", help="extract one tag's week again and wait for it")
    reextract.add_argument("--week", required=True)
    reextract.add_argument("--tag", required=True, type=int)
    reextract.add_argument("--workdir")
    reextract.set_defaults(func=cmd_reextract)
    export = sub.add_parser("export-tutors", help="write the tutors' list of the running stack as CSV")
    export.add_argument("--out", default="var/lista-dos-tutores.csv")
    export.add_argument("--tag", type=int)
    export.add_argument("--workdir")
    export.set_defaults(func=cmd_export_tutors)
    lgpd = sub.add_parser(
        "privacy", help="export or erase one student on the running stack (progress_monitor.commands.privacy)"
    )
    lgpd.add_argument("--workdir")
    lgpd.add_argument("rest", nargs=argparse.REMAINDER, help="export|erase and their options")
    lgpd.set_defaults(func=cmd_privacy)
    down = sub.add_parser("down", help="stop the running stack")
    down.add_argument("--workdir")
    down.set_defaults(func=cmd_down)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code
