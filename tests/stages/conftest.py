"""The stage and feature tests' services, in this process (world.py): one bqemulator thread and one
fake-gcs-server per session, a world (datasets, bucket, simulator, Slack) per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.stages.world import Servers, World, world_of


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    started = Servers.start(tmp_path_factory.mktemp("stages"))
    yield started
    started.stop()


@pytest.fixture
def make_world(servers: Servers, tmp_path: Path) -> Iterator[Callable[..., World]]:
    """Factory: a world on a school (a scenario dict); closed at teardown."""
    with ExitStack() as worlds:

        def make(school: dict[str, Any], **options: Any) -> World:
            folder = tmp_path / f"world-{len(worlds._exit_callbacks)}"
            folder.mkdir()
            return worlds.enter_context(world_of(servers, folder, school, **options))

        yield make
