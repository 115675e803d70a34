"""This process's clients on the local stack's environment (`LocalStack.use_here`), for devstack and the tests.

The functions build theirs once per instance (functions/<fn>/main.py); here the environment may change between
calls (a test points the process at another setting), so one Services is built per settings value.
"""

from __future__ import annotations

import functools

from progress_monitor import services
from progress_monitor.settings import Settings


def services_here() -> services.Services:
    """The Services of the current environment: the same clients until the environment changes."""
    return _built(Settings.from_env())


@functools.cache
def _built(cfg: Settings) -> services.Services:
    return services.build(cfg)
