"""Verifying a whole log, live or exported, and naming the first entry that is wrong.

What is checked:
- every checkpoint carries a valid signature by the log's key and its origin is the log's;
  every cosignature from a known witness verifies;
- entries are numbered 0, 1, 2, … with no gap, and each entry's bytes hash to the leaf hash
  stored beside it (a live database keeps both);
- the Merkle root recomputed from the entries equals the root of every checkpoint, which
  also proves each checkpoint consistent with the one before it (the same leaves make both);
- the log is at least as long as its latest checkpoint (a truncated tail is caught);
- entries after the latest checkpoint, and any range whose root disagrees with its
  checkpoint, are read one by one: each must be canonical JSON naming its own position
  (`seq`) and its predecessor's leaf hash (`prev`). That is what names the exact position of
  a changed, removed or moved entry.

The fast path only hashes: entries are parsed only where something is already wrong, or
after the last checkpoint.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import rfc8785

from audit_log.entries import GENESIS
from audit_log.merkle import CompactRange, leaf_hash
from audit_log.note import Checkpoint, NoteError, Verifier, cosignature_time, open_checkpoint


@dataclass(frozen=True)
class Problem:
    position: int | None  # the leaf index the problem is at; None for a checkpoint-only problem
    code: str
    message: str

    def __str__(self) -> str:
        where = f"entry {self.position}" if self.position is not None else "checkpoints"
        return f"{where}: {self.message} [{self.code}]"


@dataclass
class Report:
    entries: int = 0
    checkpoints: int = 0
    latest_checkpoint: int | None = None
    cosigned: dict[str, int] = field(default_factory=dict)  # witness → checkpoints it cosigned
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad(self) -> int | None:
        positions = [p.position for p in self.problems if p.position is not None]
        return min(positions) if positions else None

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "checkpoints": self.checkpoints,
            "latest_checkpoint": self.latest_checkpoint,
            "cosigned": self.cosigned,
            "first_bad_position": self.first_bad,
            "problems": [{"position": p.position, "code": p.code, "message": p.message} for p in self.problems],
        }


class Source(Protocol):
    def entries(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes | None, bytes | None]]:
        """(seq, entry bytes or None if redacted, stored leaf hash or None) in log order."""
        ...

    def checkpoint_notes(self) -> list[str]:
        """Every checkpoint note, with the cosignature lines gathered for it."""
        ...


class ExportSource:
    """An export folder: `entries.jsonl` (one canonical entry per line, line n is leaf n) and
    `checkpoints.jsonl` (one JSON object per checkpoint, its note under "note").

    An entry the exporting auditor may not read is exported redacted, as
    `{"leaf_hash":"<base64>","seq":n}`: it still counts in the tree, its content is not checked.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        for name in ("entries.jsonl", "checkpoints.jsonl"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder} is not an audit export: {name} is missing")

    def entries(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes | None, bytes | None]]:
        with (self.folder / "entries.jsonl").open("rb") as lines:
            for seq, line in enumerate(lines):
                if seq < start:
                    continue
                if end is not None and seq >= end:
                    return
                entry = line.rstrip(b"\n")
                if entry.startswith(REDACTED):
                    yield seq, None, redacted_leaf(entry)
                else:
                    yield seq, entry, None

    def checkpoint_notes(self) -> list[str]:
        notes = []
        with (self.folder / "checkpoints.jsonl").open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                try:
                    notes.append(str(json.loads(line)["note"]))
                except (ValueError, KeyError, TypeError) as exc:
                    raise NoteError(f"checkpoints.jsonl line {number} is not a checkpoint record") from exc
        return notes


def verify(source: Source, log_key: Verifier, witnesses: tuple[Verifier, ...] = ()) -> Report:
    report = Report()
    roots = _checkpoints(source, log_key, witnesses, report)
    targets = sorted(roots)
    tree, expected, boundary, boundary_prev, prev = CompactRange(), 0, 0, GENESIS, GENESIS
    next_target, found = 0, None
    for seq, entry, stored in source.entries():
        if seq != expected:
            found = _gap(expected, seq)
            break
        leaf = leaf_hash(entry) if entry is not None else stored
        if leaf is None:
            found = Problem(seq, "entry_malformed", "a redacted entry without its leaf hash")
            break
        if stored is not None and stored != leaf:
            found = Problem(seq, "entry_altered", "its bytes no longer hash to the leaf hash stored with it")
            break
        tree.append(leaf)
        prev, expected = leaf, expected + 1
        while next_target < len(targets) and targets[next_target] < expected:
            next_target += 1
        if next_target < len(targets) and targets[next_target] == expected:
            if tree.root() != roots[expected]:
                found = _locate(source, boundary, expected, boundary_prev)
                break
            boundary, boundary_prev = expected, prev
    report.entries = expected
    if found is None:
        # After the last checkpoint nothing is signed yet: check each entry's place in the chain.
        found = _walk(source, boundary, None, boundary_prev)
    if found is not None:
        report.problems.append(found)
    elif targets and targets[-1] > expected:
        report.problems.append(
            Problem(
                expected,
                "log_truncated",
                f"the log ends after {expected} entries, but a checkpoint was signed for {targets[-1]}",
            )
        )
    return report


REDACTED = b'{"leaf_hash":"'


def redacted_line(seq: int, leaf: bytes) -> bytes:
    """The export line standing for an entry the exporter may not read."""
    return b'{"leaf_hash":"' + base64.b64encode(leaf) + b'","seq":' + str(seq).encode() + b"}"


def redacted_leaf(line: bytes) -> bytes | None:
    try:
        leaf = base64.b64decode(json.loads(line)["leaf_hash"], validate=True)
    except (ValueError, KeyError, TypeError):
        return None
    return leaf if len(leaf) == 32 else None


def _checkpoints(source: Source, log_key: Verifier, witnesses: tuple[Verifier, ...], report: Report) -> dict[int, bytes]:
    roots: dict[int, bytes] = {}
    covered = 0
    for note in source.checkpoint_notes():
        try:
            checkpoint = open_checkpoint(note, log_key)
        except NoteError as exc:
            size = _claimed_size(note)
            report.problems.append(
                Problem(
                    covered,
                    "checkpoint_unsigned",
                    f"the checkpoint claiming size {size} does not carry the log's signature ({exc})",
                )
            )
            continue
        if checkpoint.size in roots and roots[checkpoint.size] != checkpoint.root:
            report.problems.append(
                Problem(None, "checkpoints_fork", f"two signed checkpoints of size {checkpoint.size} differ")
            )
        roots[checkpoint.size] = checkpoint.root
        covered = max(covered, checkpoint.size)
        for witness in witnesses:
            try:
                if cosignature_time(note, witness) is not None:
                    report.cosigned[witness.name] = report.cosigned.get(witness.name, 0) + 1
            except NoteError as exc:
                report.problems.append(
                    Problem(None, "cosignature_invalid", f"checkpoint {checkpoint.size}: {exc}")
                )
    report.checkpoints = len(roots)
    report.latest_checkpoint = max(roots) if roots else None
    return roots


def _claimed_size(note: str) -> str:
    lines = note.split("\n")
    return lines[1] if len(lines) > 1 and lines[1].isdigit() else "?"


def _gap(expected: int, seq: int) -> Problem:
    if seq > expected:
        missing = "entry" if seq == expected + 1 else "entries"
        return Problem(expected, "entry_missing", f"{missing} {expected}–{seq - 1} missing: the next stored entry is {seq}")
    return Problem(expected, "entry_out_of_order", f"entry {seq} is stored again or out of order at position {expected}")


def _locate(source: Source, start: int, end: int, prev: bytes) -> Problem:
    """Entries [start, end) do not make the signed root: find the first one that is wrong.

    The walk goes on past `end`: when the last entry of the range was changed, it is the
    entry after it that records the difference.
    """
    found = _walk(source, start, None, prev)
    if found is not None:
        return found
    return Problem(
        start,
        "checkpoint_mismatch",
        f"entries {start}–{end - 1} do not make the root signed at size {end}; "
        "they were rewritten consistently, so the first changed one cannot be told",
    )


def _walk(source: Source, start: int, end: int | None, prev: bytes) -> Problem | None:
    """Check each entry's own position and predecessor; the first that disagrees, if any."""
    for seq, entry, stored in source.entries(start, end):
        if entry is None:  # redacted: its place in the tree is all that can be checked
            prev = stored or prev
            continue
        try:
            fields = json.loads(entry)
            canonical = rfc8785.dumps(fields) == entry
        except (ValueError, TypeError, rfc8785.CanonicalizationError):
            fields, canonical = None, False
        if not isinstance(fields, dict) or not canonical:
            return Problem(seq, "entry_malformed", "it is not canonical JSON")
        claimed = fields.get("seq")
        if claimed != seq:
            return Problem(seq, "entry_moved", f"the entry stored here says it is entry {claimed}")
        if fields.get("prev") != base64.b64encode(prev).decode():
            if seq == 0:
                return Problem(0, "entry_altered", "the first entry does not start the chain")
            return Problem(seq - 1, "entry_altered", f"entry {seq} records a different entry {seq - 1}")
        prev = leaf_hash(entry)
    return None


__all__ = ["Checkpoint", "ExportSource", "Problem", "Report", "Source", "verify"]
