from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.demo.generate import generate
from tests.demo_run import DemoRun, start
from tests.mariadb import mariadb_server
from tests.postgres import postgres_server
from tests.stack import Stack, start_stack

# tests.tiers: the unit and integration tiers (`--unit`); pytester: tests that run pytest on a planted test file.
pytest_plugins = ["tests.tiers", "pytester"]


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


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A PostgreSQL server of the session's own (one per test process); its base URL."""
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def mariadb() -> Iterator[str]:
    """A MariaDB server of the session's own (one per test process, installed if missing); its base URL."""
    with mariadb_server() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty database on each backend the gateway supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.sqlite'}"
    from sqlalchemy import create_engine, text

    base: str = request.getfixturevalue("postgres")
    name = f"t{uuid.uuid4().hex[:16]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return base.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """The one whole `xiezhi demo` run the tests share (tests/demo_run.py).

    Mark each test that uses it `@pytest.mark.xdist_group("demo")`: `make test` distributes
    by group, so one worker runs the demo once for them all.
    """
    return start(tmp_path_factory.mktemp("demo"))
