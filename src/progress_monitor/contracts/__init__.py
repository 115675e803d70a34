"""The contracts between the stages, pure (no I/O, fast to test); each is built and parsed in one place.

- `values`: strict parsers of ids, counts, dates, run ids, Cademi timestamps, Slack ids; the extraction `Status`.
- `messages`: every Pub/Sub message body (schedule, progress task, Slack tasks).
- `objects`: every object name and the bucket that holds it (shards or state), and the metadata and bodies
  stages pass through objects.
- `events`: the CloudEvent, Pub/Sub push and Cloud Storage notification envelopes.
"""
