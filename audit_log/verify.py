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
import bisect
import functools
import hashlib
import json
import multiprocessing
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

import rfc8785

from audit_log.entries import GENESIS
from audit_log.merkle import CompactRange, fold, leaf_hash, levels_of, prefix_nodes
from audit_log.note import Checkpoint, NoteError, Verifier, cosignature_time, is_decimal, open_checkpoint
from audit_log.witness_policy import (
    SignedCheckpoint,
    WitnessPolicy,
    check_held,
    check_quorum,
    check_unsigned_tail,
    open_signed,
)


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
    # Each checkpoint size the log holds → the policy's witnesses whose cosignature it keeps,
    # and each witness → the largest size it cosigned in the log.
    in_log: dict[int, frozenset[str]] = field(default_factory=dict, repr=False)
    witnessed: dict[str, int] = field(default_factory=dict, repr=False)

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
        self._offsets: list[int] = []
        for name in ("entries.jsonl", "checkpoints.jsonl"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder} is not an audit export: {name} is missing")

    def count(self) -> int:
        """Count the lines, noting where each chunk of 2^CHUNK_LEVEL lines starts (for `entries`)."""
        lines, position, offsets = 0, 0, [0]
        with (self.folder / "entries.jsonl").open("rb") as handle:
            while block := handle.read(1 << 20):
                newlines = block.count(b"\n")
                next_start = len(offsets) << CHUNK_LEVEL
                at = -1
                while lines + newlines >= next_start:  # a chunk starts after a newline in this block
                    for _ in range(next_start - lines):
                        at = block.index(b"\n", at + 1)
                    offsets.append(position + at + 1)
                    lines, newlines = next_start, newlines - (next_start - lines)
                    next_start = len(offsets) << CHUNK_LEVEL
                lines += newlines
                position += len(block)
        self._offsets = offsets
        return lines

    def reopen(self) -> ExportSource:
        return self

    def block(self, c: int) -> list[bytes] | None:
        """The lines of chunk `c` (after `count`), or None if it is not a whole chunk."""
        if c + 1 >= len(self._offsets):
            return None
        with (self.folder / "entries.jsonl").open("rb") as handle:
            handle.seek(self._offsets[c])
            data = handle.read(self._offsets[c + 1] - self._offsets[c])
        if data.startswith(REDACTED) or b"\n" + REDACTED in data:
            return None  # redacted lines take the general path
        lines = data.split(b"\n")[:-1]
        return lines if len(lines) == 1 << CHUNK_LEVEL else None

    def entries(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes | None, bytes | None]]:
        with (self.folder / "entries.jsonl").open("rb") as lines:
            first = 0
            if start and self._offsets and start >> CHUNK_LEVEL:
                chunk = min(start >> CHUNK_LEVEL, len(self._offsets) - 1)
                lines.seek(self._offsets[chunk])
                first = chunk << CHUNK_LEVEL
            for seq, line in enumerate(lines, first):
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


CHUNK_LEVEL = 14  # entries are hashed in aligned chunks of 2^14, a level at a time


def verify(
    source: Source,
    log_key: Verifier,
    witnesses: tuple[Verifier, ...] = (),
    workers: int = 1,
    policy: WitnessPolicy | None = None,
) -> Report:
    """Check the whole log; `workers` > 1 hashes whole chunks in that many processes first.

    With a `policy`, its witnesses replace `witnesses`, and the log is also held to the
    checkpoints kept outside it and to the witnesses' quorum (`audit_log.witness_policy`).

    The parallel pass only answers "all good"; anything else is re-checked sequentially,
    which is what names the position.
    """
    policy = policy if policy is not None else WitnessPolicy(witnesses={w.name: w for w in witnesses})
    held, held_problems = _open_held(policy, log_key)
    report = None
    if workers > 1 and not held_problems:
        report = _parallel(source, log_key, policy, held, workers)
    if report is None:
        report = _sequential(source, log_key, policy, held)
    report.problems.extend(held_problems)
    _hold_to_policy(source, report, policy, held)
    return report


def _sequential(source: Source, log_key: Verifier, policy: WitnessPolicy, held: list[SignedCheckpoint]) -> Report:
    report = Report()
    roots = _checkpoints(source, log_key, policy.witnesses, report)
    outside = _add_held(roots, held, report)
    targets = sorted(roots)
    tree, found = CompactRange(), None
    boundary, boundary_prev = 0, GENESIS  # the largest checkpoint proven so far, and its last leaf
    chunk: list[tuple[int, bytes | None, bytes | None]] = []
    for row in source.entries():
        chunk.append(row)
        if len(chunk) == 1 << CHUNK_LEVEL:
            found, boundary, boundary_prev = _chunk(source, chunk, tree, roots, targets, boundary, boundary_prev)
            chunk = []
            if found is not None:
                break
    if found is None and chunk:
        found, boundary, boundary_prev = _chunk(source, chunk, tree, roots, targets, boundary, boundary_prev)
    report.entries = tree.size
    if found is None:
        # After the last checkpoint nothing is signed yet: check each entry's place in the chain.
        found = _walk(source, boundary, None, boundary_prev)
    if found is not None:
        report.problems.append(found)
    elif targets and targets[-1] > tree.size:
        report.problems.append(_truncated(tree.size, targets[-1], outside))
    return report


def _truncated(size: int, signed: int, outside: dict[int, str]) -> Problem:
    if signed in outside:
        return Problem(
            size,
            "log_rolled_back",
            f"the log ends after {size} entries, but {outside[signed]} holds a checkpoint of size {signed}: "
            "the log was rolled back or truncated",
        )
    return Problem(
        size, "log_truncated", f"the log ends after {size} entries, but a checkpoint was signed for {signed}"
    )


def _open_held(policy: WitnessPolicy, log_key: Verifier) -> tuple[list[SignedCheckpoint], list[Problem]]:
    """The policy's held checkpoints whose log signature verifies; a problem for each that does not."""
    held, problems = [], []
    for item in policy.held:
        try:
            held.append(open_signed(item.note, log_key, policy.witnesses, item.source))
        except NoteError as exc:
            problems.append(Problem(None, "held_checkpoint_invalid", f"{item.source}: {exc}"))
    return held, problems


def _add_held(roots: dict[int, bytes], held: list[SignedCheckpoint], report: Report) -> dict[int, str]:
    """Add the held checkpoints' roots to the log's own; a held root that differs from the
    log's own checkpoint of that size is a fork. Returns size → source for sizes only held."""
    outside: dict[int, str] = {}
    for item in held:
        size, root = item.checkpoint.size, item.checkpoint.root
        known = roots.get(size)
        if known is not None and known != root:
            report.problems.append(
                Problem(None, "checkpoints_fork", f"{item.source} holds a checkpoint of size {size} with another root")
            )
            continue
        if known is None:
            roots[size] = root
            outside[size] = item.source
    return outside


def _hold_to_policy(source: Source, report: Report, policy: WitnessPolicy, held: list[SignedCheckpoint]) -> None:
    """The checks that need the witnesses or the held checkpoints, after the tree is recomputed."""
    in_log, cosigned = report.in_log, dict(report.witnessed)
    for item in held:
        for name in item.cosigners:
            cosigned[name] = max(cosigned.get(name, 0), item.checkpoint.size)
    findings = check_held(held, in_log, report.entries)
    findings += check_quorum(policy, in_log, cosigned)
    signed = max((size for size in in_log if size <= report.entries), default=0)
    if report.ok and signed < report.entries:  # (after a problem, the count stops where it was found)
        first, newest = _entry_time(source, signed), _entry_time(source, report.entries - 1)
        findings += check_unsigned_tail(policy, signed, first, newest)
    report.problems.extend(Problem(f.position, f.code, f.message) for f in findings)


def _entry_time(source: Source, seq: int) -> datetime | None:
    for _, entry, _ in source.entries(seq, seq + 1):
        try:
            at = json.loads(entry or b"null")["at"]
            return datetime.fromisoformat(at)
        except (ValueError, KeyError, TypeError):
            return None
    return None


def _chunk(
    source: Source,
    chunk: list[tuple[int, bytes | None, bytes | None]],
    tree: CompactRange,
    roots: dict[int, bytes],
    targets: list[int],
    boundary: int,
    boundary_prev: bytes,
) -> tuple[Problem | None, int, bytes]:
    """Add one aligned chunk to `tree`, checking positions, stored hashes and checkpoint roots."""
    start = tree.size
    seqs = [row[0] for row in chunk]
    if seqs[0] != start or seqs[-1] != start + len(chunk) - 1:
        for offset, seq in enumerate(seqs):
            if seq != start + offset:
                return _gap(start + offset, seq), boundary, boundary_prev
    leaves = _leaves(chunk)
    if isinstance(leaves, Problem):
        return leaves, boundary, boundary_prev
    end = start + len(leaves)
    inside = targets[bisect.bisect_right(targets, start) : bisect.bisect_right(targets, end)]
    if len(leaves) == 1 << CHUNK_LEVEL:
        levels = levels_of(leaves)
        for target in inside:
            if fold([*tree.hashes, *prefix_nodes(levels, target - start)]) != roots[target]:
                return _locate(source, boundary, target, boundary_prev), boundary, boundary_prev
            boundary, boundary_prev = target, leaves[target - start - 1]
        tree.append_subtree(CHUNK_LEVEL, levels[-1][0])
        return None, boundary, boundary_prev
    for offset, leaf in enumerate(leaves):  # the last, partial chunk
        tree.append(leaf)
        if tree.size in roots:
            if tree.root() != roots[tree.size]:
                return _locate(source, boundary, tree.size, boundary_prev), boundary, boundary_prev
            boundary, boundary_prev = tree.size, leaves[offset]
    return None, boundary, boundary_prev


_LEAF_HASHER = hashlib.sha256(b"\x00")


def _leaves(rows: list[tuple[int, bytes | None, bytes | None]]) -> list[bytes] | Problem:
    """The leaf hashes of `rows`, or the first row whose bytes and stored hash disagree."""
    _leaf = _LEAF_HASHER.copy
    leaves: list[bytes] = []
    for seq, entry, stored in rows:
        if entry is None:
            if stored is None:
                return Problem(seq, "entry_malformed", "a redacted entry without its leaf hash")
            leaves.append(stored)
            continue
        h = _leaf()
        h.update(entry)
        leaf = h.digest()
        if stored is not None and stored != leaf:
            return Problem(seq, "entry_altered", "its bytes no longer hash to the leaf hash stored with it")
        leaves.append(leaf)
    return leaves


class Reopenable(Protocol):
    def count(self) -> int:
        """How many entries the source holds."""
        ...

    def reopen(self) -> Source:
        """The same source, opened afresh (in another process)."""
        ...


def _parallel(
    source: Source, log_key: Verifier, policy: WitnessPolicy, held: list[SignedCheckpoint], workers: int
) -> Report | None:
    if not hasattr(source, "reopen") or not hasattr(source, "count"):
        return None
    notes = source.checkpoint_notes()
    signed = max((int(claim) for claim in map(_claimed_size, notes) if is_decimal(claim)), default=0)
    if signed >> CHUNK_LEVEL < 2:
        return None  # too little signed to be worth the processes
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        # The workers check signatures while this process counts the entries and finds the chunks.
        opening = pool.map_async(
            functools.partial(_open_quietly, log_key, policy.witnesses),
            notes,
            chunksize=max(1, len(notes) // (workers * 4)),
        )
        size = source.count()
        full = size >> CHUNK_LEVEL
        opened = opening.get()
        if full < 2 or any(result is None for result in opened):
            return None  # a checkpoint or cosignature is bad: the sequential pass reports it
        report = Report()
        roots: dict[int, bytes] = {}
        for checkpoint_size, root, cosigned in opened:  # type: ignore[misc]
            if roots.setdefault(checkpoint_size, root) != root:
                return None
            report.in_log[checkpoint_size] = report.in_log.get(checkpoint_size, frozenset()) | frozenset(cosigned)
            for name in cosigned:
                key = policy.witnesses[name].name
                report.cosigned[key] = report.cosigned.get(key, 0) + 1
                report.witnessed[name] = max(report.witnessed.get(name, 0), checkpoint_size)
        report.checkpoints, report.latest_checkpoint = len(roots), max(roots, default=None)
        _add_held(roots, held, report)
        if report.problems:
            return None
        targets = sorted(roots)
        tasks = [
            (source, c, [t - (c << CHUNK_LEVEL) for t in targets if c << CHUNK_LEVEL < t <= (c + 1) << CHUNK_LEVEL])
            for c in range(full)
        ]
        results = pool.starmap(_hash_chunk, tasks, chunksize=max(1, full // (workers * 4)))
    tree, boundary, boundary_prev = CompactRange(), 0, GENESIS
    for (_, c, offsets), result in zip(tasks, results, strict=True):
        if result is None:
            return None  # something is wrong in this chunk: the sequential pass names it
        root, prefixes, last_leaves = result
        for offset, nodes in zip(offsets, prefixes, strict=True):
            if fold([*tree.hashes, *nodes]) != roots[(c << CHUNK_LEVEL) + offset]:
                return None
            boundary, boundary_prev = (c << CHUNK_LEVEL) + offset, last_leaves[offset]
        tree.append_subtree(CHUNK_LEVEL, root)
    rest: list[tuple[int, bytes | None, bytes | None]] = list(source.entries(tree.size))
    found, boundary, boundary_prev = (
        _chunk(source, rest, tree, roots, targets, boundary, boundary_prev) if rest else (None, boundary, boundary_prev)
    )
    if found is None:
        found = _walk(source, boundary, None, boundary_prev)
    if found is not None or (targets and targets[-1] > tree.size):
        return None
    report.entries = tree.size
    return report


def _open_quietly(log_key: Verifier, witnesses: dict[str, Verifier], note: str) -> tuple[int, bytes, list[str]] | None:
    """In a worker: a checkpoint's size, root and valid cosigners; None if anything is wrong."""
    try:
        checkpoint = open_checkpoint(note, log_key)
        cosigned = [name for name, w in witnesses.items() if cosignature_time(note, w) is not None]
    except NoteError:
        return None
    return checkpoint.size, checkpoint.root, cosigned


def _hash_chunk(
    source: Reopenable, c: int, offsets: list[int]
) -> tuple[bytes, list[list[bytes]], dict[int, bytes]] | None:
    """In a worker: chunk `c`'s root, the nodes of each checkpoint prefix in it, and the leaf
    ending each; None if a position or stored hash is wrong."""
    start, count = c << CHUNK_LEVEL, 1 << CHUNK_LEVEL
    leaves = _fast_leaves(source, c)
    if leaves is None:
        rows = list(source.reopen().entries(start, start + count))
        if [row[0] for row in rows] != list(range(start, start + count)):
            return None
        checked = _leaves(rows)
        if isinstance(checked, Problem):
            return None
        leaves = checked
    levels = levels_of(leaves)
    return (
        levels[-1][0],
        [prefix_nodes(levels, count) for count in offsets],
        {count: leaves[count - 1] for count in offsets},
    )


def _fast_leaves(source: Reopenable, c: int) -> list[bytes] | None:
    """Leaf hashes of a whole chunk in one pass at C speed, when the source offers its rows
    in bulk; None to take the general path (a redacted line, or a gap or mismatch to name)."""
    sha = hashlib.sha256
    if isinstance(source, ExportSource):
        lines = source.block(c)
        if lines is None:
            return None
        return [sha(b"\x00" + line).digest() for line in lines]
    block = getattr(source, "block", None)
    if block is None:
        return None
    rows = block(c << CHUNK_LEVEL, (c + 1) << CHUNK_LEVEL)
    start = c << CHUNK_LEVEL
    if len(rows) != 1 << CHUNK_LEVEL or rows[0][0] != start or rows[-1][0] != start + len(rows) - 1:
        return None
    leaves = [sha(b"\x00" + row[1]).digest() for row in rows]
    return leaves if leaves == [row[2] for row in rows] else None


REDACTED = b'{"leaf_hash":"'


def redacted_line(seq: int, leaf: bytes) -> bytes:
    """The export line standing for an entry the exporter may not read."""
    return REDACTED + base64.b64encode(leaf) + b'","seq":' + str(seq).encode() + b"}"


def redacted_leaf(line: bytes) -> bytes | None:
    try:
        leaf = base64.b64decode(json.loads(line)["leaf_hash"], validate=True)
    except (ValueError, KeyError, TypeError):
        return None
    return leaf if len(leaf) == 32 else None


def _checkpoints(source: Source, log_key: Verifier, witnesses: dict[str, Verifier], report: Report) -> dict[int, bytes]:
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
        cosigners = set(report.in_log.get(checkpoint.size, frozenset()))
        for name, witness in witnesses.items():
            try:
                if cosignature_time(note, witness) is not None:
                    report.cosigned[witness.name] = report.cosigned.get(witness.name, 0) + 1
                    cosigners.add(name)
                    report.witnessed[name] = max(report.witnessed.get(name, 0), checkpoint.size)
            except NoteError as exc:
                report.problems.append(Problem(None, "cosignature_invalid", f"checkpoint {checkpoint.size}: {exc}"))
        report.in_log[checkpoint.size] = frozenset(cosigners)
    report.checkpoints = len(roots)
    report.latest_checkpoint = max(roots) if roots else None
    return roots


def _claimed_size(note: str) -> str:
    lines = note.split("\n")
    return lines[1] if len(lines) > 1 and is_decimal(lines[1]) else "?"


def _gap(expected: int, seq: int) -> Problem:
    if seq > expected:
        missing = "entry" if seq == expected + 1 else "entries"
        return Problem(
            expected, "entry_missing", f"{missing} {expected}–{seq - 1} missing: the next stored entry is {seq}"
        )
    return Problem(
        expected, "entry_out_of_order", f"entry {seq} is stored again or out of order at position {expected}"
    )


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
        f"entries {start}–{end - 1} do not make the root signed at size {end}"
        + (f", though entries before {start} do" if start else "")
        + ": an entry in that range was inserted, removed or changed and the rest re-chained to hide it",
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
