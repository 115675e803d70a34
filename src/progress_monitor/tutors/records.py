"""The Slack agent's writes that name a student, a tutor's click (`tutor_actions`) and a digest's record
(`slack_digests.students_listed`), each merged from a staging table that a load job filled.

Why not a MERGE with parameters: BigQuery keeps every job's SQL and parameters in the project's job history
(about 180 days, readable by whoever may list all jobs). A click's id beside its `acted_at`, or a digest's ids in
order beside its `posted_at`, are values an erasure leaves as they are: that history would match the id to the
pseudonym the erasure gives the row. A load job's configuration holds no values, and the MERGE from the staging
table has no parameters.

The staging table is in the agent's own dataset (settings.bq_slack_staging_dataset: it may create tables there
and nowhere else), is dropped once merged, and expires after a day if the task dies first. An erasure meanwhile:
each MERGE keeps only the students the week's reports still hold under their id (an erasure rebuilds the
reports in each pass), and the erasure is not done while one of these tables is still empty (being loaded) or
names the student (privacy/tables.py writes_in_flight).
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from google.cloud import bigquery

from progress_monitor.errors import GOOGLE_ERRORS, pipeline_error
from progress_monitor.platform import warehouse
from progress_monitor.platform.access import needs
from progress_monitor.services import Services

log = logging.getLogger("progress_monitor.tutors")
STAGING_TTL = timedelta(days=1)
# A click is merged only for a student the week's reports still hold under their id: a join, not a correlated
# subquery (BigQuery runs one that reads another table only when it can turn it into a join).
ACTION_SQL = """
MERGE `${tutor_actions}` T
USING (
  SELECT s.* FROM `${staging}` s
  JOIN (SELECT DISTINCT snapshot_date, user_id FROM `${report_student_week}`) r
    ON r.snapshot_date = s.snapshot_date AND r.user_id = s.user_id
) S
ON T.snapshot_date = S.snapshot_date AND T.tag_id = S.tag_id AND T.user_id = S.user_id AND T.action = S.action
   AND T.tutor = S.tutor
WHEN NOT MATCHED THEN INSERT (snapshot_date, tag_id, user_id, action, tutor, channel_id, acted_at)
  VALUES (S.snapshot_date, S.tag_id, S.user_id, S.action, S.tutor, S.channel_id, S.acted_at)
"""
# One row per week and channel; the listed students in the message's order, those erased meanwhile left out
# (the week's ids still reported, joined as one array: the subquery over the list reads only its own row).
DIGEST_SQL = """
MERGE `${slack_digests}` T
USING (
  SELECT s.snapshot_date, s.channel_id, s.run_id, s.message_ts, s.status, s.error, s.tag_ids, s.em_risco,
    s.atrasado, s.posted_at,
    COALESCE((SELECT STRING_AGG(x, ',' ORDER BY o) FROM UNNEST(SPLIT(s.students_listed, ',')) x WITH OFFSET o
      WHERE x IN UNNEST(r.reported)), '') AS students_listed
  FROM `${staging}` s
  LEFT JOIN (
    SELECT snapshot_date, ARRAY_AGG(DISTINCT CAST(user_id AS STRING)) AS reported FROM `${report_student_week}`
    WHERE snapshot_date IN (SELECT snapshot_date FROM `${staging}`) GROUP BY snapshot_date
  ) r ON r.snapshot_date = s.snapshot_date
) S
ON T.snapshot_date = S.snapshot_date AND T.channel_id = S.channel_id
WHEN MATCHED THEN UPDATE SET run_id = S.run_id, message_ts = S.message_ts, status = S.status, error = S.error,
  tag_ids = S.tag_ids, students_listed = S.students_listed, em_risco = S.em_risco, atrasado = S.atrasado,
  posted_at = S.posted_at
WHEN NOT MATCHED THEN INSERT (snapshot_date, channel_id, run_id, message_ts, status, error, tag_ids,
  students_listed, em_risco, atrasado, posted_at)
  VALUES (S.snapshot_date, S.channel_id, S.run_id, S.message_ts, S.status, S.error, S.tag_ids,
  S.students_listed, S.em_risco, S.atrasado, S.posted_at)
"""


def record_action(svc: Services, row: dict[str, Any]) -> None:
    """One tutor's click (a `tutor_actions` row), recorded once."""
    _merge(svc, "tutor_actions", ACTION_SQL, row)


def record_digest(svc: Services, row: dict[str, Any]) -> None:
    """What a week's digest in one channel posted (a `slack_digests` row), inserted or updated."""
    _merge(svc, "slack_digests", DIGEST_SQL, row)


def _merge(svc: Services, target: str, merge_sql: str, row: dict[str, Any]) -> None:
    fields = warehouse.schema_fields(target)
    staging = _create_staging(svc, target, fields)
    try:
        warehouse.load_rows(svc, staging, fields, [row])
    except Exception:
        _drop_staging(svc, staging)  # nothing merged it: the retry stages again
        raise
    # A MERGE that failed here (a timeout, a lost answer) may still commit: its table stays, so an erasure sees
    # a write in flight until it is dropped as dead (after an hour) or expires (a day).
    warehouse.query(svc, merge_sql, sql_vars={"staging": staging})
    _drop_staging(svc, staging)


def staging_name(svc: Services, target: str) -> str:
    """A table per write (two deliveries of one task never share one), named after its target table."""
    cfg = svc.cfg
    return f"{cfg.gcp_project}.{cfg.bq_slack_staging_dataset}._staging_{target}_{uuid.uuid4().hex[:12]}"


@needs("dataset.write slack_staging")
def _create_staging(svc: Services, target: str, fields: list[bigquery.SchemaField]) -> str:
    name = staging_name(svc, target)
    table = bigquery.Table(name, schema=fields)
    table.expires = svc.now() + STAGING_TTL
    try:
        svc.bigquery.create_table(table)
    except GOOGLE_ERRORS as exc:
        raise pipeline_error(exc, f"cannot create a staging table for {target}") from exc
    return name


@needs("dataset.write slack_staging")
def _drop_staging(svc: Services, table: str) -> None:
    try:
        svc.bigquery.delete_table(table, not_found_ok=True)
    except GOOGLE_ERRORS:  # the write itself is done or failed on its own: the table expires in a day
        log.warning("could not drop a staging table of the Slack agent; it expires in a day", exc_info=True)
