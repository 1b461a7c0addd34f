"""The unit tier (`make check`, `pytest --unit`) leaves integration tests out and stops a unit
test that starts a process or opens a server socket; the whole suite (`make test`) runs all."""

from __future__ import annotations

import pytest

PLANTED = """
import multiprocessing
import socket
import subprocess
import sys

import pytest


def test_starts_a_subprocess():
    subprocess.run([sys.executable, "-c", "pass"], check=True)


def test_starts_a_process_pool_worker():
    process = multiprocessing.get_context("spawn").Process(target=print)
    process.start()
    process.join()


def test_binds_a_socket():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))


def test_swallows_exceptions_around_a_subprocess():
    try:
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    except Exception:
        pass


def test_computes():
    assert sum(range(4)) == 6


@pytest.mark.integration
def test_marked_integration():
    pass


def test_uses_the_stack(stack):
    pass
"""
# A stand-in for tests/conftest.py's `stack`: the tier follows the fixture's name.
CONFTEST = """
import pytest


@pytest.fixture
def stack():
    return "a stack"
"""


@pytest.fixture
def planted(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\nmarkers =\n    integration: planted\naddopts = -p tests.tiers --strict-markers\n")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_planted=PLANTED)
    return pytester


def test_the_unit_tier_fails_a_test_that_starts_a_process_or_binds_a_socket(planted: pytest.Pytester) -> None:
    result = planted.runpytest("--unit")
    result.assert_outcomes(passed=1, failed=4, deselected=2)
    result.stdout.fnmatch_lines(
        [
            "*unit tier: this test starts a subprocess (python*); mark it @pytest.mark.integration*",
            "*unit tier: this test starts a process (multiprocessing)*",
            "*unit tier: this test binds a socket*",
        ]
    )


def test_without_the_unit_flag_integration_tests_run(planted: pytest.Pytester) -> None:
    result = planted.runpytest("-k", "computes or integration or stack")
    result.assert_outcomes(passed=3, deselected=4)
