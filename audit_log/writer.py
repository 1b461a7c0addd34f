"""Batched, durable appends and periodic signed tree heads.

Callers hand events to `AuditWriter.append`, which returns only once the event is committed:
no audit, no answer. One thread takes every event queued while the previous commit was
running and appends them all in one transaction (group commit), so a commit's fsync is
shared by the whole batch and the log keeps up with load. After each batch, and at least
every `every_seconds`, the thread signs a checkpoint when `every_entries` entries or
`every_seconds` have passed since the last one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime

from sqlalchemy import Connection

from audit_log.entries import AuditEvent
from audit_log.note import Checkpoint, Signer
from audit_log.store import AuditLog, append_events, lock_tail
from xiezhi.errors import XiezhiError

log = logging.getLogger(__name__)


class AuditUnavailable(XiezhiError):
    """The log could not make an event durable, so the action it records does not go ahead."""

    status = 503
    code = "audit_unavailable"


_Queued = tuple[AuditEvent, dict[str, object], Future[int]]  # an event, its screened payload, its caller


class CheckpointSigner:
    """Signs checkpoints of one log with the gateway's key, in the C2SP format."""

    def __init__(self, log_: AuditLog, signer: Signer, clock: Callable[[], datetime]) -> None:
        self._log = log_
        self.signer = signer
        self._clock = clock

    @property
    def origin(self) -> str:
        return self.signer.name

    def issue(self) -> int | None:
        """Sign a checkpoint at the current size; None if the latest checkpoint already has it."""
        with self._log.engine.begin() as connection:
            return self.issue_in(connection)

    def issue_in(self, connection: Connection) -> int | None:
        """`issue` within the caller's transaction (after its appends, before its commit)."""
        tail = lock_tail(connection)
        latest = self._log.latest_size(connection)
        if latest is not None and tail.size <= latest:
            return None
        root = tail.tree.root()
        body = Checkpoint(self.origin, tail.size, root).text()
        self._log.add_checkpoint(connection, tail.size, root, body + "\n" + self.signer.sign(body), self._clock())
        return tail.size


class AuditWriter:
    def __init__(
        self,
        log_: AuditLog,
        checkpoints: CheckpointSigner,
        *,
        every_entries: int,
        every_seconds: float,
        max_batch: int = 2_000,
        timeout_seconds: float = 30.0,
        on_checkpoint: Callable[[int], None] | None = None,
    ) -> None:
        self._log = log_
        self._checkpoints = checkpoints
        self._every_entries = every_entries
        self._every_seconds = every_seconds
        self._max_batch = max_batch
        self._timeout = timeout_seconds
        self._on_checkpoint = on_checkpoint
        self._queue: queue.SimpleQueue[_Queued | None] = queue.SimpleQueue()
        self._closed = False
        self._size = log_.size()
        self._signed = log_.latest_size() or 0
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    def append(self, event: AuditEvent) -> int:
        """Append `event`; returns its leaf index once it is committed. Raises AuditUnavailable."""
        future = self.submit(event)
        try:
            return future.result(timeout=self._timeout)
        except TimeoutError as exc:
            raise AuditUnavailable("the audit log did not confirm this action in time") from exc

    def submit(self, event: AuditEvent) -> Future[int]:
        """Queue `event` without waiting: the future gives its leaf index once it is committed,
        or raises AuditUnavailable. For a caller with several events in flight; what an event
        records must not go ahead before its future has a result."""
        payload = event.payload()  # screened in the caller's thread, so the caller gets UnsafeAuditEntry
        if self._closed:
            raise AuditUnavailable("the audit log is closed")
        future: Future[int] = Future()
        self._queue.put((event, payload, future))
        return future

    def checkpoint_now(self) -> int | None:
        """Sign a checkpoint of everything committed so far (used at shutdown and by tests)."""
        return self._sign()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join(timeout=30)
            while True:  # events queued as the writer stopped are refused, not left waiting
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    return
                if item is not None:
                    item[2].set_exception(AuditUnavailable("the audit log is closed"))

    def _run(self) -> None:
        next_tick = time.monotonic() + self._every_seconds
        while True:
            item: object
            try:
                item = self._queue.get(timeout=max(0.0, next_tick - time.monotonic()))
            except queue.Empty:
                item = _IDLE
            batch: list[_Queued] = []
            stop = item is None
            if isinstance(item, tuple):
                batch.append(item)
            while not stop and len(batch) < self._max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                else:
                    batch.append(more)
            if batch:
                self._write(batch)
            ticked = time.monotonic() >= next_tick
            if ticked:
                next_tick = time.monotonic() + self._every_seconds
                self._size = max(self._size, self._log.size())  # appends made in callers' transactions
            if self._size - self._signed >= self._every_entries or (ticked and self._size > self._signed):
                self._sign()
            if stop:
                self._sign()
                return

    def _write(self, batch: list[_Queued]) -> None:
        """Commit `batch` in one transaction; when it brings the log `every_entries` past the
        last checkpoint, the checkpoint is signed in that same transaction (one commit for both)."""
        signed: int | None = None
        try:
            with self._log.engine.begin() as connection:
                seqs = append_events(connection, [event for event, _, _ in batch], [p for _, p, _ in batch])
                if seqs[-1] + 1 - self._signed >= self._every_entries:
                    signed = self._checkpoints.issue_in(connection)
        except Exception as exc:  # the whole batch failed: every caller is told
            log.error("audit append of %d events failed: %s", len(batch), type(exc).__name__)
            for _, _, future in batch:
                refused = AuditUnavailable("the audit log could not record this action")
                refused.__cause__ = exc  # what failed (a full disk, say), for the API to name
                future.set_exception(refused)
            return
        for (_, _, future), seq in zip(batch, seqs, strict=True):
            future.set_result(seq)
        self._size = max(self._size, seqs[-1] + 1)
        if signed is not None:
            self._signed_at(signed)

    def _sign(self) -> int | None:
        try:
            size = self._checkpoints.issue()
        except Exception as exc:
            log.error("signing a checkpoint failed: %s", type(exc).__name__)
            return None
        if size is not None:
            self._signed_at(size)
        return size

    def _signed_at(self, size: int) -> None:
        self._signed = self._size = max(self._size, size)
        if self._on_checkpoint is not None:
            self._on_checkpoint(size)


_IDLE = object()
