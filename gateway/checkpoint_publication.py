"""Publishing the log's checkpoints outside the database, as a transparency log does.

An administrator who rolls the database back can delete the later checkpoints from it, but
not from the copies others hold. With `audit.publish_dir` set, every checkpoint the gateway
signs is also written to that folder — `checkpoint` holds the newest (the signed note with
the cosignatures received so far, replaced atomically) and `checkpoints.jsonl` gains a line
per checkpoint signed and per cosignature received — and `GET /checkpoint` serves the newest
to any caller the transport admits. An auditor copies either and later runs
`xiezhi audit verify --checkpoints <copy>`: the log must still extend every checkpoint in it.

A checkpoint carries a size and a root hash: nothing about any entry.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from audit_log import AuditLog
from audit_log.note import NoteError, Verifier, open_checkpoint

log = logging.getLogger("xiezhi.gateway.checkpoints")


class CheckpointPublication:
    def __init__(self, audit: AuditLog, folder: Path | None) -> None:
        self._audit = audit
        self._folder = folder
        self._lock = threading.Lock()
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    def behind(self, log_key: Verifier) -> str | None:
        """Why the database no longer holds the newest checkpoint this folder published (a
        restore from an old backup leaves it behind), or None when it does."""
        if self._folder is None or not (self._folder / "checkpoint").is_file():
            return None
        try:
            published = open_checkpoint((self._folder / "checkpoint").read_text(encoding="utf-8"), log_key)
        except (OSError, UnicodeDecodeError, NoteError):
            return "the published newest checkpoint cannot be read or is not signed by the log's key"
        stored = self._audit.checkpoint(published.size)
        if stored is None:
            newest = self._audit.latest_size() or 0
            return (
                f"a checkpoint of size {published.size} was published, but the database's newest is of {newest}: "
                "the log was rolled back"
            )
        if bytes(stored.root) != published.root:
            return f"the published checkpoint of size {published.size} has another root than the database's"
        return None

    def newest(self) -> str | None:
        """The newest checkpoint note with every cosignature kept for it; None before the first."""
        checkpoint = self._audit.checkpoint()
        if checkpoint is None:
            return None
        return self.note(checkpoint.size)

    def note(self, size: int) -> str | None:
        checkpoint = self._audit.checkpoint(size)
        if checkpoint is None:
            return None
        return checkpoint.note + "".join(c.line for c in self._audit.cosignatures(size))

    def published(self, size: int) -> None:
        """Write the checkpoint of `size` (just signed, or just cosigned) to the folder."""
        if self._folder is None:
            return
        note = self.note(size)
        if note is None:
            return
        try:
            with self._lock:
                with (self._folder / "checkpoints.jsonl").open("a", encoding="utf-8") as out:
                    out.write(json.dumps({"size": size, "note": note}) + "\n")
                    out.flush()
                    os.fsync(out.fileno())
                newest = self._audit.latest_size()
                if newest is not None and size >= newest:
                    _replace(self._folder / "checkpoint", note)
        except OSError as exc:
            # The database keeps the checkpoint; an unwritable folder is the operator's to fix.
            log.error("checkpoint %d not published to %s: %s", size, self._folder, type(exc).__name__)


def _replace(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


__all__ = ["CheckpointPublication"]
