"""The envelopes the functions receive, decoded as untrusted input: a Pub/Sub message inside a CloudEvent
(push or Eventarc), and a finalized Cloud Storage object (Eventarc's CloudEvent, or a Pub/Sub notification:
fake-gcs-server sends it, and the health check re-sends a lost event in it)."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from progress_monitor.contracts.values import parse_uint
from progress_monitor.errors import PermanentError

MAX_MESSAGE_BYTES = 64 * 1024


@dataclass(frozen=True)
class PubSubMessage:
    """A Pub/Sub message delivered as a CloudEvent (push or Eventarc)."""

    message_id: str
    data: bytes
    attributes: dict[str, str]
    publish_time: datetime | None

    def json(self) -> dict[str, Any]:
        """The message body as a JSON object, or PermanentError."""
        if len(self.data) > MAX_MESSAGE_BYTES:
            raise PermanentError(f"message body of {len(self.data)} bytes is larger than expected")
        try:
            value = json.loads(self.data or b"{}")
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise PermanentError("message body is not JSON") from exc
        if not isinstance(value, dict):
            raise PermanentError("message body is not a JSON object")
        return value


@dataclass(frozen=True)
class ObjectRef:
    """A finalized Cloud Storage object."""

    bucket: str
    name: str
    generation: int


def _event_data(event: Any) -> Any:
    data = event.get_data() if hasattr(event, "get_data") else event.get("data")
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise PermanentError("event data is not JSON") from exc
    return data


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def pubsub_message(event: Any) -> PubSubMessage:
    """The Pub/Sub message inside a `google.cloud.pubsub.topic.v1.messagePublished` CloudEvent."""
    data = _event_data(event)
    message = data.get("message") if isinstance(data, dict) else None
    if not isinstance(message, dict):
        raise PermanentError("event carries no Pub/Sub message")
    raw = message.get("data") or ""
    try:
        body = base64.b64decode(raw, validate=True) if raw else b""
    except (binascii.Error, ValueError, TypeError) as exc:
        raise PermanentError("Pub/Sub message data is not base64") from exc
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, dict):
        attributes = {}
    message_id = str(message.get("messageId") or message.get("message_id") or "")
    return PubSubMessage(
        message_id=message_id,
        data=body,
        attributes={str(k): str(v) for k, v in attributes.items()},
        publish_time=_parse_time(message.get("publishTime") or message.get("publish_time")),
    )


def finalize_notification(ref: ObjectRef) -> dict[str, str]:
    """The attributes of a Cloud Storage Pub/Sub notification for `ref`: what load_history accepts besides
    Eventarc's CloudEvent (fake-gcs-server sends it; the health check re-sends a lost event in it)."""
    return {
        "eventType": "OBJECT_FINALIZE",
        "bucketId": ref.bucket,
        "objectId": ref.name,
        "objectGeneration": str(ref.generation),
    }


def event_as_message(event: Any) -> PubSubMessage:
    """As much of an event as can be read, for the dead-letter topic: the Pub/Sub message when there is one,
    else the event's raw data (a malformed envelope is kept for the operator, not re-parsed)."""
    try:
        return pubsub_message(event)
    except PermanentError:
        pass
    event_id = event.get("id") if hasattr(event, "get") else None
    try:
        data = event.get_data() if hasattr(event, "get_data") else event.get("data")
    except Exception:
        data = None
    if isinstance(data, str):
        raw = data.encode("utf-8", "replace")
    elif isinstance(data, bytes):
        raw = data
    else:
        try:
            raw = json.dumps(data).encode()
        except (TypeError, ValueError, RecursionError):
            raw = repr(data).encode()
    return PubSubMessage(str(event_id or "")[:100], raw[:MAX_MESSAGE_BYTES], {}, None)


def storage_object(event: Any) -> ObjectRef | None:
    """The object of a finalize event: an Eventarc CloudEvent, or a Pub/Sub notification (fake-gcs-server).

    Returns None for events that are not object finalizations (they are acknowledged and ignored).
    """
    data = _event_data(event)
    if not isinstance(data, dict):
        raise PermanentError("storage event data is not an object")
    if isinstance(data.get("message"), dict):  # Pub/Sub notification format (finalize_notification)
        attrs = pubsub_message(event).attributes
        if attrs.get("eventType") != "OBJECT_FINALIZE":
            return None
        bucket, name, generation = attrs.get("bucketId"), attrs.get("objectId"), attrs.get("objectGeneration")
    else:  # google.cloud.storage.object.v1.finalized CloudEvent
        bucket, name, generation = data.get("bucket"), data.get("name"), data.get("generation")
    if not isinstance(bucket, str) or not bucket or not isinstance(name, str) or not name:
        raise PermanentError("storage event lacks bucket or object name")
    gen = parse_uint(str(generation), max_digits=20)
    if gen is None:
        raise PermanentError("storage event generation is not a number")
    return ObjectRef(bucket=bucket, name=name, generation=gen)
