"""Where a student's id or contact data appears in stored documents, compared as values, never as substrings
of serialised text: a timestamp's microseconds or an object generation may hold an id's digits by chance."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any


def scalars(value: Any) -> Iterator[Any]:
    """Every leaf value of a parsed document (dicts, lists and tuples walked; keys included)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from scalars(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from scalars(item)
    else:
        yield value


def parsed_file(data: bytes) -> Any:
    """A stored object as values: JSON, NDJSON line by line, or else its text as one string."""
    text = data.decode(errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError:
        return text


def mentions(document: Any, ids: Iterable[int], texts: Iterable[str] = ()) -> list[str]:
    """The values of `document` that name one of `ids` (an integer equal to it, or the id as a whole number
    inside a string: never digits inside a longer number) or contain one of `texts`."""
    wanted = set(ids)
    texts = tuple(texts)
    pattern = re.compile(r"(?<![0-9])(" + "|".join(str(i) for i in sorted(wanted)) + r")(?![0-9])") if wanted else None
    found = []
    for value in scalars(document):
        if isinstance(value, bool):
            continue
        if isinstance(value, int) and value in wanted:
            found.append(repr(value))
        elif isinstance(value, str) and _names(value, pattern, texts):
            found.append(value[:200])
    return found


def _names(value: str, pattern: re.Pattern[str] | None, texts: tuple[str, ...]) -> bool:
    by_id = pattern is not None and not _is_timestamp(value) and pattern.search(value) is not None
    return by_id or any(t in value for t in texts)


_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([+-]\d{2}:?\d{2}|Z| UTC)?)?")


def _is_timestamp(value: str) -> bool:
    return _TIMESTAMP.fullmatch(value) is not None
