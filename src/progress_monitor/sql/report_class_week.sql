-- One row per class (tag) x snapshot week: students, mean actual and expected, share per status, change.
WITH summary AS (
  SELECT snapshot_date, iso_week, tag_id, track_id, turma, MAX(class_week) AS class_week,
    COUNT(*) AS students,
    COUNTIF(status IS NULL) AS students_without_data,
    COUNTIF(has_failed_extraction) AS students_with_failed_extraction,
    AVG(actual) AS mean_actual,
    AVG(expected) AS mean_expected,
    COUNTIF(days_without_access >= ${inactive_days}) AS students_inactive,
    SAFE_DIVIDE(COUNTIF(status = 'adiantado'), COUNTIF(status IS NOT NULL)) AS share_adiantado,
    SAFE_DIVIDE(COUNTIF(status = 'no ritmo'), COUNTIF(status IS NOT NULL)) AS share_no_ritmo,
    SAFE_DIVIDE(COUNTIF(status = 'atrasado'), COUNTIF(status IS NOT NULL)) AS share_atrasado,
    SAFE_DIVIDE(COUNTIF(status = 'em risco'), COUNTIF(status IS NOT NULL)) AS share_em_risco,
    SAFE_DIVIDE(COUNTIF(status = 'concluído'), COUNTIF(status IS NOT NULL)) AS share_concluido
  FROM `${report_student_week}`
  GROUP BY snapshot_date, iso_week, tag_id, track_id, turma
)
SELECT *, mean_actual - LAG(mean_actual) OVER (PARTITION BY tag_id ORDER BY snapshot_date)
  AS change_mean_actual
FROM summary
