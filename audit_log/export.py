"""Reading a live log as a verifier source, and writing an export anyone can verify offline.

An export is a folder of two files:
- `entries.jsonl`: line n is entry n, exactly the canonical bytes that were hashed
  (leaf hash = SHA-256(0x00 || line));
- `checkpoints.jsonl`: one JSON object per checkpoint, `{"size", "root", "note"}`, where
  `note` is the signed checkpoint followed by every witness cosignature gathered for it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine

from audit_log.store import AuditCheckpoint, AuditLog


class DatabaseSource:
    """A verifier source over a live (or copied) database."""

    def __init__(self, log: AuditLog) -> None:
        self._log = log

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return _reopen_database, (self._log.engine.url.render_as_string(hide_password=False),)

    def count(self) -> int:
        return self._log.count()

    def reopen(self) -> DatabaseSource:
        return self

    def block(self, start: int, end: int) -> list[tuple[int, bytes, bytes]]:
        """Rows [start, end) at once, as the driver returns them."""
        return self._log.raw_block(start, end)

    def entries(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes | None, bytes | None]]:
        yield from self._log.raw_entries(start, end if end is not None else 2**62)

    def checkpoint_notes(self) -> list[str]:
        return [note for _, note in self.checkpoints()]

    def checkpoints(self) -> list[tuple[AuditCheckpoint, str]]:
        """Each checkpoint with its note followed by the cosignature lines gathered for it."""
        lines: dict[int, list[str]] = {}
        for cosignature in self._log.cosignatures():
            lines.setdefault(cosignature.size, []).append(cosignature.line)
        return [(c, c.note + "".join(lines.get(c.size, []))) for c in self._log.checkpoints()]


def write_export(log: AuditLog, folder: Path, upto: int | None = None) -> tuple[int, int]:
    """Write entries [0, upto) and the checkpoints up to `upto` (default: the latest checkpoint).

    Returns (entries written, checkpoints written).
    """
    folder.mkdir(parents=True, exist_ok=True)
    source = DatabaseSource(log)
    latest = log.latest_size()
    size = upto if upto is not None else (latest if latest is not None else log.size())
    written = 0
    with (folder / "entries.jsonl").open("wb") as out:
        for _, entry, _ in log.raw_entries(0, size):
            out.write(entry + b"\n")
            written += 1
    kept = 0
    with (folder / "checkpoints.jsonl").open("w", encoding="utf-8") as out:
        for c, note in source.checkpoints():
            if c.size <= size:
                record = {"size": c.size, "root": base64.b64encode(c.root).decode(), "note": note}
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                kept += 1
    return written, kept


def _reopen_database(url: str) -> DatabaseSource:
    return DatabaseSource(AuditLog.existing(create_engine(url)))
