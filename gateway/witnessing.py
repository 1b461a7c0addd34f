"""Collecting witness cosignatures on the gateway's checkpoints (c2sp.org/tlog-witness).

Each connector that witnesses the log gets every new checkpoint with a consistency proof
from the last checkpoint it cosigned. Its cosignature is verified against the key the
gateway's settings hold for it, then kept beside the checkpoint (and published,
`gateway.checkpoint_publication`). A witness that is down is retried with the next
checkpoint; nothing waits on witnesses.

A witness that *refuses* — it has cosigned a larger log than this one now holds, or a
different checkpoint of the same size, or the consistency proof fails — remembers a log
this gateway no longer has: it was rolled back or rewritten. That raises an alarm
(`gateway.alarms`), which fails the readiness check until an operator resolves it.
A cosignature the witness gave but the gateway never received (the answer was lost) is
fetched back from the witness's newest cosigned checkpoint.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import httpx

from audit_log import AuditLog
from audit_log.note import NoteError, Verifier, cosignature_time, is_decimal, open_checkpoint, split_note
from audit_log.witness import add_checkpoint_body
from audit_log.witness_policy import HeldCheckpoint
from gateway.links import ConnectorLinks

log = logging.getLogger("xiezhi.gateway.witnessing")

# What each refusal of c2sp.org/tlog-witness means for this log: an alarm's reason code and why.
_REFUSALS = {
    400: ("witness_bad_request", "the witness could not read the request"),
    403: ("witness_signature_refused", "the witness does not accept the log's signature: is it given the right key?"),
    404: ("witness_unknown_log", "the witness does not know this log's origin"),
    409: ("witness_conflicting_checkpoint", "it cosigned another checkpoint of this size: the log was rewritten"),
    422: (
        "witness_inconsistent_log",
        "this log does not extend the one it cosigned: the log was rolled back or rewritten",
    ),
}
READ_SECONDS = 3.0  # a witness slower than this to hand out its checkpoint is left out of a verification
# Called with the witness's name, a reason code and a message (sizes and names only).
OnRefusal = Callable[[str, str, str], None]


class Witnessing:
    def __init__(
        self,
        audit: AuditLog,
        witnesses: dict[str, Verifier],  # connector → its cosignature key
        links: ConnectorLinks,
        clock: Callable[[], datetime],
        log_key: Verifier,
        on_cosigned: Callable[[int], None] = lambda _size: None,
    ) -> None:
        self._audit = audit
        self._log_key = log_key
        self._witnesses = witnesses
        self._links = links
        self._clock = clock
        self._on_cosigned = on_cosigned
        self._on_refusal: OnRefusal = lambda _name, _reason, _message: None
        self._known: dict[str, int] = {name: 0 for name in witnesses}
        for cosignature in audit.cosignatures():
            if cosignature.witness in self._known:
                self._known[cosignature.witness] = max(self._known[cosignature.witness], cosignature.size)
        # Held from a cosignature request until its answer is kept: a verification reads the
        # witnesses' views under it, so a cosignature a witness holds is one this log has
        # already kept (or never received), not one on its way in.
        self._exchange = threading.Lock()
        self._queue: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="audit-witnessing", daemon=True)

    def start(self, on_refusal: OnRefusal) -> None:
        """Start cosigning in the background, from the newest checkpoint; refusals go to `on_refusal`."""
        self._on_refusal = on_refusal
        self._thread.start()
        latest = self._audit.latest_size()
        if latest is not None:
            self.submit(latest)

    def submit(self, size: int) -> None:
        """Ask every witness to cosign the checkpoint of `size` (asynchronously)."""
        if self._witnesses:
            self._queue.put(size)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=15)

    def held_views(self) -> list[HeldCheckpoint]:
        """Each reachable witness's newest cosigned checkpoint, to hold this log to
        (`xiezhi.audit_log.witness_policy`); a witness that cannot be read is left out.
        Waits for a cosignature exchange under way to end first."""
        with self._exchange, ThreadPoolExecutor(max_workers=max(1, len(self._witnesses))) as pool:
            read = list(pool.map(self._read_view, self._witnesses))
        return [view for view in read if view is not None]

    def _read_view(self, name: str) -> HeldCheckpoint | None:
        try:
            response = self._get_cosigned(name)
        except httpx.HTTPError as exc:
            log.warning("witness %s: newest cosigned checkpoint not read: %s", name, type(exc).__name__)
            return None
        return HeldCheckpoint(response.text, f"witness {name}") if response.status_code == 200 else None

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
        with self._exchange:
            return self._cosign(name, size)

    def _cosign(self, name: str, size: int) -> bool:
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
            status = response.status_code
            if status == 409 and response.headers.get("content-type", "").startswith("text/x.tlog.size"):
                theirs = _size(response.text)
                latest = self._audit.latest_size() or 0
                if theirs is None or theirs > latest:
                    self._refused(
                        name,
                        "witness_ahead",
                        f"witness {name} has cosigned a log of {theirs} entries; this log's newest checkpoint "
                        f"is of {latest}: the log was rolled back",
                    )
                    return False
                self._known[name] = theirs
                if theirs >= size:
                    return self._recover(name, verifier)
                continue
            if status in _REFUSALS:
                reason, meaning = _REFUSALS[status]
                self._refused(name, reason, f"witness {name} refused checkpoint {size} (HTTP {status}): {meaning}")
                return False
            if status != 200:
                log.warning("witness %s did not cosign checkpoint %d: HTTP %d", name, size, status)
                return False
            return self._keep(name, verifier, size, checkpoint.note, response.text)
        return False

    def _refused(self, name: str, reason: str, message: str) -> None:
        try:
            self._on_refusal(name, reason, message)
        except Exception as exc:  # the alarm's own failure must not stop the witnessing thread
            log.error("witness %s refused, and the alarm could not be raised: %s", name, type(exc).__name__)

    def _recover(self, name: str, verifier: Verifier) -> bool:
        """Keep the cosignature the witness says it gave (its answer was lost), if it is on a
        checkpoint this log holds; a checkpoint this log does not hold is a refusal."""
        response = self._get_cosigned(name)
        if response.status_code != 200:
            return False
        note = response.text
        try:
            theirs = open_checkpoint(note, self._log_key)
        except NoteError:
            self._refused(
                name, "witness_foreign_checkpoint", f"witness {name} holds a checkpoint this log did not sign"
            )
            return False
        ours = self._audit.checkpoint(theirs.size)
        if ours is None or bytes(ours.root) != theirs.root:
            self._refused(
                name,
                "witness_conflicting_checkpoint",
                f"witness {name} cosigned a checkpoint of size {theirs.size} that this log no longer holds: "
                "the log was rolled back or rewritten",
            )
            return False
        return self._keep(name, verifier, theirs.size, ours.note, _signature_lines(note))

    def _get_cosigned(self, name: str) -> httpx.Response:
        return self._links.client(name).get(
            f"{self._links.url(name)}/witness/checkpoint",
            extensions=self._links.extensions(name),
            timeout=READ_SECONDS,
        )

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
            self._known[name] = max(self._known[name], size)
            self._on_cosigned(size)
            return True
        log.warning("witness %s returned no cosignature under its configured key", name)
        return False


def _size(text: str) -> int | None:
    line = text.strip()
    return int(line) if is_decimal(line) else None


def _signature_lines(note: str) -> str:
    try:
        _, lines = split_note(note)
    except NoteError:
        return ""
    return "".join(str(line) for line in lines)
