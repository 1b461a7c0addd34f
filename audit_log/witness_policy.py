"""What a verifier holds the log to beyond its own contents: the witnesses and what they saw.

A log's own checkpoints prove only that its key signed them; an administrator who rolls the
database back (and deletes the later checkpoints), or deletes every checkpoint and rewrites
the entries, or strips the cosignatures, leaves a log that is consistent with itself. What
exposes that is a view held outside the database:

- **held checkpoints**: checkpoints signed by the log's key that someone outside the
  database kept — each witness's newest cosigned checkpoint (read from the witness, or from
  a file of them), or the gateway's published checkpoints as an auditor copied them. The log
  must be at least as long as every one, hash to the same root at that size, still hold that
  checkpoint, and still hold every cosignature a held copy carries.
- **a quorum**: how many of the named witnesses must have cosigned a checkpoint, and how
  far the log may run ahead of the newest checkpoint that many cosigned
  (`max_uncosigned_checkpoints` signed checkpoints; entries after the newest signed
  checkpoint count by time, `max_unsigned_seconds` before the log's newest entry).

The checks here are pure: the verifier (`audit_log.verify`) gathers what they need.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from audit_log.note import Checkpoint, NoteError, Verifier, cosignature_time, open_checkpoint, parse_witnesses

DEFAULT_MAX_UNCOSIGNED_CHECKPOINTS = 2  # the newest, in flight to the witnesses, and one more
DEFAULT_MAX_UNSIGNED_SECONDS = 70.0  # the gateway signs every 10 s by default; a minute of slack


@dataclass(frozen=True)
class HeldCheckpoint:
    """A checkpoint note kept outside the log, and where it came from (for messages)."""

    note: str
    source: str


@dataclass(frozen=True)
class WitnessPolicy:
    witnesses: dict[str, Verifier] = field(default_factory=dict)  # name → cosignature/v1 key
    quorum: int = 0
    max_uncosigned_checkpoints: int = DEFAULT_MAX_UNCOSIGNED_CHECKPOINTS
    max_unsigned_seconds: float | None = DEFAULT_MAX_UNSIGNED_SECONDS
    held: tuple[HeldCheckpoint, ...] = ()

    def __post_init__(self) -> None:
        if self.quorum < 0 or self.quorum > len(self.witnesses):
            raise NoteError(
                f"a quorum of {self.quorum} needs at least that many witnesses ({len(self.witnesses)} named)"
            )
        if self.max_uncosigned_checkpoints < 0:
            raise NoteError("max_uncosigned_checkpoints must not be negative")

    @classmethod
    def load(cls, path: Path) -> WitnessPolicy:
        """Read a policy file (YAML): `witnesses` (name → vkey), `quorum`,
        `max_uncosigned_checkpoints`, `max_unsigned_seconds`, and `checkpoints` (files of
        held checkpoints, relative to the policy file). Raises NoteError naming the field."""
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise NoteError(f"{path}: not a readable policy file ({type(exc).__name__})") from None
        if not isinstance(raw, dict):
            raise NoteError(f"{path}: a witness policy is a mapping")
        unknown = set(raw) - {
            "witnesses",
            "quorum",
            "max_uncosigned_checkpoints",
            "max_unsigned_seconds",
            "checkpoints",
        }
        if unknown:
            raise NoteError(f"{path}: unknown field(s) {', '.join(sorted(unknown))}")
        witnesses = raw.get("witnesses") or {}
        if not isinstance(witnesses, dict) or not all(isinstance(v, str) for v in witnesses.values()):
            raise NoteError(f"{path}: witnesses maps each witness's name to its verifier key")
        held: list[HeldCheckpoint] = []
        for name in raw.get("checkpoints") or []:
            held.extend(read_held(path.parent / str(name)))
        return cls(
            witnesses=parse_witnesses({str(k): v for k, v in witnesses.items()}),
            quorum=_integer(raw, "quorum", 1 if witnesses else 0, path),
            max_uncosigned_checkpoints=_integer(
                raw, "max_uncosigned_checkpoints", DEFAULT_MAX_UNCOSIGNED_CHECKPOINTS, path
            ),
            max_unsigned_seconds=_seconds(raw, path),
            held=tuple(held),
        )


def _integer(raw: dict[str, object], key: str, default: int, path: Path) -> int:
    value = raw.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise NoteError(f"{path}: {key} must be a whole number ≥ 0")
    return value


def _seconds(raw: dict[str, object], path: Path) -> float | None:
    value = raw.get("max_unsigned_seconds", DEFAULT_MAX_UNSIGNED_SECONDS)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise NoteError(f"{path}: max_unsigned_seconds must be a number of seconds ≥ 0")
    return float(value)


def read_held(path: Path) -> list[HeldCheckpoint]:
    """Checkpoints kept in a file: JSON lines with a "note" each (an export's
    checkpoints.jsonl, the gateway's published checkpoints, `xiezhi audit witness-checkpoints`),
    or one plain signed note. Raises NoteError naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise NoteError(f"{path}: cannot read held checkpoints ({type(exc).__name__})") from None
    if not text.lstrip().startswith("{"):
        return [HeldCheckpoint(text, str(path))]
    held = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            note = record["note"]
        except (ValueError, KeyError, TypeError):
            raise NoteError(f"{path} line {number}: not a checkpoint record") from None
        if not isinstance(note, str):
            raise NoteError(f"{path} line {number}: its note is not text")
        source = str(record.get("source") or f"{path} line {number}")
        held.append(HeldCheckpoint(note, source))
    return held


# ---- the checks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    position: int | None
    code: str
    message: str


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint whose log signature verified, with the witnesses whose cosignature did."""

    checkpoint: Checkpoint
    cosigners: frozenset[str]
    source: str


def open_signed(note: str, log_key: Verifier, witnesses: dict[str, Verifier], source: str) -> SignedCheckpoint:
    """Check a held note's log signature and gather its valid cosigners. Raises NoteError."""
    checkpoint = open_checkpoint(note, log_key)
    cosigners = frozenset(name for name, key in witnesses.items() if _cosigned(note, key))
    return SignedCheckpoint(checkpoint, cosigners, source)


def _cosigned(note: str, key: Verifier) -> bool:
    try:
        return cosignature_time(note, key) is not None
    except NoteError:
        return False


def check_held(held: Sequence[SignedCheckpoint], in_log: dict[int, frozenset[str]], entries: int) -> list[Finding]:
    """A held checkpoint the log no longer holds, or holds without a cosignature the held copy carries.

    `in_log` maps each checkpoint size the log holds to the witnesses whose cosignature it
    keeps. (A held checkpoint beyond the log's end, or with another root, is found where the
    tree is recomputed.) One finding per size, and per size and witness, naming who holds it."""
    sources: dict[int, list[str]] = {}
    cosigned: dict[tuple[int, str], list[str]] = {}
    for item in held:
        size = item.checkpoint.size
        if size <= entries:
            sources.setdefault(size, []).append(item.source)
            for witness in item.cosigners:
                cosigned.setdefault((size, witness), []).append(item.source)
    findings = [
        Finding(None, "checkpoint_missing", f"{_who(names)} a checkpoint of size {size} the log no longer holds")
        for size, names in sorted(sources.items())
        if size not in in_log
    ]
    findings += [
        Finding(
            None,
            "cosignature_missing",
            f"{_who(names)} witness {witness}'s cosignature on checkpoint {size}; the log has lost it",
        )
        for (size, witness), names in sorted(cosigned.items())
        if size in in_log and witness not in in_log[size]
    ]
    return findings


def _who(sources: list[str]) -> str:
    distinct = list(dict.fromkeys(sources))
    if len(distinct) == 1:
        return f"{distinct[0]} holds"
    return f"{distinct[0]} and {len(distinct) - 1} other held copies hold"


def witnessed_size(cosigned: dict[str, int], quorum: int) -> int:
    """The largest size that `quorum` witnesses each cosigned (a witness that cosigned a
    size vouches for every smaller one: it checked consistency before cosigning)."""
    if quorum <= 0:
        return 0
    sizes = sorted(cosigned.values(), reverse=True)
    return sizes[quorum - 1] if len(sizes) >= quorum else 0


def check_quorum(policy: WitnessPolicy, signed_sizes: Iterable[int], cosigned: dict[str, int]) -> list[Finding]:
    """Signed checkpoints beyond the newest one a quorum cosigned, over the allowance."""
    if policy.quorum == 0:
        return []
    witnessed = witnessed_size(cosigned, policy.quorum)
    beyond = sorted(size for size in signed_sizes if size > witnessed)
    if len(beyond) <= policy.max_uncosigned_checkpoints:
        return []
    return [
        Finding(
            witnessed,
            "unwitnessed_checkpoints",
            f"{len(beyond)} signed checkpoints (sizes {beyond[0]}–{beyond[-1]}) follow the newest one cosigned by "
            f"{policy.quorum} of the witnesses (size {witnessed}); the policy allows "
            f"{policy.max_uncosigned_checkpoints}: cosignatures were removed, or the witnesses refuse this log",
        )
    ]


def check_unsigned_tail(
    policy: WitnessPolicy, first_unsigned: int, first_time: datetime | None, newest_time: datetime | None
) -> list[Finding]:
    """Entries after the newest signed checkpoint that are older than the allowance."""
    if policy.max_unsigned_seconds is None or first_time is None or newest_time is None:
        return []
    age = (newest_time - first_time).total_seconds()
    if age <= policy.max_unsigned_seconds:
        return []
    return [
        Finding(
            first_unsigned,
            "unsigned_tail",
            f"entry {first_unsigned} and those after it are covered by no signed checkpoint, though recorded "
            f"{age:.0f} s before the newest entry (the policy allows {policy.max_unsigned_seconds:.0f} s): "
            "checkpoints were removed",
        )
    ]


__all__ = [
    "Finding",
    "HeldCheckpoint",
    "SignedCheckpoint",
    "WitnessPolicy",
    "check_held",
    "check_quorum",
    "check_unsigned_tail",
    "open_signed",
    "read_held",
    "witnessed_size",
]
