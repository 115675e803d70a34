"""One student's rows in BigQuery: found, exported, and erased without one job holding both id and pseudonym.

BigQuery keeps every job's SQL and parameters in its job history (INFORMATION_SCHEMA.JOBS, about 180 days),
readable by anyone who may list the project's jobs. A job that named both the Cademi id and the pseudonym
would keep the link the erasure drops. So the pseudonym reaches BigQuery only through a load job into a
one-row scratch table (`_erasure_<random>`; a load job's configuration carries no values), and every query
that names the id reads the pseudonym from that table: `SET user_id = (SELECT p FROM scratch)`, and a text's
replacement is a template holding a marker (privacy_match.MARK) that BigQuery replaces with it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from google.api_core.exceptions import NotFound
from google.cloud import bigquery

from progress_monitor.errors import GOOGLE_ERRORS, pipeline_error
from progress_monitor.pipeline import runs
from progress_monitor.platform import warehouse
from progress_monitor.platform.access import needs
from progress_monitor.privacy.inventory import CONTACT, ID, ID_LIST, REPORT, REPORTS, TABLES, TEXT
from progress_monitor.privacy.match import MARK, mentions, rewritten
from progress_monitor.services import Services
from progress_monitor.settings import Settings

log = logging.getLogger("progress_monitor.commands.privacy")
# Run-time tables of an attempt that died: a load's or the Slack agent's staging tables, an erasure's scratch.
LEFTOVERS = ("_staging_", "_erasure_")
DEAD_AFTER = timedelta(hours=1)
SCRATCH_EXPIRES = timedelta(days=1)


def id_column(table: str) -> str | None:
    """The column a table's rows of a student are found by; None when only its text may quote the id."""
    return next((c for c, h in TABLES[table].items() if h in (ID, CONTACT)), None)


def _texts(table: str) -> list[str]:
    return [c for c, h in TABLES[table].items() if h in (TEXT, ID_LIST)]


def _names(handling: Any, text: Any, user_id: int) -> bool:
    if handling is ID_LIST:
        return str(user_id) in (p.strip() for p in str(text or "").split(","))
    return mentions(text, user_id)


def unfinished_runs(svc: Services) -> list[str]:
    """The runs an erasure waits for: those that can still progress (neither finished nor closed, and of a week
    that can still be extracted, runs.extraction_refusal), since their roster, shards and resume positions must
    not change under it. A run that can never finish is closed by the operator (`replay close`)."""
    now = svc.now()
    return [
        str(run_id)
        for run_id in runs.unended_runs(svc)
        if runs.extraction_refusal(svc.cfg, run_id.snapshot_date, now) is None
    ]


def naming_rows(svc: Services, table: str, user_id: int, columns: list[str]) -> list[dict[str, Any]]:
    """The rows of `table` naming the student (by id, or quoting it the way our code writes it), with
    `columns` and the text columns."""
    key, texts = id_column(table), _texts(table)
    found_by = [f"{key} = @u"] if key else []
    found_by += [f"STRPOS({c}, @text) > 0" for c in texts]
    wanted = list(dict.fromkeys(columns + ([key] if key else []) + texts))
    rows = warehouse.query(
        svc,
        f"SELECT {', '.join(wanted)} FROM `${{{table}}}` WHERE {' OR '.join(found_by)}",
        u=user_id,
        text=str(user_id),
    )
    return [row for row in rows if _row_names(table, row, user_id)]


def _row_names(table: str | None, row: dict[str, Any], user_id: int) -> bool:
    """Whether a row of `table` (None: a load's staging table, found by `user_id`) names the student."""
    if table is None:
        return row.get("user_id") == user_id
    key, handling = id_column(table), TABLES[table]
    return bool(key and row.get(key) == user_id) or any(_names(handling[c], row.get(c), user_id) for c in _texts(table))


def table_rows(svc: Services, user_id: int) -> dict[str, int]:
    """Per table (and report), the rows that name the student."""
    counts = {}
    for table in TABLES:
        if rows := naming_rows(svc, table, user_id, []):
            counts[table] = len(rows)
    for name, handling in REPORTS.items():
        if handling is REPORT:
            n = warehouse.query(svc, f"SELECT COUNT(*) AS n FROM `${{{name}}}` WHERE user_id = @u", u=user_id)
            if n and int(n[0]["n"]):
                counts[name] = int(n[0]["n"])
    return counts


def erase_tables(svc: Services, user_id: int, scratch: str) -> None:
    """Contact rows deleted; texts quoting the id and lists of ids rewritten; id columns set to the pseudonym,
    read from the scratch table (`scratch`: its full id)."""
    pseudonym = "CAST((SELECT p FROM `${scratch}`) AS STRING)"
    for table, columns in TABLES.items():
        key = id_column(table)
        if CONTACT in columns.values():
            warehouse.query(svc, f"DELETE FROM `${{{table}}}` WHERE {key} = @u", u=user_id)
            continue
        for column in _texts(table):
            olds = warehouse.query(
                svc,
                f"SELECT DISTINCT {column} AS v FROM `${{{table}}}` WHERE STRPOS({column}, @text) > 0",
                text=str(user_id),
            )
            for old in (str(row["v"]) for row in olds):
                template = rewritten(columns[column], old, user_id, MARK)
                if template != old:
                    warehouse.query(
                        svc,
                        f"UPDATE `${{{table}}}` SET {column} = REPLACE(@template, @mark, {pseudonym}) "
                        f"WHERE {column} = @old",
                        sql_vars={"scratch": scratch},
                        template=template,
                        mark=MARK,
                        old=old,
                    )
        if key is not None:
            warehouse.query(
                svc,
                f"UPDATE `${{{table}}}` SET {key} = (SELECT p FROM `${{scratch}}`) WHERE {key} = @u",
                sql_vars={"scratch": scratch},
                u=user_id,
            )


def scratch_id(cfg: Settings, token: str) -> str:
    return f"{cfg.gcp_project}.{cfg.bq_dataset}._erasure_{token}"


@needs("bigquery.jobs project", "dataset.write main")  # the operator command only
def load_scratch(svc: Services, token: str, pseudonym: int) -> str:
    """The one-row scratch table holding the pseudonym, written by a load job; returns its full id."""
    table = scratch_id(svc.cfg, token)
    spec = bigquery.Table(table, schema=[bigquery.SchemaField("p", "INT64", mode="REQUIRED")])
    spec.expires = svc.now() + SCRATCH_EXPIRES
    try:
        svc.bigquery.create_table(spec, exists_ok=True)
    except GOOGLE_ERRORS as exc:
        raise pipeline_error(exc, "cannot create the erasure's scratch table") from exc
    warehouse.load_rows(svc, table, spec.schema, [{"p": pseudonym}])
    return table


@needs("dataset.write main")  # the operator command only
def drop_scratch(svc: Services, table: str) -> None:
    try:
        svc.bigquery.delete_table(table, not_found_ok=True)
    except GOOGLE_ERRORS as exc:
        raise pipeline_error(exc, "cannot drop the erasure's scratch table") from exc


def _run_time_tables(svc: Services, now: datetime, young: bool) -> Iterator[bigquery.table.TableListItem]:
    """The leftover-prone tables (LEFTOVERS) of the datasets that hold them: created less than DEAD_AFTER ago
    when `young` (a load or a Slack agent's write may still be using them), else older (or of unknown age)."""
    cfg = svc.cfg
    for dataset in (cfg.bq_dataset, cfg.bq_restricted_dataset, cfg.bq_slack_staging_dataset):
        for table in svc.bigquery.list_tables(f"{cfg.gcp_project}.{dataset}"):
            created = getattr(table, "created", None)
            is_young = created is not None and created >= now - DEAD_AFTER
            if table.table_id.startswith(LEFTOVERS) and is_young == young:
                yield table


@needs("dataset.write main", "dataset.write restricted", "dataset.write slack_staging")  # the operator command only
def writes_in_flight(svc: Services, user_id: int, now: datetime) -> list[str]:
    """Staging tables younger than DEAD_AFTER that may be merged back after the erasure's passes: a load's that
    holds the student's rows, and the Slack agent's that names the student or is still empty (its load job not
    done: a load commits at once, so an empty table may be about to hold anyone; tutors/records.py).

    Their rows are read with tabledata.list, not a query: a job naming the id beside a Slack staging table (whose
    creation time is a click's `acted_at`) would link them in BigQuery's job history."""
    found = []
    for table in _run_time_tables(svc, now, young=True):
        if not table.table_id.startswith("_staging_"):
            continue
        try:
            rows = [dict(row.items()) for row in svc.bigquery.list_rows(table.reference)]
        except NotFound:
            continue  # dropped by its load or write meanwhile
        target = next((t for t in TABLES if table.table_id.startswith(f"_staging_{t}_")), None)
        being_loaded = not rows and table.dataset_id == svc.cfg.bq_slack_staging_dataset
        if being_loaded or any(_row_names(target, row, user_id) for row in rows):
            found.append(table.table_id)
    return sorted(found)


@needs("dataset.write main", "dataset.write restricted", "dataset.write slack_staging")  # the operator command only
def drop_dead_tables(svc: Services, now: datetime) -> int:
    """Staging tables of load attempts and Slack writes that died (they expire after a day, and may hold the
    student's rows) and scratch tables of erasures that died (a pseudonym)."""
    dropped = 0
    for table in _run_time_tables(svc, now, young=False):
        svc.bigquery.delete_table(table.reference, not_found_ok=True)
        dropped += 1
    return dropped
