"""Structured logging: one JSON object per line on stdout, as Cloud Logging parses it."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

# Context fields copied from `extra=` into the JSON line.
CONTEXT_FIELDS = ("run_id", "tag_id", "piece", "snapshot_date", "event_id", "shard", "reason", "count", "slack_user")


class JsonFormatter(logging.Formatter):
    """Format records as Cloud Logging structured JSON."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(level: int = logging.INFO, stream: Any = None) -> None:
    """Route every logger to `stream` (stdout by default; an operator command's document may need it) as JSON
    (idempotent)."""
    stream = stream or sys.stdout
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) and getattr(h, "stream", None) is stream for h in root.handlers):
        return
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root.handlers[:] = [handler]
    root.setLevel(level)
    # urllib3 logs full URLs at DEBUG; keep it quiet so nothing sensitive can leak by a level change.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
