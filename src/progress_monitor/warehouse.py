"""BigQuery: table definitions from the schema files, the registry, runs, and the idempotent shard loader."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from typing import Any

from progress_monitor import gcp
from progress_monitor.errors import PermanentError, TransientError
from progress_monitor.settings import Settings

log = logging.getLogger(__name__)

TABLES = ("tracks", "registered_tags", "students", "progress_history", "runs", "loads", "failures")
RESTRICTED = frozenset({"students", "tutor_list"})  # contact data: the tutors-only dataset
STAGING_TTL = timedelta(days=1)
# A row passes the quality checks when this holds; failing rows are counted and not merged.
VALID_ROW = """
    user_id IS NOT NULL AND product_id IS NOT NULL AND tag_id = @tag_id AND extracted_at IS NOT NULL
    AND status IN ('ok', 'failed', 'no_access')
    AND (status != 'ok' OR (total IS NOT NULL AND total >= 0 AND total <= 100))
    AND snapshot_date = @snapshot_date AND snapshot_date <= @today
    AND product_id IN (SELECT product_id FROM `{tracks}` t JOIN `{tags}` r ON t.track_id = r.track_id
                       WHERE r.tag_id = @tag_id)
"""
PROGRESS_COLUMNS = (
    "snapshot_date, tag_id, user_id, product_id, status, total, assistidas, completas, error, run_id, extracted_at"
)


def schema_json(name: str) -> dict[str, Any]:
    """The schema file of a table (shared with Terraform and the tests)."""
    text = resources.files("progress_monitor").joinpath(f"schemas/{name}.json").read_text(encoding="utf-8")
    value: dict[str, Any] = json.loads(text)
    return value


def schema_fields(name: str, *, nullable: bool = False) -> list[Any]:
    from google.cloud import bigquery

    fields = []
    for f in schema_json(name)["fields"]:
        mode = "NULLABLE" if nullable else f.get("mode", "NULLABLE")
        fields.append(bigquery.SchemaField(f["name"], f["type"], mode=mode, description=f.get("description")))
    return fields


def dataset_of(settings: Settings, name: str) -> str:
    return settings.bq_restricted_dataset if name in RESTRICTED else settings.bq_dataset


def table_id(settings: Settings, name: str) -> str:
    return f"{settings.gcp_project}.{dataset_of(settings, name)}.{name}"


class _TableNames(dict[str, str]):
    """`{name}` in SQL becomes the table's full id."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings

    def __missing__(self, key: str) -> str:
        return table_id(self.settings, key)


def ensure_tables(settings: Settings) -> None:
    """Create the dataset and every table from the schema files (Terraform does this in the cloud)."""
    from google.cloud import bigquery

    client = gcp.bigquery(settings)
    for dataset in (settings.bq_dataset, settings.bq_restricted_dataset):
        client.create_dataset(bigquery.Dataset(f"{settings.gcp_project}.{dataset}"), exists_ok=True)
    for name in TABLES:
        spec = schema_json(name)
        table = bigquery.Table(table_id(settings, name), schema=schema_fields(name))
        table.description = spec.get("description")
        if spec.get("partition_field"):
            table.time_partitioning = bigquery.TimePartitioning(field=spec["partition_field"])
        if spec.get("clustering"):
            table.clustering_fields = spec["clustering"]
        client.create_table(table, exists_ok=True)


def _param(name: str, value: Any) -> Any:
    from google.cloud import bigquery

    if isinstance(value, list):
        kind = "INT64" if all(isinstance(v, int) for v in value) else "STRING"
        return bigquery.ArrayQueryParameter(name, kind, value)
    kind = (
        "BOOL"
        if isinstance(value, bool)
        else "INT64"
        if isinstance(value, int)
        else "FLOAT64"
        if isinstance(value, float)
        else "TIMESTAMP"
        if isinstance(value, datetime)
        else "DATE"
        if isinstance(value, date)
        else "STRING"
    )
    return bigquery.ScalarQueryParameter(name, kind, value)


def query(settings: Settings, sql: str, **params: Any) -> list[dict[str, Any]]:
    """Run a parametrised query and return its rows as dicts; API failures become TransientError."""
    from google.api_core import exceptions
    from google.cloud import bigquery

    client = gcp.bigquery(settings)
    config = bigquery.QueryJobConfig(query_parameters=[_param(k, v) for k, v in params.items()])
    sql = sql.format_map(_TableNames(settings))
    try:
        job = client.query(sql, job_config=config)
        return [dict(row.items()) for row in job.result(timeout=120)]
    except exceptions.BadRequest as exc:
        raise PermanentError(f"BigQuery rejected a query: {exc.message}") from exc
    except (exceptions.GoogleAPIError, ConnectionError, TimeoutError) as exc:
        raise TransientError(f"BigQuery unavailable: {type(exc).__name__}") from exc


# -- registry and runs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActiveTag:
    tag_id: int
    product_ids: tuple[int, ...]


def active_tags(settings: Settings) -> list[ActiveTag]:
    """Active registered tags with their track's products in order."""
    rows = query(
        settings,
        """SELECT r.tag_id, t.product_id FROM `{registered_tags}` r JOIN `{tracks}` t ON t.track_id = r.track_id
           WHERE r.active ORDER BY r.tag_id, t.position""",
    )
    grouped: dict[int, list[int]] = {}
    for row in rows:
        grouped.setdefault(int(row["tag_id"]), []).append(int(row["product_id"]))
    return [ActiveTag(tag, tuple(products)) for tag, products in grouped.items()]


def start_run(settings: Settings, run_id: str, snapshot_date: date, tags_total: int) -> bool:
    """Record the run once; True when an earlier delivery already fanned it out."""
    query(
        settings,
        """MERGE `{runs}` T USING (SELECT @run_id AS run_id) S ON T.run_id = S.run_id
           WHEN NOT MATCHED THEN INSERT (run_id, snapshot_date, status, tags_total, tags_done, errors, started_at)
           VALUES (@run_id, @snapshot_date, 'running', @tags_total, 0, 0, @now)""",
        run_id=run_id,
        snapshot_date=snapshot_date,
        tags_total=tags_total,
        now=datetime.now(UTC),
    )
    rows = query(settings, "SELECT fanned_out_at FROM `{runs}` WHERE run_id = @run_id", run_id=run_id)
    return bool(rows and rows[0]["fanned_out_at"] is not None)


def mark_fanned_out(settings: Settings, run_id: str) -> None:
    query(
        settings,
        "UPDATE `{runs}` SET fanned_out_at = @now WHERE run_id = @run_id",
        run_id=run_id,
        now=datetime.now(UTC),
    )
    refresh_run(settings, run_id)


def refresh_run(settings: Settings, run_id: str) -> None:
    """Recompute a run's counters and status from the loads ledger (idempotent, whatever the order).

    A tag is done when its last piece *and every piece before it* are loaded, so a piece still being retried
    keeps the run `running`."""
    ledger = "FROM `{loads}` WHERE run_id = @run_id"
    query(
        settings,
        f"""UPDATE `{{runs}}` SET
              tags_done = (SELECT COUNT(*) FROM (SELECT tag_id {ledger} GROUP BY tag_id
                             HAVING MAX(CASE WHEN last_piece THEN 1 ELSE 0 END) = 1
                                AND COUNT(DISTINCT piece) = MAX(CASE WHEN last_piece THEN piece ELSE -1 END) + 1)),
              pieces_loaded = (SELECT COUNT(*) {ledger}),
              records_loaded = (SELECT COALESCE(SUM(rows_merged), 0) {ledger}),
              failed_extractions = (SELECT COALESCE(SUM(failed), 0) {ledger}),
              no_access = (SELECT COALESCE(SUM(no_access), 0) {ledger}),
              students = (SELECT COALESCE(SUM(students), 0) {ledger}),
              api_calls = (SELECT COALESCE(SUM(api_calls), 0) {ledger}),
              rate_limited = (SELECT COALESCE(SUM(rate_limited), 0) {ledger}),
              dq_rejected = (SELECT COALESCE(SUM(rows_in_shard - rows_merged), 0) {ledger}),
              errors = (SELECT COUNT(*) FROM `{{failures}}` WHERE run_id = @run_id)
            WHERE run_id = @run_id""",
        run_id=run_id,
    )
    query(
        settings,
        """UPDATE `{runs}` SET
             status = CASE WHEN fanned_out_at IS NOT NULL AND tags_done >= tags_total THEN 'succeeded'
                           WHEN errors > 0 THEN 'failed' ELSE 'running' END,
             finished_at = CASE WHEN fanned_out_at IS NOT NULL AND tags_done >= tags_total
                                THEN COALESCE(finished_at, @now) ELSE NULL END
           WHERE run_id = @run_id""",
        run_id=run_id,
        now=datetime.now(UTC),
    )


def run_status(settings: Settings, run_id: str) -> str | None:
    rows = query(settings, "SELECT status FROM `{runs}` WHERE run_id = @run_id", run_id=run_id)
    return str(rows[0]["status"]) if rows else None


def record_failure(
    settings: Settings,
    stage: str,
    reason: str,
    *,
    run_id: str | None = None,
    tag_id: int | None = None,
    piece: int | None = None,
    message_id: str | None = None,
) -> None:
    """Keep a permanent failure where run health can see it (idempotent per message id)."""
    query(
        settings,
        """MERGE `{failures}` T USING (SELECT @message_id AS message_id, @stage AS stage) S
           ON T.message_id = S.message_id AND T.stage = S.stage
           WHEN NOT MATCHED THEN INSERT (failed_at, stage, run_id, tag_id, piece, message_id, reason)
           VALUES (@now, @stage, @run_id, @tag_id, @piece, @message_id, @reason)""",
        now=datetime.now(UTC),
        stage=stage,
        run_id=run_id or "",
        tag_id=tag_id if tag_id is not None else -1,
        piece=piece if piece is not None else -1,
        message_id=message_id or hashlib.sha256(reason.encode()).hexdigest()[:16],
        reason=reason[:500],
    )
    if run_id:
        refresh_run(settings, run_id)


# -- loading shards --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadOutcome:
    rows_in_shard: int
    rows_merged: int
    duplicates: int
    out_of_range: int
    bad_dates: int
    unknown_products: int
    bad_status: int


def _staging_table(settings: Settings, kind: str, uri: str, generation: int, fields: list[Any]) -> str:
    """A staging table per load attempt, expiring after a day if the attempt dies before dropping it."""
    from google.cloud import bigquery

    # Unique per attempt: two deliveries of the same event must not load into, or drop, each other's table.
    digest = hashlib.sha256(f"{uri}#{generation}".encode()).hexdigest()[:16]
    name = table_id(settings, f"_staging_{kind}_{digest}_{uuid.uuid4().hex[:8]}")
    table = bigquery.Table(name, schema=fields)
    table.expires = datetime.now(UTC) + STAGING_TTL  # a crashed load leaves nothing behind for long
    gcp.bigquery(settings).create_table(table, exists_ok=True)
    return name


def _load_into(settings: Settings, table: str, uri: str, fields: list[Any]) -> None:
    from google.api_core import exceptions
    from google.cloud import bigquery

    client = gcp.bigquery(settings)
    config = bigquery.LoadJobConfig(
        schema=fields,
        source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
        create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
        max_bad_records=0,
    )
    try:
        client.load_table_from_uri(uri, table, job_config=config).result(timeout=300)
    except exceptions.BadRequest as exc:
        raise PermanentError(f"shard {uri} cannot be loaded: {exc.message}") from exc
    except exceptions.NotFound as exc:
        raise PermanentError(f"shard {uri} no longer exists") from exc
    except (exceptions.GoogleAPIError, ConnectionError, TimeoutError) as exc:
        raise TransientError(f"load job for {uri} failed: {type(exc).__name__}") from exc


def _drop(settings: Settings, table: str) -> None:
    gcp.bigquery(settings).delete_table(table, not_found_ok=True)


def load_progress_shard(
    settings: Settings,
    uri: str,
    generation: int,
    *,
    shard: str,
    run_id: str,
    snapshot_date: date,
    tag_id: int,
    piece: int,
    last_piece: bool,
    extraction_counts: dict[str, int],
    today: date,
) -> LoadOutcome:
    """Load job into a staging table, quality checks, MERGE by business key, then the ledger.

    Every step is idempotent: a duplicate event, a re-written shard or a re-run week leaves one row per
    (snapshot_date, tag_id, user_id, product_id) holding the latest extraction.
    """
    fields = [f for f in schema_fields("progress_history", nullable=True) if f.name not in ("shard", "loaded_at")]
    staging = _staging_table(settings, "progress", uri, generation, fields)
    _load_into(settings, staging, uri, fields)
    try:
        params: dict[str, Any] = {"tag_id": tag_id, "snapshot_date": snapshot_date, "today": today}
        valid = VALID_ROW.format(tracks="{tracks}", tags="{registered_tags}")
        checks = query(
            settings,
            f"""SELECT COUNT(*) AS rows_in_shard,
                  COALESCE(SUM(CASE WHEN {valid} THEN 1 ELSE 0 END), 0) AS valid_rows,
                  COUNT(*) - COUNT(DISTINCT CONCAT(CAST(user_id AS STRING), '/', CAST(product_id AS STRING)))
                    AS duplicates,
                  COALESCE(SUM(CASE WHEN status = 'ok' AND (total IS NULL OR total < 0 OR total > 100)
                               THEN 1 ELSE 0 END), 0) AS out_of_range,
                  COALESCE(SUM(CASE WHEN snapshot_date IS NULL OR snapshot_date != @snapshot_date
                               OR snapshot_date > @today THEN 1 ELSE 0 END), 0) AS bad_dates,
                  COALESCE(SUM(CASE WHEN product_id NOT IN (SELECT product_id FROM `{{tracks}}` t
                               JOIN `{{registered_tags}}` r ON t.track_id = r.track_id WHERE r.tag_id = @tag_id)
                               THEN 1 ELSE 0 END), 0) AS unknown_products,
                  COALESCE(SUM(CASE WHEN status IS NULL OR status NOT IN ('ok', 'failed', 'no_access')
                               OR user_id IS NULL OR tag_id IS NULL OR tag_id != @tag_id
                               THEN 1 ELSE 0 END), 0) AS bad_status
                FROM `{staging}`""",
            **params,
        )[0]
        if settings.chaos_loader_fail_rate and random.random() < settings.chaos_loader_fail_rate:
            raise TransientError("chaos: loader failed between its load job and its MERGE (soak test)")
        # Duplicates inside one shard keep the latest extraction; the MERGE then sees one source row per key.
        query(
            settings,
            f"""MERGE `{{progress_history}}` T
                USING (
                  SELECT {PROGRESS_COLUMNS} FROM (
                    SELECT *, ROW_NUMBER() OVER (PARTITION BY user_id, product_id ORDER BY extracted_at DESC) AS rn
                    FROM `{staging}` WHERE {valid}
                  ) WHERE rn = 1
                ) S
                ON T.snapshot_date = S.snapshot_date AND T.tag_id = S.tag_id
                   AND T.user_id = S.user_id AND T.product_id = S.product_id
                WHEN MATCHED AND S.extracted_at >= T.extracted_at THEN UPDATE SET
                  status = S.status, total = S.total, assistidas = S.assistidas, completas = S.completas,
                  error = S.error, run_id = S.run_id, extracted_at = S.extracted_at, shard = @shard, loaded_at = @now
                WHEN NOT MATCHED THEN INSERT ({PROGRESS_COLUMNS}, shard, loaded_at)
                  VALUES (S.snapshot_date, S.tag_id, S.user_id, S.product_id, S.status, S.total, S.assistidas,
                          S.completas, S.error, S.run_id, S.extracted_at, @shard, @now)""",
            shard=shard,
            now=datetime.now(UTC),
            **params,
        )
        outcome = LoadOutcome(
            rows_in_shard=int(checks["rows_in_shard"]),
            rows_merged=int(checks["valid_rows"]) - int(checks["duplicates"]),
            duplicates=int(checks["duplicates"]),
            out_of_range=int(checks["out_of_range"]),
            bad_dates=int(checks["bad_dates"]),
            unknown_products=int(checks["unknown_products"]),
            bad_status=int(checks["bad_status"]),
        )
        _record_load(
            settings,
            shard,
            generation,
            run_id,
            snapshot_date,
            tag_id,
            piece,
            last_piece,
            outcome,
            extraction_counts,
        )
    finally:
        _drop(settings, staging)
    refresh_run(settings, run_id)
    return outcome


def _record_load(
    settings: Settings,
    shard: str,
    generation: int,
    run_id: str,
    snapshot_date: date,
    tag_id: int,
    piece: int,
    last_piece: bool,
    outcome: LoadOutcome,
    counts: dict[str, int],
) -> None:
    """One ledger row per shard: a duplicate event keeps the row, a re-written shard replaces it."""
    values = {
        "shard": shard, "generation": generation, "run_id": run_id, "snapshot_date": snapshot_date,
        "tag_id": tag_id, "piece": piece, "last_piece": last_piece, "rows_in_shard": outcome.rows_in_shard,
        "rows_merged": outcome.rows_merged, "failed": counts.get("failed", 0),
        "no_access": counts.get("no_access", 0), "students": counts.get("students", 0),
        "api_calls": counts.get("api_calls", 0), "rate_limited": counts.get("rate_limited", 0),
        "dq_duplicates": outcome.duplicates, "dq_out_of_range": outcome.out_of_range,
        "dq_bad_dates": outcome.bad_dates, "dq_unknown_products": outcome.unknown_products,
        "dq_bad_status": outcome.bad_status, "loaded_at": datetime.now(UTC),
    }  # fmt: skip
    columns = ", ".join(values)
    source = ", ".join(f"@{k} AS {k}" for k in values)
    updates = ", ".join(f"{k} = S.{k}" for k in values if k != "shard")
    query(
        settings,
        f"""MERGE `{{loads}}` T USING (SELECT {source}) S ON T.shard = S.shard
            WHEN MATCHED AND S.generation > T.generation THEN UPDATE SET {updates}
            WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({", ".join(f"S.{k}" for k in values)})""",
        **values,
    )


def load_contacts(settings: Settings, uri: str, generation: int, *, tag_id: int, snapshot_date: date) -> int:
    """Merge a tag's contact data into the restricted students table (latest snapshot wins)."""
    fields = [f for f in schema_fields("students", nullable=True) if f.name != "updated_at"]
    staging = _staging_table(settings, "contacts", uri, generation, fields)
    _load_into(settings, staging, uri, fields)
    try:
        rows = query(settings, f"SELECT COUNT(*) AS n FROM `{staging}`")
        query(
            settings,
            f"""MERGE `{{students}}` T
                USING (SELECT user_id, ANY_VALUE(nome) AS nome, ANY_VALUE(email) AS email,
                              ANY_VALUE(celular) AS celular FROM `{staging}` WHERE user_id IS NOT NULL
                       GROUP BY user_id) S
                ON T.user_id = S.user_id
                WHEN MATCHED AND @snapshot_date >= T.last_seen_date THEN UPDATE SET nome = S.nome,
                  email = S.email, celular = S.celular, last_tag_id = @tag_id, last_seen_date = @snapshot_date,
                  updated_at = @now
                WHEN NOT MATCHED THEN INSERT (user_id, nome, email, celular, last_tag_id, last_seen_date, updated_at)
                  VALUES (S.user_id, S.nome, S.email, S.celular, @tag_id, @snapshot_date, @now)""",
            tag_id=tag_id,
            snapshot_date=snapshot_date,
            now=datetime.now(UTC),
        )
    finally:
        _drop(settings, staging)
    return int(rows[0]["n"])
