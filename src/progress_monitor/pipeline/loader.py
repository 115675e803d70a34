"""Loading one shard into BigQuery: load job into a staging table, quality checks, MERGE, then the ledger.

The quality checks are defined once (`CHECKS`); their counts and the MERGE's filter are generated from them.
Every step is idempotent: a duplicate event, a re-written shard or a re-run week leaves one row per
(snapshot_date, tag_id, user_id, product_id) holding the best observation (the history rule below).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from google.api_core import exceptions
from google.cloud import bigquery

from progress_monitor.contracts.objects import ShardMeta
from progress_monitor.contracts.values import Status, monday_of
from progress_monitor.errors import GOOGLE_ERRORS, pipeline_error
from progress_monitor.pipeline.runs import refresh_run
from progress_monitor.platform.access import needs
from progress_monitor.platform.warehouse import query, schema_fields
from progress_monitor.services import Services

STAGING_TTL = timedelta(days=1)
# What a load job stages, per kind of object: the final table's columns but those its MERGE writes itself.
STAGED = {
    "progress": ("progress_history", ("last_failed_at", "last_failure", "shard", "loaded_at")),
    "contacts": ("students", ("updated_at",)),
}
PROGRESS_COLUMNS = (
    "snapshot_date, tag_id, user_id, product_id, status, total, assistidas, completas, error, run_id, extracted_at,"
    " last_access_at, carried_from"
)
# Each check: the ledger column counting the rows that fail it, and the condition of a failing row.
# A row is merged only when it fails none. Conditions are NULL-safe: a NULL outcome counts as failing.
CHECKS = {
    "dq_out_of_range": f"status = '{Status.OK}' AND (total IS NULL OR total < 0 OR total > 100)",
    "dq_bad_dates": "snapshot_date IS NULL OR snapshot_date != @snapshot_date OR snapshot_date > @today",
    "dq_unknown_products": """product_id IS NULL OR product_id NOT IN (
        SELECT t.product_id FROM `${tracks}` t JOIN `${registered_tags}` r ON t.track_id = r.track_id
        WHERE r.tag_id = @tag_id)""",
    "dq_bad_status": f"""status IS NULL OR status NOT IN {Status.sql_list()} OR user_id IS NULL
        OR tag_id IS NULL OR tag_id != @tag_id OR extracted_at IS NULL""",
}
FAILS = {name: f"COALESCE(({condition}), TRUE)" for name, condition in CHECKS.items()}
VALID_ROW = "NOT (" + " OR ".join(FAILS.values()) + ")"
ROW_KEY = "CONCAT(CAST(user_id AS STRING), '/', CAST(product_id AS STRING))"


@dataclass(frozen=True)
class LoadOutcome:
    rows_in_shard: int
    rows_merged: int  # distinct valid keys: what the MERGE wrote (or found already there)
    checks: dict[str, int]  # ledger column -> rows; dq_duplicates counts only among valid rows


def staging_fields(kind: str) -> list[Any]:
    """The schema a `kind` object ("progress" or "contacts") is loaded with, every column nullable."""
    table, merge_written = STAGED[kind]
    return [f for f in schema_fields(table, nullable=True) if f.name not in merge_written]


@needs("dataset.write main", "dataset.write restricted")  # contacts staged in the restricted one
def _staging_table(svc: Services, kind: str, uri: str, generation: int, fields: list[Any]) -> str:
    """A staging table per load attempt, expiring after a day if the attempt dies before dropping it.

    Staged rows of a kind that holds contact data go to the restricted dataset, like their final table."""
    # Unique per attempt: two deliveries of the same event must not load into, or drop, each other's table.
    settings = svc.cfg
    digest = hashlib.sha256(f"{uri}#{generation}".encode()).hexdigest()[:16]
    dataset = settings.bq_restricted_dataset if kind == "contacts" else settings.bq_dataset
    name = f"{settings.gcp_project}.{dataset}._staging_{kind}_{digest}_{uuid.uuid4().hex[:8]}"
    table = bigquery.Table(name, schema=fields)
    table.expires = svc.now() + STAGING_TTL
    svc.bigquery.create_table(table, exists_ok=True)
    return name


@needs("bigquery.jobs project", "objects.read shards")  # the job reads the object as this identity
def _load_into(svc: Services, table: str, uri: str, fields: list[Any]) -> None:
    config = bigquery.LoadJobConfig(
        schema=fields,
        source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
        create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
        max_bad_records=0,
    )
    try:
        svc.bigquery.load_table_from_uri(uri, table, job_config=config).result(timeout=300)
    except GOOGLE_ERRORS as exc:  # NotFound here: the shard no longer exists, which no retry changes
        raise pipeline_error(exc, f"load job for {uri}", permanent=(exceptions.NotFound,)) from exc


@needs("dataset.write main", "dataset.write restricted")
def _drop(svc: Services, table: str) -> None:
    svc.bigquery.delete_table(table, not_found_ok=True)


CHECK_COUNTS = (
    "SELECT COUNT(*) AS rows_in_shard,\n"
    + "".join(f"COALESCE(SUM(CASE WHEN {fails} THEN 1 ELSE 0 END), 0) AS {name},\n" for name, fails in FAILS.items())
    + f"COALESCE(SUM(CASE WHEN {VALID_ROW} THEN 1 ELSE 0 END), 0) AS valid_rows,\n"
    + f"COUNT(DISTINCT CASE WHEN {VALID_ROW} THEN {ROW_KEY} END) AS valid_keys\n"
    + "FROM `${staging}`"
)


# The history rule: an observation never replaces a better one. `ok` beats `no_access`, which beats `failed`,
# whatever their times and whether read this week or carried (carry.py): the same events give the same history
# with carrying on or off (a carried `ok` stands for the read `ok` carrying off would have made, and a read `ok`
# is kept over a later `no_access` too). Between two of the same status a row read this week beats a carried
# one, then the later extraction wins. A failed attempt that does not win still leaves its time and error in
# last_failed_at / last_failure. Both are functions of the set of observations, not of their order, so a
# replay, a re-run or a late redelivery reaches the same row. Rank: 2 x status rank + 1 when read.
def _rank(row: str) -> str:
    read = f"IF({row}carried_from IS NULL, 1, 0)"
    cases = " ".join(f"WHEN '{s}' THEN {s.rank}" for s in Status)
    return f"(2 * (CASE {row}status {cases} ELSE -1 END) + {read})"


T_RANK = _rank("T.")
S_WINS = f"(S.status_rank > {T_RANK} OR (S.status_rank = {T_RANK} AND S.extracted_at >= T.extracted_at))"
S_LATEST_FAILURE = f"(S.status = '{Status.FAILED}' AND (T.last_failed_at IS NULL OR S.extracted_at > T.last_failed_at))"
# The student's last access is a fact of the listing, not of the progress call: whichever observation wins,
# the row keeps the latest access any observation saw (a later listing that omits it erases nothing).
S_NEWER_ACCESS = "(T.last_access_at IS NULL OR S.last_access_at > T.last_access_at)"
LATEST_ACCESS = f"IF({S_NEWER_ACCESS} AND S.last_access_at IS NOT NULL, S.last_access_at, T.last_access_at)"
MERGE_PROGRESS = (
    """MERGE `${progress_history}` T
    USING (
      SELECT """
    + PROGRESS_COLUMNS
    + """, status_rank FROM (
        -- Duplicates inside one shard keep the best observation; the MERGE then sees one row per key.
        SELECT *, ROW_NUMBER() OVER (
          PARTITION BY user_id, product_id ORDER BY status_rank DESC, extracted_at DESC) AS rn
        FROM (SELECT *, """
    + _rank("")
    + """ AS status_rank FROM `${staging}` WHERE """
    + VALID_ROW
    + f""")
      ) WHERE rn = 1
    ) S
    ON T.snapshot_date = S.snapshot_date AND T.tag_id = S.tag_id
       AND T.user_id = S.user_id AND T.product_id = S.product_id
    WHEN MATCHED AND {S_WINS} THEN UPDATE SET
      status = S.status, total = S.total, assistidas = S.assistidas, completas = S.completas,
      error = S.error, run_id = S.run_id, extracted_at = S.extracted_at, carried_from = S.carried_from,
      shard = @shard, loaded_at = @now,
      last_failure = IF({S_LATEST_FAILURE}, S.error, T.last_failure),
      last_failed_at = IF({S_LATEST_FAILURE}, S.extracted_at, T.last_failed_at), last_access_at = {LATEST_ACCESS}
    WHEN MATCHED AND {S_LATEST_FAILURE} THEN UPDATE SET last_failure = S.error, last_failed_at = S.extracted_at,
      last_access_at = {LATEST_ACCESS}
    WHEN MATCHED AND S.last_access_at IS NOT NULL AND {S_NEWER_ACCESS} THEN UPDATE SET last_access_at = S.last_access_at
    WHEN NOT MATCHED THEN INSERT ("""
    + PROGRESS_COLUMNS
    + f""", last_failed_at, last_failure, shard, loaded_at)
      VALUES (S.snapshot_date, S.tag_id, S.user_id, S.product_id, S.status, S.total, S.assistidas,
              S.completas, S.error, S.run_id, S.extracted_at, S.last_access_at, S.carried_from,
              IF(S.status = '{Status.FAILED}', S.extracted_at, NULL),
              IF(S.status = '{Status.FAILED}', S.error, NULL), @shard, @now)"""
)


def load_progress_shard(svc: Services, uri: str, shard: str, generation: int, meta: ShardMeta) -> LoadOutcome:
    """Load one progress shard (described by its metadata), then record it in the ledger and the run."""
    task = meta.task
    fields = staging_fields("progress")
    staging = _staging_table(svc, "progress", uri, generation, fields)
    _load_into(svc, staging, uri, fields)
    try:
        # The last day of the current week in the school's time zone: a snapshot from the future is refused.
        today = monday_of(svc.now(), svc.cfg.timezone) + timedelta(days=6)
        params: dict[str, Any] = {"tag_id": task.tag_id, "snapshot_date": task.snapshot_date, "today": today}
        counts = query(svc, CHECK_COUNTS, sql_vars={"staging": staging}, **params)[0]
        query(svc, MERGE_PROGRESS, sql_vars={"staging": staging}, shard=shard, now=svc.now(), **params)
        checks = {name: int(counts[name]) for name in CHECKS}
        checks["dq_duplicates"] = int(counts["valid_rows"]) - int(counts["valid_keys"])
        outcome = LoadOutcome(int(counts["rows_in_shard"]), int(counts["valid_keys"]), checks)
        _record_load(svc, shard, generation, meta, outcome)
    finally:
        _drop(svc, staging)
    refresh_run(svc, task.run_id)
    return outcome


def _record_load(svc: Services, shard: str, generation: int, meta: ShardMeta, outcome: LoadOutcome) -> None:
    """One ledger row per shard: a duplicate event keeps the row, a re-written shard replaces it."""
    counts = meta.counts()
    values: dict[str, Any] = {
        "shard": shard,
        "generation": generation,
        "run_id": str(meta.task.run_id),
        "snapshot_date": meta.task.snapshot_date,
        "tag_id": meta.task.tag_id,
        "piece": meta.task.piece,
        "last_piece": meta.last_piece,
        "rows_in_shard": outcome.rows_in_shard,
        "rows_merged": outcome.rows_merged,
        **{name: counts[name] for name in ("failed", "no_access", "students", "api_calls", "rate_limited")},
        **{name: counts[name] for name in ShardMeta.CARRY_COUNTS},
        **outcome.checks,
        "loaded_at": svc.now(),
    }
    columns = ", ".join(values)
    source = ", ".join(f"@{k} AS {k}" for k in values)
    updates = ", ".join(f"{k} = S.{k}" for k in values if k != "shard")
    inserts = ", ".join(f"S.{k}" for k in values)
    query(
        svc,
        "MERGE `${loads}` T USING (SELECT " + source + ") S ON T.shard = S.shard\n"
        "WHEN MATCHED AND S.generation > T.generation THEN UPDATE SET " + updates + "\n"
        "WHEN NOT MATCHED THEN INSERT (" + columns + ") VALUES (" + inserts + ")",
        **values,
    )


MERGE_CONTACTS = """MERGE `${students}` T
    USING (SELECT user_id, ANY_VALUE(nome) AS nome, ANY_VALUE(email) AS email, ANY_VALUE(celular) AS celular
           FROM `${staging}` WHERE user_id IS NOT NULL GROUP BY user_id) S
    ON T.user_id = S.user_id
    WHEN MATCHED AND @snapshot_date >= T.last_seen_date THEN UPDATE SET
      -- An empty value from Cademi never erases a stored one.
      nome = COALESCE(NULLIF(TRIM(S.nome), ''), T.nome), email = COALESCE(NULLIF(TRIM(S.email), ''), T.email),
      celular = COALESCE(NULLIF(TRIM(S.celular), ''), T.celular), last_tag_id = @tag_id,
      last_seen_date = @snapshot_date, updated_at = @now
    WHEN NOT MATCHED THEN INSERT (user_id, nome, email, celular, last_tag_id, last_seen_date, updated_at)
      VALUES (S.user_id, S.nome, S.email, S.celular, @tag_id, @snapshot_date, @now)"""


def load_contacts(svc: Services, uri: str, generation: int, *, tag_id: int, snapshot_date: date) -> int:
    """Merge a tag's contact data into the restricted students table (latest snapshot wins)."""
    fields = staging_fields("contacts")
    staging = _staging_table(svc, "contacts", uri, generation, fields)
    _load_into(svc, staging, uri, fields)
    try:
        rows = query(svc, "SELECT COUNT(*) AS n FROM `${staging}`", sql_vars={"staging": staging})
        query(
            svc,
            MERGE_CONTACTS,
            sql_vars={"staging": staging},
            tag_id=tag_id,
            snapshot_date=snapshot_date,
            now=svc.now(),
        )
    finally:
        _drop(svc, staging)
    return int(rows[0]["n"])
