"""A signed `/turma` request from the local stack's coordinator, over real HTTP to the slack_command function."""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlencode

import requests

from devstack.stack import LocalStack
from devstack.wiring import LOCAL_SLACK_TEAM, LOCAL_SLACK_USER


def slash_command(stack: LocalStack, text: str) -> requests.Response:
    body = urlencode(
        {
            "command": "/turma",
            "text": text,
            "user_id": LOCAL_SLACK_USER,
            "team_id": LOCAL_SLACK_TEAM,
            "user_name": "ana",
        }
    )
    timestamp = str(int(time.time()))
    key = stack.local_secrets["SLACK_SIGNING_SECRET"].encode()
    signature = "v0=" + hmac.new(key, f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()
    headers = {
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": signature,
        "Content-Type": "application/x-www-form-urlencoded",
    }
    return requests.post(stack.endpoints["functions"]["slack_command"], data=body, headers=headers, timeout=30)
