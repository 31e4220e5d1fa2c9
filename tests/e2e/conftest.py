"""The end-to-end tests share one suite, which ends with the last of them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.suite import Suite
from tests.conftest import start_shared_suite


@pytest.fixture(scope="package")
def suite(tmp_path_factory: pytest.TempPathFactory, database_factory) -> Iterator[Suite]:
    """The whole suite for end-to-end tests that do not kill anything."""
    running = start_shared_suite(tmp_path_factory, database_factory)
    yield running
    running.stop()
