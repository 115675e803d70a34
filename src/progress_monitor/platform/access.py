"""What each call of a Google client needs from IAM, declared on the function that makes the call.

Every function of the package that calls a Google client (BigQuery, Cloud Storage, Pub/Sub, Secret Manager)
carries `@needs("<kind> <resource>", ...)`. The resource is literal (`project`, `main`, `shards`) or
`{expression}`: an argument of the function, a name of its module, or an object-name contract of
`contracts/objects.py`, read at each call site. A wrapper's declaration also covers the other
wrappers it calls. The decorator returns the function unchanged: nothing happens at run time.

tests/iam_needs.py reads these declarations with `ast`, walks each deployed function's calls from its entry
point and derives what that function's service account must be granted; it also fails when a Google client is
called, or a `google.cloud` name used, outside a declared function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

KINDS = {
    "client": "creates a client or handle, makes no request (resource: none)",
    "bigquery.jobs": "runs query or load jobs (resource: project)",
    "bigquery.admin": "creates datasets and tables: the local stack only, Terraform does it in the cloud",
    "tables": "`{sql} {sql_vars}`: reads the tables the SQL names, writes the target of MERGE, INSERT, UPDATE, "
    "DELETE or CREATE",
    "dataset.write": "creates, loads and drops tables created at run time in a dataset (main, restricted or "
    "slack_staging)",
    "objects.read": "gets, downloads or lists objects (resource: a name or prefix, whose bucket is "
    "contracts.objects.bucket_of's; or a whole bucket, `shards` or `state`)",
    "objects.create": "creates an object only if absent (generation 0)",
    "objects.rewrite": "reads, then replaces an existing object (generation precondition)",
    "objects.delete": "deletes an object",
    "topic.publish": "publishes on a topic: `{cfg.<x>_topic}`, or a message of contracts/messages.py",
    "secret": "reads a secret by its settings name",
}


def needs(*declared: str) -> Callable[[F], F]:
    """Declare what the decorated function's Google calls need, as "<kind> <resource>" strings (KINDS)."""
    for item in declared:
        if item.split(" ", 1)[0] not in KINDS:
            raise ValueError(f"unknown access kind in {item!r}: one of {sorted(KINDS)}")

    def mark(function: F) -> F:
        return function

    return mark
