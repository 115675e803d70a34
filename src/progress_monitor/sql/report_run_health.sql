-- The weekly runs, newest first, with the age of the data the dashboards show.
WITH latest_success AS (
  SELECT MAX(finished_at) AS finished_at, MAX(snapshot_date) AS snapshot_date
  FROM `${runs}` WHERE status = 'succeeded'
)
SELECT r.run_id, r.snapshot_date, r.status, r.started_at, r.finished_at, r.tags_total, r.tags_done,
  r.students, r.records_loaded, r.failed_extractions, r.no_access, r.api_calls, r.rate_limited, r.dq_rejected,
  r.errors, r.reports_refreshed_at,
  r.started_at = MAX(r.started_at) OVER () AS is_latest,
  TIMESTAMP_DIFF(CURRENT_TIMESTAMP(), l.finished_at, HOUR) AS data_age_hours,
  l.snapshot_date AS latest_complete_week
FROM `${runs}` r CROSS JOIN latest_success l
