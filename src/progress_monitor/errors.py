"""Every error the package raises, and the one table of which errors a retry can fix.

Two kinds of failure decide what happens to an event (`failures.guard`): a TransientError propagates, so Pub/Sub
redelivers the event with backoff; a PermanentError is logged with its reason, dead-lettered and recorded.
Errors of the outside services (Cademi, Slack, BigQuery, Cloud Storage, Pub/Sub, Secret Manager) are sorted
into one of the two by `RULES` below, and nowhere else: `pipeline_error` turns any of them into the right kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import requests
from google.api_core import exceptions as google


class TransientError(RuntimeError):
    """Worth retrying: the event is redelivered with backoff (raise it out of the function)."""


class PermanentError(ValueError):
    """Retrying cannot help (bad message, bad configuration): log, dead-letter, acknowledge."""


# -- Cademi (cademi.py, cademi_v3.py) -------------------------------------------------------------------------


class CademiError(Exception):
    """Base of every error the Cademi client raises."""


class CademiApiError(CademiError):
    """The API answered with an error envelope (`success: false`)."""

    def __init__(self, code: int, msg: str, path: str) -> None:
        super().__init__(f"Cademi {code} on {path}: {msg}")
        self.code = code
        self.msg = msg
        self.path = path


class CademiConfigError(CademiApiError):
    """403 (no security header) or 405 (invalid token) on v1, 401/403 on v3: fix the API key or base URL."""


class CademiBusinessError(CademiApiError):
    """409 business-rule error, e.g. the user has no access to the product."""


class CademiUnavailableError(CademiError):
    """Transient failures (429, 5xx, timeouts, non-JSON) persisted through every attempt."""


class CademiOutageError(CademiError):
    """Several students in a row failed on every call: the API is down, not one student's data."""


class CademiPaginationError(CademiError):
    """A list's cursor kept going past its page limit: a broken paginator, never a real class."""


class CademiMalformedError(CademiError):
    """A JSON answer whose shape or values are not what the API documents."""


# -- Slack (slack_api.py) -------------------------------------------------------------------------------------


class SlackError(Exception):
    """A Slack call did not do what was asked."""


class SlackUnavailableError(SlackError, TransientError):
    """Slack is down, slow or rate limiting: retry later. `retry_after` (seconds) is set when Slack rate limited
    the call and said (or implied) how long to wait; None otherwise. `maybe_done` is set when the request
    reached Slack but no answer came back (a read timeout): Slack may have done it."""

    def __init__(self, message: str, retry_after: float | None = None, *, maybe_done: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.maybe_done = maybe_done


class SlackRefusedError(SlackError):
    """Slack refused the call for a reason a retry does not fix; `code` is Slack's error code."""

    def __init__(self, code: str) -> None:
        super().__init__(f"Slack refused the call: {code}")
        self.code = code


# -- Secret Manager (secrets.py) ------------------------------------------------------------------------------


class SecretUnavailableError(RuntimeError):
    """A secret could not be read; the message never contains the secret's value."""


# -- the table ------------------------------------------------------------------------------------------------


def http_status_is_transient(status: int) -> bool:
    """An HTTP answer worth asking again (Cademi, Slack's Web API, a response_url): rate limited or a server
    error; every other 4xx is a refusal a retry does not change."""
    return status in (408, 429) or status >= 500


# Slack's `error` codes that a later retry can clear (https://api.slack.com/methods/chat.postMessage#errors).
SLACK_TRANSIENT_CODES = frozenset(
    {"ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
# Of those, the ones that mean "too many calls": waited out in-process when Slack's Retry-After is short.
SLACK_RATE_LIMIT_CODES = frozenset({"ratelimited", "rate_limited"})
# Refusals of the bot token itself: the token is read again from Secret Manager (it may have been renewed)
# before the refusal is final.
SLACK_AUTH_CODES = frozenset({"invalid_auth", "token_revoked", "token_expired", "not_authed", "account_inactive"})
# BigQuery answers two DML statements racing on one table with a 400 ("Could not serialize access to table
# ... due to concurrent update"): the next attempt succeeds, so it is transient despite its status.
BIGQUERY_CONCURRENT_UPDATE = ("could not serialize access", "concurrent update")


class Kind(Enum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"


def _concurrent_update(exc: BaseException) -> bool:
    return any(text in str(exc).lower() for text in BIGQUERY_CONCURRENT_UPDATE)


@dataclass(frozen=True)
class Rule:
    error: type[BaseException]
    kind: Kind
    only_if: Callable[[BaseException], bool] | None = None

    def matches(self, exc: BaseException) -> bool:
        return isinstance(exc, self.error) and (self.only_if is None or self.only_if(exc))


# First match wins. Anything not listed propagates as transient: an unexpected exception is redelivered.
RULES: tuple[Rule, ...] = (
    Rule(PermanentError, Kind.PERMANENT),
    Rule(TransientError, Kind.TRANSIENT),
    # Cademi: a wrong key or URL, or a listing that never ends, fails the same way every time.
    Rule(CademiConfigError, Kind.PERMANENT),
    Rule(CademiPaginationError, Kind.PERMANENT),
    Rule(CademiError, Kind.TRANSIENT),
    # Slack: refusals (a channel the bot is not in, a revoked token) are recorded, never retried.
    Rule(SlackRefusedError, Kind.PERMANENT),
    Rule(SlackUnavailableError, Kind.TRANSIENT),
    Rule(SecretUnavailableError, Kind.TRANSIENT),  # often a passing Secret Manager hiccup
    # BigQuery, Cloud Storage, Pub/Sub (google.api_core): a query or load the service refuses stays refused.
    Rule(google.BadRequest, Kind.TRANSIENT, _concurrent_update),
    Rule(google.BadRequest, Kind.PERMANENT),
    Rule(google.GoogleAPIError, Kind.TRANSIENT),
    Rule(requests.RequestException, Kind.TRANSIENT),
    Rule(ConnectionError, Kind.TRANSIENT),
    Rule(TimeoutError, Kind.TRANSIENT),
)


# What the Google client libraries and HTTP sessions raise when a call fails: catch these around a call, then
# `raise pipeline_error(exc, what) from exc`.
GOOGLE_ERRORS = (google.GoogleAPIError, requests.RequestException, ConnectionError, TimeoutError)


def classify(exc: BaseException, permanent: tuple[type[BaseException], ...] = ()) -> Kind:
    """Whether a retry can fix `exc`; `permanent` adds errors that are final where the caller stands (a shard
    that no longer exists, say) before the table is read."""
    if isinstance(exc, permanent):
        return Kind.PERMANENT
    return next((rule.kind for rule in RULES if rule.matches(exc)), Kind.TRANSIENT)


def pipeline_error(
    exc: BaseException, what: str, permanent: tuple[type[BaseException], ...] = ()
) -> TransientError | PermanentError:
    """The pipeline error to raise (`from exc`) for a failed call `what`, on one line: a refusal says what the
    service said; a transient failure only its type (the retry will tell more)."""
    if classify(exc, permanent) is Kind.PERMANENT:
        if isinstance(exc, PermanentError):
            return exc
        said = str(getattr(exc, "message", None) or exc or type(exc).__name__).splitlines() or [""]
        return PermanentError(f"{what}: {said[0][:300]}")
    return exc if isinstance(exc, TransientError) else TransientError(f"{what}: {type(exc).__name__}")
