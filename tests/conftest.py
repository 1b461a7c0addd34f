from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import Stack, start_stack
from xiezhi.demo.generate import generate


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated data set (agency databases and lists), shared by a module."""
    root = tmp_path_factory.mktemp("data")
    generate(root, seed=11, debtors=160)
    return root


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, generated: Path) -> Iterator[Stack]:
    """Gateway and four connectors on loopback with the generated data's indexes published."""
    running = start_stack(tmp_path_factory.mktemp("stack"))
    try:
        running.publish(generated)
        yield running
    finally:
        running.stop()


@pytest.fixture
def fresh_stack(tmp_path: Path) -> Iterator[Stack]:
    """An empty stack (nothing published) for tests that change state."""
    running = start_stack(tmp_path)
    try:
        yield running
    finally:
        running.stop()
