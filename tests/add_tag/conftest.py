"""One add_tag stack for the form and Slack tests and the fuzzer: started by the first test of this package
that needs it (on each worker that runs one of its modules), stopped when the package is done, whatever order
its modules run in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from google.auth import crypt

from devstack.stack import LocalStack
from tests import tag_stack


@pytest.fixture(scope="package")
def add_tag_stack(tmp_path_factory: pytest.TempPathFactory, iap_key: tuple[crypt.Signer, Path]) -> Iterator[LocalStack]:
    stack = tag_stack.start(tmp_path_factory.mktemp("tagstack"), iap_key[1])
    yield stack
    stack.stop()
