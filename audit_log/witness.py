"""A witness of a transparency log (c2sp.org/tlog-witness), as connectors run it for the gateway's log.

The gateway submits each checkpoint it signs with a consistency proof from the last one this
witness cosigned. The witness checks the gateway's signature, checks the proof, persists the
new checkpoint, and only then returns its cosignature. It never cosigns two views of the log
that cannot both be true, so a gateway that forks or rewrites its log can no longer collect
this witness's cosignature, and every party that compares cosigned checkpoints sees it.
Conflicting checkpoints are kept as evidence.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit_log.merkle import ProofFailed, verify_consistency
from audit_log.note import Checkpoint, NoteError, Signer, Verifier, is_decimal, open_checkpoint, split_note
from xiezhi.errors import XiezhiError

log = logging.getLogger("xiezhi.witness")
MAX_PROOF_LINES = 63


class WitnessRefusal(XiezhiError):
    """A checkpoint the witness will not cosign, with the answer c2sp.org/tlog-witness names for it.

    `status` is that answer's HTTP status (400, 403, 404, 409 or 422), `body` and
    `content_type` its body; the connector's route sends exactly these, not a problem detail.
    """

    status = 400
    code = "witness_refused"

    def __init__(self, status: int, message: str, body: str | None = None, content_type: str = "text/plain") -> None:
        super().__init__(message)
        self.status = status
        self.body = body if body is not None else message + "\n"
        self.content_type = content_type


@dataclass(frozen=True)
class Cosigned:
    size: int
    root: bytes


class Witness:
    def __init__(self, signer: Signer, log_key: Verifier, state: Path, clock: Callable[[], float] = time.time) -> None:
        self.signer = signer
        self._log_key = log_key
        self._state = state
        self._clock = clock
        self._lock = threading.Lock()

    def latest(self) -> Cosigned | None:
        entry = self._entry()
        return None if entry is None else Cosigned(int(entry["size"]), base64.b64decode(entry["root"]))

    def latest_note(self) -> str | None:
        """The newest checkpoint this witness cosigned, as the log signed it plus this witness's
        cosignature: what an auditor holds the log to (None before the first, or for a state
        kept before notes were)."""
        entry = self._entry()
        if entry is None or "note" not in entry or "cosignature" not in entry:
            return None
        return str(entry["note"]) + str(entry["cosignature"])

    def _entry(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self._state.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        entry = data.get(self._log_key.name)
        return entry if isinstance(entry, dict) else None

    def add_checkpoint(self, body: str) -> str:
        """Handle an add-checkpoint request body; returns the cosignature line(s)."""
        old_size, proof, note = _parse(body)
        try:
            checkpoint = open_checkpoint(note, self._log_key)
        except NoteError as exc:
            origin = note.split("\n", 1)[0]
            if origin != self._log_key.name:
                raise WitnessRefusal(404, f"unknown log origin {origin!r}") from exc
            raise WitnessRefusal(403, f"the checkpoint is not validly signed by the log: {exc}") from exc
        if old_size > checkpoint.size:
            raise WitnessRefusal(400, "the old size is larger than the checkpoint's size")
        with self._lock:  # check and persist atomically
            latest = self.latest()
            known = latest.size if latest is not None else 0
            if old_size != known:
                raise WitnessRefusal(409, "old size mismatch", f"{known}\n", "text/x.tlog.size")
            if latest is not None and latest.size == checkpoint.size:
                if latest.root != checkpoint.root:
                    self._keep_evidence(note, "same size, different root")
                    raise WitnessRefusal(409, "a different checkpoint of this size was cosigned before")
            elif latest is not None:
                try:
                    verify_consistency(latest.size, checkpoint.size, latest.root, checkpoint.root, proof)
                except ProofFailed as exc:
                    self._keep_evidence(note, str(exc))
                    raise WitnessRefusal(422, f"the consistency proof does not verify: {exc}") from exc
            elif proof:
                raise WitnessRefusal(422, "a proof from the empty tree must be empty")
            cosignature = self.signer.cosign(checkpoint.text(), int(self._clock()))
            self._save(checkpoint, note, cosignature)
        log.info("cosigned checkpoint size=%d", checkpoint.size)
        return cosignature

    def _save(self, checkpoint: Checkpoint, note: str, cosignature: str) -> None:
        try:
            data = json.loads(self._state.read_text(encoding="utf-8"))
        except FileNotFoundError:
            data = {}
        data[checkpoint.origin] = {
            "size": checkpoint.size,
            "root": base64.b64encode(checkpoint.root).decode(),
            "note": _log_signed(note, self._log_key),
            "cosignature": cosignature,
        }
        tmp = self._state.with_name(self._state.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, self._state)

    def _keep_evidence(self, note: str, why: str) -> None:
        evidence = self._state.with_name("witness-evidence.jsonl")
        with evidence.open("a", encoding="utf-8") as out:
            out.write(json.dumps({"at": int(self._clock()), "why": why, "note": note}, ensure_ascii=False) + "\n")
        log.warning("refused an inconsistent checkpoint of the gateway's log; evidence kept")


def _log_signed(note: str, log_key: Verifier) -> str:
    """`note` with only the log's own signature line: what the witness keeps and hands out."""
    text, lines = split_note(note)
    kept = "".join(str(line) for line in lines if line.name == log_key.name and line.key_id == log_key.key_id)
    return text + "\n" + kept


def _parse(body: str) -> tuple[int, list[bytes], str]:
    head, sep, note = body.partition("\n\n")
    if not sep:
        raise WitnessRefusal(400, "the body is an old size line, proof lines, a blank line and a checkpoint")
    lines = head.split("\n")
    first = lines[0]
    if not first.startswith("old ") or not is_decimal(first[4:]):
        raise WitnessRefusal(400, "the first line must be 'old <size>'")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise WitnessRefusal(400, f"at most {MAX_PROOF_LINES} consistency proof lines")
    try:
        proof = [base64.b64decode(line, validate=True) for line in lines[1:]]
    except ValueError as exc:
        raise WitnessRefusal(400, "a consistency proof line is not base64") from exc
    return int(first[4:]), proof, note


def add_checkpoint_body(old_size: int, proof: list[bytes], note: str) -> str:
    """The request body of add-checkpoint, as the gateway sends it."""
    lines = [f"old {old_size}", *(base64.b64encode(h).decode() for h in proof)]
    return "\n".join(lines) + "\n\n" + note
