"""The one place that picks the Cademi client: v1 (`cademi.CademiClient`) or v3 (`cademi_v3.CademiV3Client`), as
CADEMI_API_VERSION says, tuned for a weekly run or for an interactive request."""

from __future__ import annotations

from progress_monitor.cademi.ratelimit import CallBudget
from progress_monitor.cademi.v1 import CademiClient
from progress_monitor.cademi.v3 import CademiV3Client
from progress_monitor.contracts.cademi import CademiSource
from progress_monitor.settings import Settings


def client_class(settings: Settings) -> type[CademiClient]:
    return CademiV3Client if settings.cademi_api_version == "v3" else CademiClient


def make_client(settings: Settings, api_key: str, budget: CallBudget, *, interactive: bool = False) -> CademiSource:
    """A Cademi client within the school's one budget. `interactive` (a coordinator waiting on the form or in
    Slack): short timeouts and few retries instead of a run's patient ones."""
    source = client_class(settings)
    if not interactive:
        return source.from_settings(settings, api_key, budget)
    timeout = settings.interactive_timeout_s
    return source(
        settings.cademi_base_url,
        api_key,
        budget,
        connect_timeout_s=timeout,
        read_timeout_s=timeout,
        max_attempts=2,
        backoff_base_s=0.2,
        backoff_cap_s=0.5,
    )
