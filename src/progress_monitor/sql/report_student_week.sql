-- One row per student x snapshot week, the track-level roll-up: means over the products extracted 'ok'
-- (failed and no-access products are excluded from both means and counted in their own columns).
WITH rollup AS (
  SELECT snapshot_date, iso_week, tag_id, track_id, turma, user_id, class_week,
    AVG(actual) AS actual,
    AVG(expected) AS expected,
    COUNTIF(extraction_status = 'ok') AS products_ok,
    COUNTIF(extraction_status = 'failed') AS products_failed,
    COUNTIF(extraction_status = 'no_access') AS products_no_access,
    MAX(last_access_date) AS last_access_date,
    MIN(days_without_access) AS days_without_access,
    MAX(days_in_class) AS days_in_class
  FROM `${report_product_week}`
  GROUP BY snapshot_date, iso_week, tag_id, track_id, turma, user_id, class_week
),
history AS (
  SELECT *, actual - expected AS gap,
    LAG(actual) OVER (PARTITION BY user_id, track_id ORDER BY snapshot_date) AS previous_actual,
    LAG(actual, 2) OVER (PARTITION BY user_id, track_id ORDER BY snapshot_date) AS actual_two_ago
  FROM rollup
),
statuses AS (
  SELECT *, ${status_case} AS status FROM history
),
streaks AS (
  -- consecutive snapshots behind ('atrasado' or 'em risco'), up to and including this one
  SELECT *, SUM(IF(status IS NULL OR status NOT IN ('atrasado', 'em risco'), 1, 0))
      OVER (PARTITION BY user_id, track_id ORDER BY snapshot_date ROWS UNBOUNDED PRECEDING) AS on_pace_count
  FROM statuses
)
SELECT snapshot_date, iso_week, tag_id, track_id, turma, user_id, class_week, actual, expected, gap,
  actual - previous_actual AS change_since_previous_week, products_ok, products_failed, products_no_access,
  products_failed > 0 AS has_failed_extraction, last_access_date, days_without_access, days_in_class, status,
  IF(status IN ('atrasado', 'em risco'),
     ROW_NUMBER() OVER (PARTITION BY user_id, track_id, on_pace_count ORDER BY snapshot_date)
       - IF(on_pace_count = 0, 0, 1),
     0) AS weeks_behind
FROM streaks
