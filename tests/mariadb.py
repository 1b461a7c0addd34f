"""A throwaway MariaDB (or MySQL) server for tests: its own datadir in a temporary folder, on loopback.

Uses the machine's `mariadbd` or `mysqld`; if neither is there, runs scripts/ensure-mariadb,
which installs Debian's mariadb-server with apt-get. If that fails too the test fails and
says so: the MySQL tests never skip. The server refuses to run as root, so as root it
drops to the `mysql` system user (`--user`), which owns the folder. It listens on
127.0.0.1 at a free port (and a socket in its folder), keeps no binary log, and is stopped
and its folder removed afterwards.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.polling import wait_until
from tests.postgres import _free_port

ROOT = Path(__file__).resolve().parent.parent
_SBIN = ("/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin")


def _program(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or next((f"{d}/{name}" for d in _SBIN if os.access(f"{d}/{name}", os.X_OK)), None)
        if found:
            return found
    return None


def _ensure_installed() -> tuple[str, str]:
    """The server and its datadir initialiser, installed first if need be; fails the test if not."""
    # One installer at a time: pytest-xdist's workers may all find the server missing.
    with open(Path(tempfile.gettempdir()) / "xiezhi-ensure-mariadb.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _program("mariadbd", "mysqld") is None:
            done = subprocess.run(["bash", str(ROOT / "scripts" / "ensure-mariadb")], capture_output=True, text=True)
            if done.returncode != 0:
                pytest.fail(
                    "MariaDB/MySQL server not found and could not be installed "
                    f"(scripts/ensure-mariadb: {done.stderr.strip()[-500:]}); apt-get install mariadb-server"
                )
    server, initialiser = _program("mariadbd", "mysqld"), _program("mariadb-install-db", "mysql_install_db")
    if server is None or initialiser is None:
        pytest.fail("mariadbd and mariadb-install-db are needed for the MySQL tests (apt-get install mariadb-server)")
    return server, initialiser


@contextmanager
def mariadb_server() -> Iterator[str]:
    """Start a server with its own datadir; yields a SQLAlchemy URL (PyMySQL) for its `root`
    account over TCP, without a database. Everything is removed afterwards."""
    server, initialiser = _ensure_installed()
    folder = Path(tempfile.mkdtemp(prefix="xiezhi-my-"))
    user = ["--user=mysql"] if os.geteuid() == 0 else []
    if user:
        shutil.chown(folder, "mysql", "mysql")
    data = folder / "data"
    initialise = [initialiser, "--no-defaults", f"--datadir={data}", *user]
    initialise += ["--auth-root-authentication-method=normal", "--skip-test-db"]
    done = subprocess.run(initialise, capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"mariadb-install-db failed: {done.stderr.strip()[-2000:]}")
    try:
        process, url = _start(server, folder, user)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    try:
        yield url
        if process.poll() is not None:  # it died while the tests used it: say why
            log = (folder / "server.log").read_text(errors="replace")[-4000:]
            raise RuntimeError(f"mariadbd exited with {process.returncode} while in use: {log}")
    finally:
        process.terminate()
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def _start(server: str, folder: Path, user: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    """Start the server on a free port; (the process, its URL). The port is free when chosen
    but may be taken before the server binds it (another test process starting its own): the
    server then exits, and it is started again on another port. Until then a server already
    on that port would answer, so only an answer from this datadir counts."""
    data = folder / "data"
    for _attempt in range(3):
        port = _free_port()
        # utf8mb4 by default; no binary log and a lazy redo-log flush: these tests check
        # behaviour, not durability.
        options = [f"--datadir={data}", f"--port={port}", f"--socket={folder / 'server.sock'}"]
        options += ["--bind-address=127.0.0.1", "--skip-name-resolve", "--skip-log-bin"]
        options += ["--character-set-server=utf8mb4", "--innodb-buffer-pool-size=64M"]
        options += ["--innodb-flush-log-at-trx-commit=0"]
        options += [f"--log-error={folder / 'server.log'}", f"--pid-file={folder / 'server.pid'}"]
        (folder / "server.log").unlink(missing_ok=True)  # this attempt's log only
        process = subprocess.Popen([server, "--no-defaults", *options, *user], stdin=subprocess.DEVNULL)
        _wait_for(process, port, data)
        if process.poll() is None:
            return process, f"mysql+pymysql://root@127.0.0.1:{port}/?charset=utf8mb4"
        log = (folder / "server.log").read_text(errors="replace")[-2000:]
        if "Address already in use" not in log:
            raise RuntimeError(f"mariadbd exited with {process.returncode}: {log}")
    raise RuntimeError("mariadbd found its port taken three times running")


def _wait_for(process: subprocess.Popen[bytes], port: int, data: Path) -> None:
    wait_until(lambda: process.poll() is not None or _answers(port, data), "MariaDB accepting connections")


def _answers(port: int, data: Path) -> bool:
    """Whether the server on `port` answers and is the one of `data`."""
    import pymysql

    try:
        connection = pymysql.connect(host="127.0.0.1", port=port, user="root", connect_timeout=2)
    except pymysql.err.OperationalError:
        return False
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT @@datadir")
            (datadir,) = cursor.fetchone()
    except pymysql.err.MySQLError:
        return False
    finally:
        connection.close()
    return os.path.realpath(str(datadir)) == os.path.realpath(data)
