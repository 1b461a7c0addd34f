"""A throwaway PostgreSQL server for tests: its own cluster in a temporary folder, on loopback.

Uses the PostgreSQL binaries of the machine (`pg_config --bindir`, or Debian's
/usr/lib/postgresql/<version>/bin); nothing is installed. PostgreSQL refuses to run as root,
so as root the cluster belongs to the `postgres` system user and its commands run through
`runuser`. Without the binaries the tests that need the server skip, except in CI
(CI=true), where they fail.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _bindir() -> Path | None:
    configured = os.environ.get("XIEZHI_PG_BINDIR")
    candidates = [configured] if configured else []
    pg_config = shutil.which("pg_config")
    if pg_config:
        candidates.append(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for folder in candidates:
        if folder and (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def postgres_server(settings: tuple[str, ...] = ()) -> Iterator[str]:
    """Start a server with its own cluster; yields its SQLAlchemy URL (psycopg). The cluster
    lives in a fresh folder under the system's temporary directory, removed afterwards.
    `settings` are more server settings (`name=value`), as a benchmark tunes them."""
    bindir = _bindir()
    if bindir is None:
        reason = "PostgreSQL binaries not found (apt-get install postgresql)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}: CI must run the PostgreSQL tests")
        pytest.skip(reason)
    pytest.importorskip("psycopg")
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="xiezhi-pg-"))
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres")
    data = folder / "data"

    def run(*command: str) -> None:
        done = subprocess.run([*as_user, *command], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {done.stderr.strip() or done.stdout.strip()}")

    run(str(bindir / "initdb"), "-D", str(data), "-U", "xiezhi", "-A", "trust", "--no-sync", "-E", "UTF8")
    # fsync off: these tests check behaviour, not durability, and a test server need not survive a crash.
    extra = "".join(f" -c {setting}" for setting in settings)
    # The port is free when chosen but may be taken before the server binds it (another test
    # process starting its own server): the start then fails, and is tried on another port.
    for attempt in range(3):
        port = _free_port()
        (folder / "server.log").unlink(missing_ok=True)
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off{extra}"
        try:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-o", options, "-w", "start")
            break
        except RuntimeError:
            log = (folder / "server.log").read_text(errors="replace") if (folder / "server.log").exists() else ""
            if "could not bind" not in log or attempt == 2:
                raise
    try:
        yield f"postgresql+psycopg://xiezhi@127.0.0.1:{port}/postgres"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)
