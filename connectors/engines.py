"""Evaluation engines: where an index build's heavy step (evaluate, derive tokens) runs.

An `Engine` maps a picklable pure function `fn(shared, chunk)` over an iterator of chunks and
yields the results in the chunks' order. It pulls a chunk from the iterator only when fewer
than `in_flight` chunks are pulled and not yet yielded, so however many chunks a build
streams, at most `in_flight` of them (and their results) are held at once.

- `LocalEngine`: this machine's process pool (`xiezhi.parallel`), or inline for a small job.
- `RayEngine`: tasks on a Ray cluster the agency runs. `ray` is an optional extra
  (`pip install 'xiezhi[ray]'`), imported only when a `RayEngine` first runs. The shared
  value (the epoch's OPRF key) is put in the cluster's object store once per run and passed
  to every task by reference.

Errors (`xiezhi.errors`): `InvalidInput` for a malformed Ray address or one that
`RAY_ADDRESS` contradicts; `Unavailable` when Ray is not installed, the cluster cannot be
reached, or a task is lost or fails. Messages name the address and an exception type, never
a chunk, a result or the shared value.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sized
from concurrent.futures import Future
from itertools import chain, islice
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from xiezhi.errors import InvalidInput, Unavailable, XiezhiError
from xiezhi.parallel import PARALLEL_THRESHOLD, executor_for

if TYPE_CHECKING:
    from types import ModuleType

S = TypeVar("S")
C = TypeVar("C", bound=Sized)
R = TypeVar("R")

# `auto`, `ray://host:port` (Ray Client) or `host:port` (the head's GCS), as `ray.init` takes them.
_JOIN_ATTEMPTS = 3
_JOIN_PAUSE_SECONDS = 2.0
_HOST_PORT = re.compile(r"^(?:ray://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})$")


class Engine(Protocol):
    """Maps `fn(shared, chunk)` over `chunks`, yielding results in order, `in_flight` chunks at most."""

    def map(self, fn: Callable[[S, C], R], shared: S, chunks: Iterable[C]) -> Iterator[R]: ...

    def close(self) -> None:
        """Release what the engine holds between runs (a Ray cluster's connection)."""


class LocalEngine:
    """This machine's processes: `workers` of them (default: every core), inline for a small job."""

    def __init__(self, workers: int | None = None, *, in_flight: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.in_flight = _positive(2 * self.workers if in_flight is None else in_flight, "in_flight")

    def map(self, fn: Callable[[S, C], R], shared: S, chunks: Iterable[C]) -> Iterator[R]:
        stream = iter(chunks)
        head = list(islice(stream, self.in_flight))
        # A job that ends within its first chunks and holds few items runs inline: starting
        # processes would cost more than they save (xiezhi.parallel's threshold, in items).
        ended = len(head) < self.in_flight
        items = sum(len(chunk) for chunk in head) if ended else PARALLEL_THRESHOLD
        with executor_for(items, self.workers) as pool:
            pending: deque[Future[R]] = deque()
            try:
                for chunk in chain(_handed_over(head), stream):
                    pending.append(pool.submit(fn, shared, chunk))
                    if len(pending) >= self.in_flight:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:
                for future in pending:
                    future.cancel()

    def close(self) -> None:
        """Nothing to release: each run makes and ends its own pool."""


class RayEngine:
    """Tasks on the Ray cluster at `address`; `in_flight` tasks at most (default: twice its CPUs).

    A task not finished within `task_timeout` seconds of becoming the oldest one fails the run.
    The first run joins the cluster and later runs use the same connection, until `close()`
    leaves it (a build runs the engine once per step). When this process has already joined a
    Ray cluster (`ray.init` by its caller), the runs use that connection and leave it open.
    """

    def __init__(
        self,
        address: str,
        *,
        in_flight: int | None = None,
        connect_timeout: float = 10.0,
        task_timeout: float = 600.0,
    ) -> None:
        self.address = parse_address(address)
        self.in_flight = None if in_flight is None else _positive(in_flight, "in_flight")
        self.connect_timeout = connect_timeout
        self.task_timeout = task_timeout
        self._ray: ModuleType | None = None
        self._joined = False

    def map(self, fn: Callable[[S, C], R], shared: S, chunks: Iterable[C]) -> Iterator[R]:
        if self._ray is None:
            self._ray, self._joined = self._connect()
        yield from self._run(self._ray, fn, shared, chunks)

    def close(self) -> None:
        """Leave the cluster if a run joined it; the next run joins again."""
        if self._ray is not None and self._joined:
            self._ray.shutdown()
        self._ray, self._joined = None, False

    def _connect(self) -> tuple[ModuleType, bool]:
        """Ray, joined to the cluster; True when this call joined it (and so leaves it after the run)."""
        environment = os.environ.get("RAY_ADDRESS")
        if environment and self.address not in ("auto", environment):
            # ray.init would obey RAY_ADDRESS over the address given: refuse the contradiction.
            raise InvalidInput(f"RAY_ADDRESS ({environment}) contradicts the Ray address given ({self.address})")
        self._check_reachable(_endpoint(self.address))
        try:
            import ray
        except ImportError:
            raise Unavailable("Ray is not installed: install the `ray` extra (pip install 'xiezhi[ray]')") from None
        if self.address == "auto":
            self._check_reachable(_local_cluster())
        if ray.is_initialized():  # a caller that joined a cluster itself keeps its connection
            return ray, False
        for attempt in range(1, _JOIN_ATTEMPTS + 1):
            try:
                # Workers' output stays on the cluster: nothing a task prints reaches this process's log.
                ray.init(address=self.address, logging_level=logging.WARNING, log_to_driver=False)
                return ray, True
            except Exception as exc:
                # A cluster that is busy or still starting can drop the first handshake (Ray
                # Client in particular): leave cleanly, wait, try again a few times.
                ray.shutdown()
                if attempt == _JOIN_ATTEMPTS:
                    raise Unavailable(f"cannot join the Ray cluster at {self.address} ({type(exc).__name__})") from None
                time.sleep(_JOIN_PAUSE_SECONDS * attempt)
        raise AssertionError("unreachable")

    def _check_reachable(self, endpoint: tuple[str, int] | None) -> None:
        # ray.init keeps retrying an address where nothing listens for minutes: look first.
        if endpoint is None:
            return
        try:
            socket.create_connection(endpoint, timeout=self.connect_timeout).close()
        except OSError as exc:
            raise Unavailable(f"the Ray cluster at {self.address} cannot be reached ({type(exc).__name__})") from None

    def _run(self, ray: Any, fn: Callable[[S, C], R], shared: S, chunks: Iterable[C]) -> Iterator[R]:
        limit = self.in_flight or 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
        task = ray.remote(fn)
        shared_ref = ray.put(shared)
        pending: deque[Any] = deque()
        try:
            for chunk in chunks:
                pending.append(task.remote(shared_ref, chunk))
                if len(pending) >= limit:
                    yield self._result(ray, pending.popleft())
            while pending:
                yield self._result(ray, pending.popleft())
        finally:
            for ref in pending:
                ray.cancel(ref)

    def _result(self, ray: Any, ref: Any) -> Any:
        ready, _ = ray.wait([ref], num_returns=1, timeout=self.task_timeout)
        if not ready:
            raise Unavailable(
                f"a task on the Ray cluster at {self.address} did not finish within {self.task_timeout:.0f} s"
            )
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            # A task's own XiezhiError carries a public message; anything else is named by type
            # only, and raised outside this block so that no traceback carries the original.
            if isinstance(exc.cause, XiezhiError):
                raise exc.cause from None
            failure = f"failed ({type(exc.cause).__name__})"
        except ray.exceptions.RayError as exc:
            failure = f"was lost ({type(exc).__name__})"
        raise Unavailable(f"a task on the Ray cluster at {self.address} {failure}")


def parse_address(address: str) -> str:
    """`address` stripped, if it is `auto`, `ray://host:port` or `host:port`; else InvalidInput."""
    address = address.strip()
    if address == "auto":
        return address
    match = _HOST_PORT.match(address)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise InvalidInput("a Ray address is `auto`, `ray://host:port` (Ray Client) or `host:port` (the head node)")
    return address


def _local_cluster() -> tuple[str, int] | None:
    """The head that `auto` names (the cluster last started on this machine), if Ray can say."""
    try:
        from ray._private.services import canonicalize_bootstrap_address

        # NOTE: a private function of the pinned Ray, the one ray.init itself resolves `auto` with.
        found = canonicalize_bootstrap_address("auto")
    except Exception:
        return None  # ray.init then says itself that it finds no cluster
    return _endpoint(found) if found else None


def _endpoint(address: str) -> tuple[str, int] | None:
    match = _HOST_PORT.match(address)
    if match is None:  # `auto`: Ray finds the cluster this machine started
        return None
    return match["host"].strip("[]"), int(match["port"])


def _handed_over(head: list[C]) -> Iterator[C]:
    """The chunks of `head` in order, each dropped from the list as it is handed over."""
    head.reverse()
    while head:
        yield head.pop()


def _positive(value: int, name: str) -> int:
    if value < 1:
        raise InvalidInput(f"{name} must be at least 1")
    return value
