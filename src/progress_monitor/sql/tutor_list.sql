-- Restricted (tutors only): students 'em risco' or 'atrasado' in their class's latest week, with how long
-- they have been behind and their contact data. Students edit their own name, e-mail and phone in Cademi: a
-- value a spreadsheet would run as a formula (=, +, -, @, tab, CR first) is exported behind a quote, as OWASP
-- advises; the students table keeps the raw value.
WITH latest AS (
  SELECT tag_id, MAX(snapshot_date) AS snapshot_date
  FROM `${report_student_week}` GROUP BY tag_id
)
SELECT s.snapshot_date, s.iso_week, s.tag_id, s.track_id, s.turma, s.user_id, 
  ${neutral_nome} AS nome, ${neutral_email} AS email, ${neutral_celular} AS celular,
  s.status, s.weeks_behind, s.days_without_access AS dias_sem_acessar, s.last_access_date AS ultimo_acesso,
  s.actual, s.expected, s.gap, s.change_since_previous_week, s.has_failed_extraction
FROM `${report_student_week}` s
JOIN latest l ON l.tag_id = s.tag_id AND l.snapshot_date = s.snapshot_date
LEFT JOIN `${students}` c ON c.user_id = s.user_id
WHERE s.status IN ('em risco', 'atrasado')
  AND s.user_id >= 0  -- an erased student's pseudonym is never shown (contracts.values.is_pseudonym)
