"""A throwaway Ray cluster on this machine: one head node, for the Ray engine's tests and benchmark.

`ray start --head --block` in its own process group, every port chosen free, on loopback,
its session files in a short temporary folder; stopped (the whole group) on exit. Its
workers import this checkout (PYTHONPATH), so functions defined in tests/ run on them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.polling import wait_until

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class RayCluster:
    address: str  # the head's GCS, host:port
    client: str  # Ray Client, ray://host:port


@contextmanager
def ray_head(cpus: int) -> Iterator[RayCluster]:
    """A Ray head node offering `cpus` CPUs to tasks, up until the block ends."""
    # A short folder: Ray's Unix socket paths under it must fit in 107 bytes.
    folder = Path(tempfile.mkdtemp(prefix="xray-"))
    gcs, client, dashboard, agent, agent_grpc, metrics, runtime_env = _free_ports(7)
    command = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--num-cpus={cpus}"]
    command += ["--node-ip-address=127.0.0.1", f"--port={gcs}", f"--ray-client-server-port={client}"]
    command += ["--include-dashboard=false", f"--dashboard-port={dashboard}"]
    command += [f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}"]
    command += [f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}"]
    command += [f"--temp-dir={folder}", "--disable-usage-stats"]
    environment = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    environment["PYTHONPATH"] = str(ROOT)
    # Ray Client's per-connection server starts slowly on a busy two-core machine: wait longer than 30 s.
    environment["RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S"] = "180"
    with (folder / "head.log").open("wb") as log:
        head = subprocess.Popen(
            command, cwd=folder, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_until(lambda: head.poll() is not None or (_listening(gcs) and _listening(client)), "the Ray head up")
        assert head.poll() is None, (folder / "head.log").read_text(errors="replace")[-2_000:]
        yield RayCluster(address=f"127.0.0.1:{gcs}", client=f"ray://127.0.0.1:{client}")
    finally:
        _stop(head)
        shutil.rmtree(folder, ignore_errors=True)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for held in sockets:
            held.bind(("127.0.0.1", 0))
        return [held.getsockname()[1] for held in sockets]
    finally:
        for held in sockets:
            held.close()


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _stop(head: subprocess.Popen[bytes]) -> None:
    """End the head and every process it started: its process group, which `ray_head` made."""
    os.killpg(head.pid, signal.SIGTERM)
    try:
        # Ray's services shut down on SIGTERM; whatever is left after a grace period is killed.
        wait_until(lambda: not _group_alive(head.pid), "the Ray head's processes ended", seconds=10)
    except AssertionError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
    head.wait()


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True
