-- The weekly runs, newest first, with the age of the data the dashboards show, and what failed: errors
-- counts every failures row of the run; dead_lettered those Pub/Sub gave up on after their attempts
-- (recorded at once by record_failures), with the latest reason; carrying's rows, calls saved and sample outcome;
-- a run the operator closed (status 'closed'), when, why and by whom; reconciled: its objects the daily check
-- found written but never loaded and sent to the loader again (no shard left behind).
WITH latest_success AS (
  SELECT MAX(finished_at) AS finished_at, MAX(snapshot_date) AS snapshot_date
  FROM `${runs}` WHERE status = 'succeeded'
),
failed AS (
  SELECT run_id, COUNTIF(attempts IS NOT NULL) AS dead_lettered,
    MAX(IF(latest = 1, reason, NULL)) AS last_failure
  FROM (SELECT run_id, attempts, reason, ROW_NUMBER() OVER (PARTITION BY run_id ORDER BY failed_at DESC) AS latest
        FROM `${failures}`)
  GROUP BY run_id
)
SELECT r.run_id, r.snapshot_date, r.status, r.started_at, r.finished_at, r.tags_total, r.tags_done,
  r.students, r.records_loaded, r.failed_extractions, r.no_access, r.api_calls, r.rate_limited, r.dq_rejected,
  r.errors, COALESCE(f.dead_lettered, 0) AS dead_lettered, f.last_failure, r.reports_refreshed_at,
  r.rows_carried, r.calls_saved, r.carry_checked, r.carry_mismatches,
  r.carry_unverified, r.closed_at, r.closed_reason, r.closed_by, COALESCE(r.reconciled, 0) AS reconciled,
  r.started_at = MAX(r.started_at) OVER () AS is_latest,
  TIMESTAMP_DIFF(CURRENT_TIMESTAMP(), l.finished_at, HOUR) AS data_age_hours,
  l.snapshot_date AS latest_complete_week
FROM `${runs}` r CROSS JOIN latest_success l LEFT JOIN failed f ON f.run_id = r.run_id
