"""tests/mariadb.py: without a MariaDB or MySQL server the tests that need one fail, never skip."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests import mariadb


def test_a_server_that_is_missing_and_cannot_be_installed_fails_the_test(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[list[str]] = []

    def refused_install(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        ran.append(command)
        return subprocess.CompletedProcess(command, 1, "", "ensure-mariadb: installing mariadb-server failed")

    monkeypatch.setattr(mariadb, "_program", lambda *names: None)
    monkeypatch.setattr(subprocess, "run", refused_install)
    with pytest.raises(pytest.fail.Exception, match=r"could not be installed .*installing mariadb-server failed"):
        mariadb._ensure_installed()
    assert [command[-1].rsplit("/", 1)[-1] for command in ran] == ["ensure-mariadb"]
