"""Process pools for the CPU-bound OPRF work, shared by the connector indexer and the client.

Small jobs run inline (starting processes would cost more than it saves). Large ones get
a process pool: forked when this process has a single thread, which starts in
milliseconds; spawned otherwise, because forking a process with other threads running (a
service, a test server) can copy a held lock into the child.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any, TypeVar

T = TypeVar("T")

# Below this many items, a pool costs more than it saves.
PARALLEL_THRESHOLD = 4_000


class InlineExecutor(Executor):
    """Runs submitted work at once in the caller's thread, delivering results as futures."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # delivered through the future, as a pool would
            future.set_exception(exc)
        return future


def executor_for(items: int, workers: int | None = None) -> Executor:
    """An executor sized for `items` units of work over `workers` processes (default: all cores)."""
    workers = workers or os.cpu_count() or 1
    if workers == 1 or items < PARALLEL_THRESHOLD:
        return InlineExecutor()
    method = "fork" if threading.active_count() == 1 else "spawn"
    return ProcessPoolExecutor(workers, mp_context=get_context(method))
