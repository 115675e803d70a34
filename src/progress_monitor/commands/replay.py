"""Operator commands: rebuild the history from the shards kept in Cloud Storage, or re-extract one tag's week.

    python -m progress_monitor replay history --from 2026-10-05 --to 2026-10-26
    python -m progress_monitor replay reextract --week 2026-11-16 --tag 5012
    python -m progress_monitor replay resume --run 2026-11-16
    python -m progress_monitor replay close --run 2026-11-16 --reason "tag 5012 deleted in Cademi" --by ana@escola

All read the functions' settings (`--settings FILE` from Terraform, or the environment). `history` loads
every progress shard of the
snapshot weeks in the range through the loader's own code (load job, quality checks, MERGE by business
key), so replaying twice changes nothing and an older shard never overwrites a newer extraction.
`reextract` publishes a schedule message for one tag (a new run id `WEEK-LABEL`), so the normal pipeline
extracts it again; Cademi serves *current* progress, so in the cloud only the current week is meaningful.
`resume` re-publishes what an unfinished run is waiting for (as the daily health check does); like the schedule,
it re-extracts only the current week (pipeline/runs.py extraction_refusal). `close` ends a run that can never
finish, with a reason: run health shows it, and nothing (the resume, an erasure) waits for it any more.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from progress_monitor.commands import options
from progress_monitor.contracts.events import ObjectRef
from progress_monitor.contracts.messages import ScheduleRequest
from progress_monitor.contracts.objects import week_shards_prefix
from progress_monitor.contracts.values import RUN_LABEL, RunId
from progress_monitor.pipeline import reporting, runs
from progress_monitor.platform import logs
from progress_monitor.platform.access import needs
from progress_monitor.services import Services
from progress_monitor.stages.daily import reload_unloaded, resume_run
from progress_monitor.stages.load import load_object

log = logging.getLogger("progress_monitor.commands.replay")
MAX_WEEKS = 520


@dataclass(frozen=True)
class ReplaySummary:
    weeks: int
    shards: int
    rows: int


def mondays(first: date, last: date) -> list[date]:
    """Every snapshot week (Monday) from the week of `first` to the week of `last`."""
    start = first - timedelta(days=first.weekday())
    if last < first:
        raise ValueError("the range ends before it starts")
    weeks = [start + timedelta(weeks=i) for i in range((last - start).days // 7 + 1)]
    if len(weeks) > MAX_WEEKS:
        raise ValueError(f"at most {MAX_WEEKS} weeks at a time")
    return weeks


@needs("objects.read {week_shards_prefix}")
def replay_history(svc: Services, first: date, last: date) -> ReplaySummary:
    """Load every progress shard of the weeks in the range again (idempotent), then refresh the reports."""
    bucket = svc.shards
    weeks = mondays(first, last)
    shards = rows = 0
    for week in weeks:
        for blob in bucket.list_blobs(prefix=week_shards_prefix(week)):
            ref = ObjectRef(svc.cfg.shards_bucket, blob.name, int(blob.generation or 0))
            result = load_object(svc, ref, refresh_reports=False)  # once at the end instead
            if result is not None:
                shards += 1
                rows += result.rows
                log.info("replayed %s: %d rows", blob.name, result.rows, extra={"shard": blob.name})
    reporting.refresh(svc)
    return ReplaySummary(len(weeks), shards, rows)


def reextract(svc: Services, week: date, tag_id: int, label: str) -> RunId:
    """Ask the pipeline to extract one tag's week again; returns the new run's id."""
    request = ScheduleRequest(week=week, rerun=label, tag_ids=frozenset({tag_id}))
    svc.send(request)
    return request.run_id(svc.cfg.timezone, svc.now())


def _run_id(text: str) -> RunId:
    try:
        return RunId.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _reason(text: str) -> str:
    text = " ".join(text.split())
    if not 3 <= len(text) <= 300:
        raise argparse.ArgumentTypeError("3 to 300 characters")
    return text


def _label(text: str) -> str:
    if not RUN_LABEL.fullmatch(text):
        raise argparse.ArgumentTypeError("a label is 1-20 lower-case letters, digits or dashes")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m progress_monitor replay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    history = sub.add_parser("history", help="rebuild the history of a week range from the kept shards")
    history.add_argument("--from", dest="first", required=True, type=date.fromisoformat)
    history.add_argument("--to", dest="last", required=True, type=date.fromisoformat)
    resume = sub.add_parser("resume", help="re-publish what an unfinished run is waiting for (idempotent)")
    resume.add_argument("--run", required=True, type=_run_id)
    again = sub.add_parser("reextract", help="extract one tag's week again through the pipeline")
    again.add_argument("--week", required=True, type=date.fromisoformat)
    again.add_argument("--tag", required=True, type=int)
    again.add_argument("--label", type=_label, default=f"manual{datetime.now(UTC):%H%M%S}")
    close = sub.add_parser("close", help="end a run that can never finish, recording why")
    close.add_argument("--run", required=True, type=_run_id)
    close.add_argument("--reason", required=True, type=_reason)
    close.add_argument("--by", required=True, type=_reason, help="who closes it (an e-mail or a name)")
    for command in (history, resume, again, close):
        options.add_settings_option(command)
    args = parser.parse_args(argv)
    logs.configure()
    svc = options.build(args)
    if args.command == "history":
        summary = replay_history(svc, args.first, args.last)
        print(json.dumps(summary.__dict__))
        return 0
    if args.command == "close":
        before = runs.close_run(svc, args.run, args.reason, args.by)
        if before is None:
            print(f"refusing: no run {args.run}", file=sys.stderr)
            return 2
        if before in runs.FINISHED:
            print(f"refusing: run {args.run} already finished ({before}); nothing changed", file=sys.stderr)
            return 2
        print(json.dumps({"run": str(args.run), "was": before, "now": runs.run_status(svc, args.run)}))
        return 0
    week = args.run.snapshot_date if args.command == "resume" else args.week
    if (refusal := runs.extraction_refusal(svc.cfg, week - timedelta(days=week.weekday()), svc.now())) is not None:
        advice = "rebuild it from its shards with `replay history`, or close the run with `replay close`"
        print(f"refusing: {refusal}; {advice}", file=sys.stderr)
        if args.command == "resume":  # loading what was extracted is still right
            print(json.dumps(reload_unloaded(svc, args.run)))
        return 2
    if args.command == "resume":
        print(json.dumps(resume_run(svc, args.run)))
        return 0
    print(str(reextract(svc, args.week, args.tag, args.label)))
    return 0
