"""The suite's two tiers: `make check` runs the unit tier (`pytest --unit`), `make test` runs everything.

A test belongs to the integration tier when it carries the `integration` mark: it starts a
server, a subprocess, PostgreSQL, MariaDB, Chromium or a whole stack. Modules mark such tests
explicitly; a test that uses one of the conftest fixtures in `INTEGRATION_FIXTURES` is
marked here, and `database_url` marks its PostgreSQL parameter.

With `--unit`, integration tests are deselected and every other test runs under a guard:
starting a process, or binding or listening on a socket, fails the test and says why. The
guard covers the test's whole setup, call and teardown, fixtures of any scope included.
"""

from __future__ import annotations

import multiprocessing.util
import os
import socket
import subprocess
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import pytest

INTEGRATION = "integration"
# Fixtures of tests/conftest.py that start services: a test using one is an integration test.
INTEGRATION_FIXTURES = frozenset({"stack", "fresh_stack", "postgres", "mariadb", "demo_run"})


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--unit",
        action="store_true",
        help="run only the unit tier: no integration tests, and no test may start a process or open a server socket",
    )


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by mark
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(INTEGRATION)
    if not config.getoption("unit"):
        return
    deselected = [item for item in items if item.get_closest_marker(INTEGRATION)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker(INTEGRATION)]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    if not item.config.getoption("unit"):
        return (yield)
    with unit_guard():
        return (yield)


def _refuse(what: str) -> NoReturn:
    # pytest.fail raises pytest's failure outcome, a BaseException: code under test that
    # catches Exception cannot swallow it.
    pytest.fail(f"unit tier: this test {what}; mark it @pytest.mark.{INTEGRATION} (then only `make test` runs it)")


def _refusing(what: str) -> Callable[..., NoReturn]:
    def refuse(*args: Any, **kwargs: Any) -> NoReturn:
        _refuse(what)

    return refuse


def _refuse_popen(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> NoReturn:
    # Only the program's file name: the arguments may carry values that belong in no message.
    if isinstance(args, str | bytes):
        args = os.fsdecode(args).split() or ["?"]
    program = os.fsdecode(args if isinstance(args, os.PathLike) else next(iter(args), "?"))
    _refuse(f"starts a subprocess ({os.path.basename(program)})")


@contextmanager
def unit_guard() -> Iterator[None]:
    """While active, starting a process and binding or listening on a socket fail the test."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess.Popen, "__init__", _refuse_popen)
        for name in ("fork", "forkpty", "system", "posix_spawn", "posix_spawnp"):
            if hasattr(os, name):
                patch.setattr(os, name, _refusing(f"starts a process (os.{name})"))
        # multiprocessing's spawn and forkserver start methods; its fork method calls os.fork.
        patch.setattr(multiprocessing.util, "spawnv_passfds", _refusing("starts a process (multiprocessing)"))
        patch.setattr(socket.socket, "bind", _refusing("binds a socket"))
        patch.setattr(socket.socket, "listen", _refusing("listens on a socket"))
        yield
