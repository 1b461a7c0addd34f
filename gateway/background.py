"""Periodic: a daemon thread running one job every N seconds, or at once when woken."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from xiezhi.errors import XiezhiError

log = logging.getLogger("xiezhi.gateway.background")


class Periodic:
    def __init__(self, name: str, every_seconds: float, job: Callable[[], object]) -> None:
        self._name, self._every, self._job = name, every_seconds, job
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"xiezhi-{name}", daemon=True)
        self._thread.start()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wake(self) -> None:
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._every)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._job()
            except (XiezhiError, OSError) as exc:
                # The error's class and code only, never its message; the next run retries.
                code = getattr(exc, "code", "-")
                log.error("%s failed: %s (%s); retrying in %.0f s", self._name, type(exc).__name__, code, self._every)
