"""The `runs` and `failures` tables: a run's row is recorded once and its counters derived from the ledger."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from progress_monitor.contracts.values import RunId, monday_of
from progress_monitor.platform.warehouse import query
from progress_monitor.services import Services
from progress_monitor.settings import Settings

FINISHED = ("succeeded", "incomplete")  # every tag loaded; `incomplete`: too many failed extractions
CLOSED = "closed"  # ended by the operator with a reason (close_run): it can never finish
ENDED = (*FINISHED, CLOSED)


def extraction_refusal(cfg: Settings, week: date, now: datetime) -> str | None:
    """Why `week` cannot be extracted now (None: it can). The one rule for the schedule, the extraction of a
    piece, the daily resume and `replay resume`/`reextract`: Cademi serves today's progress only, so a week is
    extracted while it is the current one; a past week would file today's progress under an old date (rebuild
    a past week from its kept shards with `replay history`). The simulator serves any week."""
    current = monday_of(now, cfg.timezone)
    if week > current:
        return f"week {week} has not started yet"
    if week < current and not cfg.cademi_is_simulator:
        return f"past week {week}: Cademi serves only the current week ({current})"
    return None


def start_run(svc: Services, run_id: RunId, tags_total: int) -> bool:
    """Record the run once; True when an earlier delivery already fanned it out."""
    query(
        svc,
        """MERGE `${runs}` T USING (SELECT @run_id AS run_id) S ON T.run_id = S.run_id
           WHEN NOT MATCHED THEN INSERT (run_id, snapshot_date, status, tags_total, tags_done, errors, started_at)
           VALUES (@run_id, @snapshot_date, 'running', @tags_total, 0, 0, @now)""",
        run_id=str(run_id),
        snapshot_date=run_id.snapshot_date,
        tags_total=tags_total,
        now=svc.now(),
    )
    rows = query(svc, "SELECT fanned_out_at FROM `${runs}` WHERE run_id = @run_id", run_id=str(run_id))
    return bool(rows and rows[0]["fanned_out_at"] is not None)


def mark_fanned_out(svc: Services, run_id: RunId) -> None:
    query(
        svc,
        "UPDATE `${runs}` SET fanned_out_at = @now WHERE run_id = @run_id",
        run_id=str(run_id),
        now=svc.now(),
    )
    refresh_run(svc, run_id)


def add_reconciled(svc: Services, run_id: RunId, count: int) -> None:
    """The daily check sent `count` more of the run's objects to the loader again: run health shows the total."""
    query(
        svc,
        "UPDATE `${runs}` SET reconciled = COALESCE(reconciled, 0) + @count WHERE run_id = @run_id",
        count=count,
        run_id=str(run_id),
    )


def mark_reports_refreshed(svc: Services, run_id: RunId) -> None:
    query(
        svc,
        "UPDATE `${runs}` SET reports_refreshed_at = @now WHERE run_id = @run_id",
        now=svc.now(),
        run_id=str(run_id),
    )


# Each run counter is a sum over the run's rows of the loads ledger (one row per loaded shard).
LEDGER_SUMS = {
    "records_loaded": "rows_merged",
    "failed_extractions": "failed",
    "no_access": "no_access",
    "students": "students",
    "api_calls": "api_calls",
    "rate_limited": "rate_limited",
    "dq_rejected": "rows_in_shard - rows_merged",
    # carrying (carry.py): rows carried, calls that saved, and the verification sample's outcome
    "rows_carried": "carried",
    "calls_saved": "calls_saved",
    "carry_checked": "carry_checked",
    "carry_mismatches": "carry_mismatches",
    "carry_unverified": "carry_unverified",
}


def refresh_run(svc: Services, run_id: RunId) -> None:
    """Recompute a run's counters and status from the loads ledger (idempotent, whatever the order).

    A tag is done when its last piece *and every piece before it* are loaded, so a piece still being retried
    keeps the run `running`. A finished run whose failed extractions exceed RUN_MAX_FAILED_SHARE of its records
    is `incomplete`: its good rows are in the history, but it is not reported as a success."""
    # Composed as text, then rendered once: `${loads}` appears in every generated sub-query.
    ledger = "FROM `${loads}` WHERE run_id = @run_id"
    counters = [f"{column} = (SELECT COALESCE(SUM({expr}), 0) {ledger})" for column, expr in LEDGER_SUMS.items()]
    counters += [
        "tags_done = (SELECT COUNT(*) FROM (SELECT tag_id " + ledger + " GROUP BY tag_id"
        " HAVING MAX(CASE WHEN last_piece THEN 1 ELSE 0 END) = 1"
        " AND COUNT(DISTINCT piece) = MAX(CASE WHEN last_piece THEN piece ELSE -1 END) + 1))",
        "pieces_loaded = (SELECT COUNT(*) " + ledger + ")",
        "errors = (SELECT COUNT(*) FROM `${failures}` WHERE run_id = @run_id)",
    ]
    query(svc, "UPDATE `${runs}` SET " + ",\n".join(counters) + " WHERE run_id = @run_id", run_id=str(run_id))
    query(
        svc,
        """UPDATE `${runs}` SET
             status = CASE WHEN status = @closed THEN status
                           WHEN fanned_out_at IS NOT NULL AND tags_done >= tags_total
                             THEN IF(failed_extractions > @max_failed_share * records_loaded, 'incomplete', 'succeeded')
                           WHEN errors > 0 THEN 'failed' ELSE 'running' END,
             finished_at = CASE WHEN fanned_out_at IS NOT NULL AND tags_done >= tags_total
                                THEN COALESCE(finished_at, @now) ELSE NULL END
           WHERE run_id = @run_id""",
        run_id=str(run_id),
        now=svc.now(),
        max_failed_share=svc.cfg.run_max_failed_share,
        closed=CLOSED,
    )


@dataclass(frozen=True)
class RunState:
    status: str | None  # None: no such run
    reports_refreshed: bool  # its reports were rebuilt once it finished (and its digests asked for)
    newest_week: date | None  # the newest week any run covers


def run_state(svc: Services, run_id: RunId) -> RunState:
    rows = query(
        svc,
        """SELECT (SELECT status FROM `${runs}` WHERE run_id = @run_id) AS status,
             (SELECT reports_refreshed_at IS NOT NULL FROM `${runs}` WHERE run_id = @run_id) AS refreshed,
             (SELECT MAX(snapshot_date) FROM `${runs}`) AS newest""",
        run_id=str(run_id),
    )
    row = rows[0] if rows else {}
    status = row.get("status")
    return RunState(None if status is None else str(status), bool(row.get("refreshed")), row.get("newest"))


def close_run(svc: Services, run_id: RunId, reason: str, by: str) -> str | None:
    """End a run that can never finish (a tag deleted in Cademi, a fan-out that was dead-lettered, a past week
    left unfinished), recording why and by whom: run health shows it, the resume and the erasures no longer wait
    for it, and no digest follows. Returns the run's status before (None: no such run); a finished run is left
    as it is."""
    before = run_status(svc, run_id)
    if before is None or before in ENDED:
        return before
    query(
        svc,
        """UPDATE `${runs}` SET status = @closed, closed_at = @now, closed_reason = @reason, closed_by = @by
           WHERE run_id = @run_id AND status NOT IN UNNEST(@ended)""",
        closed=CLOSED,
        now=svc.now(),
        reason=reason,
        by=by,
        run_id=str(run_id),
        ended=list(ENDED),
    )
    return before


def unended_runs(svc: Services) -> list[RunId]:
    """Every run neither finished nor closed, oldest first."""
    rows = query(svc, "SELECT run_id FROM `${runs}` WHERE status NOT IN UNNEST(@ended)", ended=list(ENDED))
    found = [RunId.parse_or_none(str(r["run_id"])) for r in rows]
    return sorted(r for r in found if r is not None)


def run_status(svc: Services, run_id: RunId) -> str | None:
    rows = query(svc, "SELECT status FROM `${runs}` WHERE run_id = @run_id", run_id=str(run_id))
    return str(rows[0]["status"]) if rows else None
