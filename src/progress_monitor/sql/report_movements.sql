-- Class changes and dropouts, reported in the week they happen (previous snapshot = 7 days earlier).
WITH presence AS (
  SELECT DISTINCT snapshot_date, tag_id, user_id FROM `${progress_history}`
),
users_present AS (SELECT DISTINCT snapshot_date, user_id FROM presence),
tags_extracted AS (SELECT DISTINCT snapshot_date, tag_id FROM presence),
previous AS (SELECT *, DATE_ADD(snapshot_date, INTERVAL 7 DAY) AS this_week FROM presence),
changes AS (
  SELECT p.this_week AS snapshot_date, p.user_id, p.tag_id AS from_tag_id, n.tag_id AS to_tag_id,
    'mudança de turma' AS movement
  FROM previous p
  JOIN presence n ON n.user_id = p.user_id AND n.snapshot_date = p.this_week AND n.tag_id != p.tag_id
  LEFT JOIN presence same ON same.user_id = p.user_id AND same.snapshot_date = p.this_week
    AND same.tag_id = p.tag_id
  WHERE same.user_id IS NULL
),
dropouts AS (
  -- only where the student's class was extracted this week: a missing run is not a dropout
  SELECT p.this_week AS snapshot_date, p.user_id, p.tag_id AS from_tag_id, CAST(NULL AS INT64) AS to_tag_id,
    'desistência' AS movement
  FROM previous p
  JOIN tags_extracted t ON t.tag_id = p.tag_id AND t.snapshot_date = p.this_week
  LEFT JOIN users_present u ON u.user_id = p.user_id AND u.snapshot_date = p.this_week
  WHERE u.user_id IS NULL
),
movements AS (SELECT * FROM changes UNION ALL SELECT * FROM dropouts)
SELECT m.snapshot_date, FORMAT_DATE('%G-W%V', m.snapshot_date) AS iso_week, m.movement, m.user_id,
  m.from_tag_id, f.turma AS from_turma, f.track_id AS from_track_id, m.to_tag_id, t.turma AS to_turma
FROM movements m
LEFT JOIN `${registered_tags}` f ON f.tag_id = m.from_tag_id
LEFT JOIN `${registered_tags}` t ON t.tag_id = m.to_tag_id
