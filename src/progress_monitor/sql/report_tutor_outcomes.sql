-- Did acting on the list help? Per class and week: the tutors' list (students 'em risco' or 'atrasado'), how
-- many of them a tutor marked contacted (or without answer) in Slack, and the change in actual progress over
-- the following two snapshots for contacted versus listed-but-not-contacted students. A view: clicks count
-- as soon as they are made. The change is NULL until two later snapshots exist (students who left have none).
WITH weekly AS (
  SELECT snapshot_date, iso_week, tag_id, track_id, turma, user_id, status, actual,
    LEAD(actual, 2) OVER (PARTITION BY user_id, track_id ORDER BY snapshot_date) AS actual_two_later
  FROM `${report_student_week}`
),
acted AS (
  SELECT snapshot_date, tag_id, user_id,
    MAX(IF(action = 'contatado', 1, 0)) AS contacted,
    MAX(IF(action = 'sem_resposta', 1, 0)) AS no_answer
  FROM `${tutor_actions}`
  GROUP BY snapshot_date, tag_id, user_id
),
listed AS (
  SELECT w.*, COALESCE(a.contacted, 0) AS contacted, COALESCE(a.no_answer, 0) AS no_answer,
    w.actual_two_later - w.actual AS change_two_snapshots
  FROM weekly w
  LEFT JOIN acted a ON a.snapshot_date = w.snapshot_date AND a.tag_id = w.tag_id AND a.user_id = w.user_id
  WHERE w.status IN ('em risco', 'atrasado')
)
SELECT snapshot_date, iso_week, tag_id, track_id, turma,
  COUNT(*) AS students_listed,
  SUM(contacted) AS students_contacted,
  SUM(IF(contacted = 0, no_answer, 0)) AS students_no_answer,
  SAFE_DIVIDE(SUM(contacted), COUNT(*)) AS share_contacted,
  AVG(IF(contacted = 1, change_two_snapshots, NULL)) AS change_contacted,
  AVG(IF(contacted = 0, change_two_snapshots, NULL)) AS change_not_contacted,
  COUNTIF(contacted = 1 AND change_two_snapshots IS NOT NULL) AS contacted_with_outcome,
  COUNTIF(contacted = 0 AND change_two_snapshots IS NOT NULL) AS not_contacted_with_outcome
FROM listed
GROUP BY snapshot_date, iso_week, tag_id, track_id, turma
