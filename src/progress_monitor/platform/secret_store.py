"""Read secrets: Secret Manager in the cloud (cached per instance), environment variables locally.

A secret that may have been rotated (Slack refused the bot token, a signature did not verify) is read again
with `fresh=True`, which bypasses the cache for that one name and keeps the new value for the next callers.
"""

from __future__ import annotations

import threading
from typing import Any

from progress_monitor.errors import SecretUnavailableError
from progress_monitor.platform.access import needs
from progress_monitor.settings import Settings

_cache: dict[str, str] = {}
_lock = threading.Lock()
_client: Any = None


def secret_id(env_name: str) -> str:
    """Secret Manager id of a secret, e.g. CADEMI_API_KEY -> cademi-api-key."""
    return env_name.lower().replace("_", "-")


@needs("secret {env_name}")
def get_secret(settings: Settings, env_name: str, fresh: bool = False) -> str:
    """Return the secret's current value, read once per process; `fresh` reads it again (the stored value may
    have been rotated) and caches what it read. A failed fresh read keeps the cached value for other callers.
    The "env" backend has no cache: it reads `settings.local_secrets` every time."""
    if settings.secrets_backend == "env":
        value = settings.local_secrets.get(env_name)
        if not value:
            raise SecretUnavailableError(f"secret {env_name} is not set in the environment")
        return value
    with _lock:
        if fresh or env_name not in _cache:
            _cache[env_name] = _read_secret_manager(settings.gcp_project, secret_id(env_name))
        return _cache[env_name]


def _read_secret_manager(project: str, name: str) -> str:
    global _client
    from google.cloud import secretmanager

    if _client is None:
        _client = secretmanager.SecretManagerServiceClient()
    path = f"projects/{project}/secrets/{name}/versions/latest"
    try:
        response = _client.access_secret_version(request={"name": path})
    except Exception as exc:  # the client raises many google.api_core types; report uniformly
        raise SecretUnavailableError(f"cannot read secret {path}: {type(exc).__name__}") from None
    value: str = response.payload.data.decode("utf-8").strip()
    if not value:
        raise SecretUnavailableError(f"secret {path} is empty")
    return value
