"""Starting the gateway and the connectors as real HTTP services on loopback, as subprocesses."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from xiezhi.errors import Unavailable
from xiezhi.tls import TLSFiles, client_context


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Services:
    """Child processes, stopped together; each logs to its own file."""

    processes: list[tuple[str, subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def start(
        self, name: str, args: list[str], log: Path, health_url: str, tls: TLSFiles, timeout: float = 60.0
    ) -> None:
        """Start `xiezhi <args>` and wait until `health_url` answers a caller presenting `tls`."""
        log.parent.mkdir(parents=True, exist_ok=True)
        handle = log.open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", *args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        handle.close()
        self.processes.append((name, process, log))
        self._wait_healthy(name, process, log, health_url, tls, timeout)

    def stop(self) -> None:
        """Stop in reverse order of starting: the gateway goes first, so the checkpoint it signs
        as it shuts down still reaches the connectors that witness its log."""
        for _, process, _ in reversed(self.processes):
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @staticmethod
    def _wait_healthy(
        name: str, process: subprocess.Popen[bytes], log: Path, url: str, tls: TLSFiles, timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        context = client_context(tls.ca, tls)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
                raise Unavailable(f"{name} exited during start-up (code {process.returncode}); log tail:\n{tail}")
            try:
                if httpx.get(url, timeout=1.0, verify=context).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)  # polling a child's readiness, not synchronising tests
        raise Unavailable(f"{name} did not become healthy within {timeout:.0f}s; see {log}")
