-- The students' names and nothing else of their contact data: the authorized view through which the tutors'
-- Slack agent (notify_tutors) reads the students table without any access to the restricted dataset
-- (docs/security.md).
SELECT user_id, nome FROM `${students}`
