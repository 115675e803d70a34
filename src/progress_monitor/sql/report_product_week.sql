-- One row per student x product x snapshot week: expected and actual progress, gap, status and change.
-- Definitions: docs/metrics.md. Materialised as a table after each run (Looker Studio reads the table).
WITH tag_products AS (
  SELECT r.tag_id, r.track_id, r.turma, r.start_date, t.product_id, t.product_name, t.position, t.due_week,
         COALESCE(LAG(t.due_week) OVER (PARTITION BY r.tag_id ORDER BY t.position), 0) AS previous_due_week
  FROM `${registered_tags}` r
  JOIN `${tracks}` t ON t.track_id = r.track_id
),
observed AS (
  SELECT h.snapshot_date, h.tag_id, p.track_id, p.turma, p.start_date, h.user_id, h.product_id, p.product_name,
         p.position, p.due_week, p.previous_due_week, h.status AS extraction_status, h.error,
         CAST(FLOOR(DATE_DIFF(h.snapshot_date, p.start_date, DAY) / 7) AS INT64) AS class_week,
         IF(h.status = 'ok', h.total, NULL) AS actual,
         -- Last access is a fact about the student, kept as the latest any snapshot up to this one saw: a
         -- listing that omits it later does not make a student look newly inactive.
         MAX(h.last_access_at) OVER (PARTITION BY h.user_id ORDER BY h.snapshot_date
                                     RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS last_access_at,
         MIN(h.snapshot_date) OVER (PARTITION BY h.tag_id, h.user_id) AS first_seen_in_class,
         MIN(h.snapshot_date) OVER (PARTITION BY h.tag_id) AS class_first_snapshot
  FROM `${progress_history}` h
  JOIN tag_products p ON p.tag_id = h.tag_id AND p.product_id = h.product_id
),
weekly AS (
  SELECT * EXCEPT (first_seen_in_class, class_first_snapshot),
    DATE(last_access_at, '${timezone}') AS last_access_date,
    GREATEST(DATE_DIFF(snapshot_date, DATE(last_access_at, '${timezone}'), DAY), 0) AS days_without_access,
    -- Days since the student joined the class: its start for those there when monitoring began, else the
    -- first snapshot that listed them (a late enrolment or a class change); the grace period counts these.
    DATE_DIFF(snapshot_date,
              IF(first_seen_in_class > class_first_snapshot, first_seen_in_class, start_date), DAY) AS days_in_class
  FROM observed
),
expected AS (
  SELECT *,
    IF(extraction_status = 'ok',
       100 * CASE
         WHEN due_week <= previous_due_week THEN IF(class_week >= due_week, 1.0, 0.0)
         ELSE LEAST(GREATEST((class_week - previous_due_week) / (due_week - previous_due_week), 0.0), 1.0)
       END,
       NULL) AS expected
  FROM weekly
),
history AS (
  SELECT *, actual - expected AS gap,
    LAG(actual) OVER (PARTITION BY user_id, track_id, product_id ORDER BY snapshot_date) AS previous_actual,
    LAG(actual, 2) OVER (PARTITION BY user_id, track_id, product_id ORDER BY snapshot_date) AS actual_two_ago
  FROM expected
)
SELECT snapshot_date, FORMAT_DATE('%G-W%V', snapshot_date) AS iso_week, tag_id, track_id, turma, user_id,
  product_id, product_name, position, class_week, extraction_status, error, actual, expected, gap,
  actual - previous_actual AS change_since_previous_week, last_access_date, days_without_access, days_in_class,
  ${status_case} AS status
FROM history
