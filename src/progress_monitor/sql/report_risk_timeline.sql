-- Per student and track: the status week by week in one line (oldest first), how long they were flagged, and
-- what tutors did. A view over the reporting tables and the tutors' actions.
WITH weeks AS (
  SELECT user_id, track_id, snapshot_date, iso_week, tag_id, turma, status,
    ROW_NUMBER() OVER (PARTITION BY user_id, track_id ORDER BY snapshot_date DESC) AS newest_first
  FROM `${report_student_week}`
),
contacts AS (
  SELECT user_id, COUNTIF(action = 'contatado') AS times_contacted, MAX(IF(action = 'contatado', snapshot_date, NULL))
    AS last_contacted_week
  FROM `${tutor_actions}` GROUP BY user_id
)
SELECT w.user_id, w.track_id,
  MAX(IF(w.newest_first = 1, w.tag_id, NULL)) AS tag_id,
  MAX(IF(w.newest_first = 1, w.turma, NULL)) AS turma,
  MAX(IF(w.newest_first = 1, w.status, NULL)) AS last_status,
  MAX(w.snapshot_date) AS last_snapshot,
  STRING_AGG(CONCAT(w.iso_week, ': ', COALESCE(w.status, 'sem dados')), ' → ' ORDER BY w.snapshot_date) AS timeline,
  COUNTIF(w.status = 'em risco') AS weeks_em_risco,
  COUNTIF(w.status = 'atrasado') AS weeks_atrasado,
  MIN(IF(w.status IN ('em risco', 'atrasado'), w.snapshot_date, NULL)) AS first_flagged,
  COALESCE(MAX(c.times_contacted), 0) AS times_contacted,
  MAX(c.last_contacted_week) AS last_contacted_week
FROM weeks w LEFT JOIN contacts c ON c.user_id = w.user_id
GROUP BY w.user_id, w.track_id
