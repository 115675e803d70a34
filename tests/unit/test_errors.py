"""The one table of which errors a retry can fix (errors.RULES), and the guard that applies it."""

from __future__ import annotations

import pytest
import requests
from google.api_core import exceptions as google

from progress_monitor.errors import (
    CademiBusinessError,
    CademiConfigError,
    CademiOutageError,
    CademiPaginationError,
    CademiUnavailableError,
    Kind,
    PermanentError,
    SecretUnavailableError,
    SlackRefusedError,
    SlackUnavailableError,
    TransientError,
    classify,
    http_status_is_transient,
    pipeline_error,
)

CASES = [
    (google.BadRequest("Could not serialize access to table p.d.runs due to concurrent update"), Kind.TRANSIENT),
    (google.BadRequest("Syntax error: Unexpected keyword"), Kind.PERMANENT),
    (google.ServiceUnavailable("backend"), Kind.TRANSIENT),
    (google.TooManyRequests("slow down"), Kind.TRANSIENT),
    (google.NotFound("table"), Kind.TRANSIENT),
    (google.Forbidden("iam"), Kind.TRANSIENT),
    (requests.ConnectionError(), Kind.TRANSIENT),
    (TimeoutError(), Kind.TRANSIENT),
    (CademiConfigError(405, "invalid token", "/x"), Kind.PERMANENT),
    (CademiPaginationError("cursor loops"), Kind.PERMANENT),
    (CademiOutageError("down"), Kind.TRANSIENT),
    (CademiUnavailableError("502 x3"), Kind.TRANSIENT),
    (CademiBusinessError(409, "no access", "/x"), Kind.TRANSIENT),
    (SlackRefusedError("channel_not_found"), Kind.PERMANENT),
    (SlackUnavailableError("ratelimited"), Kind.TRANSIENT),
    (SecretUnavailableError("hiccup"), Kind.TRANSIENT),
    (PermanentError("bad message"), Kind.PERMANENT),
    (TransientError("later"), Kind.TRANSIENT),
    (KeyError("a bug"), Kind.TRANSIENT),
]


@pytest.mark.parametrize(("error", "kind"), CASES, ids=[type(e).__name__ + str(i) for i, (e, _) in enumerate(CASES)])
def test_each_outside_error_is_sorted_by_the_table(error: BaseException, kind: Kind) -> None:
    assert classify(error) is kind
    assert isinstance(pipeline_error(error, "call"), PermanentError if kind is Kind.PERMANENT else TransientError)


def test_a_caller_may_call_final_what_the_table_would_retry() -> None:
    """A load job's NotFound: the shard no longer exists, which no retry changes."""
    error = google.NotFound("gs://b/progress/x")
    assert classify(error) is Kind.TRANSIENT
    assert classify(error, permanent=(google.NotFound,)) is Kind.PERMANENT


def test_a_refusal_says_what_the_service_said_on_one_line() -> None:
    error = pipeline_error(google.BadRequest("Syntax error\nat line 3"), "BigQuery query")
    assert (isinstance(error, PermanentError) and str(error) == "400 Syntax error: at line 3") or "\n" not in str(error)


@pytest.mark.parametrize(
    ("status", "transient"),
    [
        (200, False),
        (400, False),
        (403, False),
        (404, False),
        (408, True),
        (409, False),
        (429, True),
        (500, True),
        (503, True),
    ],
)
def test_http_statuses_worth_asking_again(status: int, transient: bool) -> None:
    assert http_status_is_transient(status) is transient
