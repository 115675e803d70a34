CASE
  WHEN actual IS NULL THEN NULL
  WHEN actual >= 100 THEN 'concluído'
  -- Grace period: a student in their first days in the class is never flagged.
  WHEN days_in_class < ${grace_days} AND gap < ${ahead_gap} THEN 'no ritmo'
  WHEN gap < ${risk_gap} THEN 'em risco'
  WHEN gap < ${behind_gap} AND actual_two_ago IS NOT NULL
       AND actual <= previous_actual AND previous_actual <= actual_two_ago THEN 'em risco'
  WHEN gap < ${behind_gap} AND days_without_access >= ${inactive_days} THEN 'em risco'
  WHEN gap < ${behind_gap} THEN 'atrasado'
  WHEN gap < ${ahead_gap} THEN 'no ritmo'
  ELSE 'adiantado'
END
