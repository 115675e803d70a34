"""The soak's one fault inside a pipeline function, injected from outside the production code: load_history
failing between its load job and its MERGE.

The soak starts its load_history processes on this file (`LocalStack.start(sources=...)`, functions-framework's
`--source`) in place of functions/load_history/main.py. Loaded that way (as the module `soak_faults`), it loads
the deployed adapter unchanged and wraps the loader's queries: the MERGE of a progress shard, after its load job
and quality checks, raises a TransientError with probability CHAOS_LOADER_FAIL_RATE, so the shard's redelivery
must still leave exactly one row per key. Imported as `devstack.soak_faults`, it changes nothing.
"""

from __future__ import annotations

import importlib.util
import os
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from devstack.wiring import function_source
from progress_monitor.errors import TransientError
from progress_monitor.pipeline import loader

SOURCE = Path(__file__).resolve()
FUNCTION = "load_history"
RATE = "CHAOS_LOADER_FAIL_RATE"


def failing_merge(
    query: Callable[..., Any], rate: float, draw: Callable[[], float] = random.random
) -> Callable[..., Any]:
    """`query`, but the progress MERGE fails with probability `rate` before it runs."""

    def query_or_fail(settings: Any, sql: str, *args: Any, **kwargs: Any) -> Any:
        if sql == loader.MERGE_PROGRESS and rate and draw() < rate:
            raise TransientError("chaos: loader failed between its load job and its MERGE (soak test)")
        return query(settings, sql, *args, **kwargs)

    return query_or_fail


def install(environ: Mapping[str, str] = os.environ) -> None:
    """Wrap the loader's queries in this process, at the rate the environment gives (emulators only)."""
    rate = float(environ.get(RATE) or 0.0)
    if rate and not environ.get("BIGQUERY_EMULATOR_HOST"):
        raise RuntimeError(f"{RATE} is for the local soak test only")
    names = vars(loader)  # the loader's own binding of `query` (it imports the function by name)
    names["query"] = failing_merge(names["query"], rate)


def adapter() -> ModuleType:
    """functions/load_history/main.py, loaded as functions-framework would load it."""
    spec = importlib.util.spec_from_file_location(f"{FUNCTION}_main", function_source(FUNCTION))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == SOURCE.stem:  # loaded by functions-framework as the soak's load_history source
    install()
    load_history = adapter().load_history
