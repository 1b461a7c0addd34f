"""Collecting witness cosignatures on the gateway's checkpoints (c2sp.org/tlog-witness).

Each connector that witnesses the log gets every new checkpoint with a consistency proof
from the last checkpoint it cosigned. Its cosignature is verified against the key the
gateway's settings hold for it, then kept beside the checkpoint. A witness that is down or
refuses is retried with the next checkpoint; nothing waits on witnesses.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from datetime import datetime

from audit_log import AuditLog
from audit_log.note import NoteError, Verifier, cosignature_time, split_note
from audit_log.witness import add_checkpoint_body
from gateway.links import ConnectorLinks

log = logging.getLogger("xiezhi.gateway.witnessing")


class Witnessing:
    def __init__(
        self,
        audit: AuditLog,
        witnesses: dict[str, Verifier],  # connector → its cosignature key
        links: ConnectorLinks,
        clock: Callable[[], datetime],
    ) -> None:
        self._audit = audit
        self._witnesses = witnesses
        self._links = links
        self._clock = clock
        self._known: dict[str, int] = {name: 0 for name in witnesses}
        for cosignature in audit.cosignatures():
            if cosignature.witness in self._known:
                self._known[cosignature.witness] = max(self._known[cosignature.witness], cosignature.size)
        self._queue: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="audit-witnessing", daemon=True)
        self._thread.start()
        latest = audit.latest_size()
        if latest is not None:
            self.submit(latest)

    def submit(self, size: int) -> None:
        """Ask every witness to cosign the checkpoint of `size` (asynchronously)."""
        if self._witnesses:
            self._queue.put(size)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=15)

    def _run(self) -> None:
        stop = False
        while not stop:
            size = self._queue.get()
            if size is None:
                return
            while True:  # only the newest checkpoint queued matters
                try:
                    newer = self._queue.get_nowait()
                except queue.Empty:
                    break
                if newer is None:
                    stop = True
                    break
                size = max(size, newer)
            for name in self._witnesses:
                try:
                    self.cosign(name, size)
                except Exception as exc:  # a witness failing must not stop the others
                    log.warning("witness %s did not cosign checkpoint %d: %s", name, size, type(exc).__name__)

    def cosign(self, name: str, size: int) -> bool:
        """Get `name`'s cosignature on the checkpoint of `size`; True if one was kept."""
        verifier = self._witnesses[name]
        checkpoint = self._audit.checkpoint(size)
        if checkpoint is None or self._known[name] >= size:
            return False
        for _ in range(2):  # a second try after the witness tells its own size
            old = self._known[name]
            proof = self._audit.consistency_proof(old, size) if old else []
            response = self._links.client(name).post(
                f"{self._links.url(name)}/witness/add-checkpoint",
                content=add_checkpoint_body(old, proof, checkpoint.note),
                headers={"content-type": "text/plain; charset=utf-8"},
                extensions=self._links.extensions(name),
            )
            if response.status_code == 409 and response.headers.get("content-type", "").startswith("text/x.tlog.size"):
                self._known[name] = int(response.text.strip())
                if self._known[name] >= size:
                    return False
                continue
            if response.status_code != 200:
                log.warning("witness %s refused checkpoint %d with HTTP %d", name, size, response.status_code)
                return False
            return self._keep(name, verifier, size, checkpoint.note, response.text)
        return False

    def _keep(self, name: str, verifier: Verifier, size: int, note: str, lines: str) -> bool:
        _, signatures = split_note(note + lines)
        for signature in signatures:
            if signature.name != verifier.name or signature.key_id != verifier.key_id:
                continue
            line = str(signature)
            try:
                if cosignature_time(note + line, verifier) is None:
                    continue
            except NoteError:
                log.warning("witness %s returned a cosignature that does not verify", name)
                return False
            self._audit.add_cosignature(size, name, line, self._clock())
            self._known[name] = size
            return True
        log.warning("witness %s returned no cosignature under its configured key", name)
        return False
