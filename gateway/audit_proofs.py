"""What an auditor asks of the log itself: its keys, its checkpoints, proofs, a full
verification, and an export that verifies offline.

All of it is read-only and for security auditors (`audit:entries`). Proofs and checkpoints
say nothing about entry contents; an inclusion proof is given only for an entry the auditor
may read. An export redacts entries of organisations outside the auditor's subtree to their
leaf hashes, so it still verifies. Verifications and exports are themselves logged. A
verification also holds the log to each witness's newest cosigned checkpoint, read from the
witness at that moment, and to the witnesses' quorum (`audit_log.witness_policy`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta

from audit_log import AuditCheckpoint, AuditLog, EventKind
from audit_log.export import DatabaseSource
from audit_log.note import Signer, Verifier
from audit_log.verify import redacted_line, verify
from audit_log.witness_policy import HeldCheckpoint, WitnessPolicy
from gateway.auth import Principal
from gateway.authz import Authorizer
from gateway.recorder import Recorder
from xiezhi.errors import InvalidInput, NotFound
from xiezhi.wire import (
    CheckpointView,
    ConsistencyProofView,
    InclusionProofView,
    LogKeyView,
    VerificationProblemView,
    VerificationView,
    b64encode,
)

ENTRIES = "audit:entries"
PENDING_COSIGNATURES = timedelta(seconds=60)


class AuditProofs:
    def __init__(
        self,
        audit: AuditLog,
        signer: Signer,
        witnesses: dict[str, Verifier],
        authorizer: Authorizer,
        recorder: Recorder,
        clock: Callable[[], datetime],
        policy: WitnessPolicy | None = None,
        held: Callable[[], list[HeldCheckpoint]] = list,
    ) -> None:
        """`policy` is what the live log is held to (default: its witnesses, a quorum of one);
        `held` reads each witness's newest cosigned checkpoint at each verification."""
        self._audit = audit
        self._log_key = signer.verifier()
        self._witnesses = witnesses
        self._authorizer = authorizer
        self._recorder = recorder
        self._clock = clock
        self._policy = policy or WitnessPolicy(witnesses=witnesses, quorum=1 if witnesses else 0)
        self._held = held

    def log_key(self, principal: Principal) -> LogKeyView:
        self._authorize(principal)
        return LogKeyView(
            origin=self._log_key.name,
            log_key=str(self._log_key),
            witnesses={name: str(v) for name, v in self._witnesses.items()},
        )

    def checkpoints(self, principal: Principal, since: int = 0, limit: int = 1000) -> list[CheckpointView]:
        self._authorize(principal)
        cosigners: dict[int, list[tuple[str, str]]] = {}
        for c in self._audit.cosignatures():
            cosigners.setdefault(c.size, []).append((c.witness, c.line))
        return [self._view(c, cosigners.get(c.size, [])) for c in self._audit.checkpoints() if c.size >= since][:limit]

    def checkpoint(self, principal: Principal, size: int | None = None) -> CheckpointView:
        self._authorize(principal)
        checkpoint = self._audit.checkpoint(size)
        if checkpoint is None:
            raise NotFound("no checkpoint of that size has been signed", code="unknown_checkpoint")
        return self._view(checkpoint, [(c.witness, c.line) for c in self._audit.cosignatures(checkpoint.size)])

    def inclusion(self, principal: Principal, seq: int, size: int | None = None) -> InclusionProofView:
        self._authorize(principal)
        record = self._audit.entry(seq)
        orgs = self._authorizer.policy.orgs
        if record is None or (record.org is not None and not orgs.covers(principal.org or "", record.org)):
            raise NotFound("unknown audit entry", code="unknown_entry")
        checkpoint = self._audit.checkpoint(size)
        if checkpoint is None:
            if size is not None:
                raise NotFound("no checkpoint of that size has been signed", code="unknown_checkpoint")
            raise NotFound("no checkpoint has been signed yet", code="not_yet_checkpointed")
        if seq >= checkpoint.size:
            raise NotFound(
                f"entry {seq} is newer than the checkpoint of size {checkpoint.size}", code="not_yet_checkpointed"
            )
        cosignatures = "".join(c.line for c in self._audit.cosignatures(checkpoint.size))
        return InclusionProofView(
            seq=seq,
            tree_size=checkpoint.size,
            leaf_hash=b64encode(bytes(record.leaf_hash)),
            proof=tuple(b64encode(h) for h in self._audit.inclusion_proof(seq, checkpoint.size)),
            checkpoint=checkpoint.note + cosignatures,
        )

    def consistency(self, principal: Principal, first: int, second: int) -> ConsistencyProofView:
        self._authorize(principal)
        for size in (first, second):
            if self._audit.checkpoint(size) is None:
                raise NotFound(f"no checkpoint of size {size} has been signed", code="unknown_checkpoint")
        if first > second:
            raise InvalidInput("first must not be larger than second", code="bad_sizes")
        proof = self._audit.consistency_proof(first, second)
        return ConsistencyProofView(first=first, second=second, proof=tuple(b64encode(h) for h in proof))

    def verification(self, principal: Principal) -> VerificationView:
        """Verify the whole live log now, and log that it was done and what it found."""
        self._authorize(principal)
        # A checkpoint signed in the last minute may still be on its way to the witnesses.
        recent = self._audit.checkpoints_since(self._clock() - PENDING_COSIGNATURES)
        policy = replace(
            self._policy,
            held=(*self._policy.held, *self._held()),
            max_uncosigned_checkpoints=self._policy.max_uncosigned_checkpoints + recent,
        )
        report = verify(DatabaseSource(self._audit), self._log_key, policy=policy)
        self._recorder.record_alone(
            principal,
            EventKind.VERIFICATION,
            "verify",
            "ok" if report.ok else "failed",
            None,
            entries=report.entries,
            checkpoints=report.checkpoints,
            first_bad_position=report.first_bad,
            problem=report.problems[0].code if report.problems else None,
        )
        return VerificationView(
            ok=report.ok,
            checked_at=self._clock(),
            entries=report.entries,
            checkpoints=report.checkpoints,
            latest_checkpoint=report.latest_checkpoint,
            cosigned=report.cosigned,
            first_bad_position=report.first_bad,
            problems=tuple(
                VerificationProblemView(position=p.position, code=p.code, message=p.message) for p in report.problems
            ),
        )

    def export_entries(self, principal: Principal, size: int | None = None) -> tuple[int, Iterator[bytes]]:
        """Entries [0, size) as JSON lines (size: the latest checkpoint by default).

        Entries of organisations outside the auditor's subtree are exported redacted, as their
        leaf hash only, so the export still verifies against every checkpoint.
        """
        self._authorize(principal)
        orgs = self._authorizer.policy.orgs
        latest = self._audit.latest_size()
        end = size if size is not None else (latest or 0)
        if not 0 <= end <= self._audit.size():
            raise InvalidInput(f"the log holds {self._audit.size()} entries", code="bad_size")
        self._recorder.record_alone(principal, EventKind.EXPORT, "export", "ok", None, entries=end, format="jsonl")

        def visible(org: str | None) -> bool:
            return org is None or orgs.covers(principal.org or "", org)

        def lines() -> Iterator[bytes]:
            for seq, entry, leaf, org in self._audit.export_rows(0, end):
                yield (entry if visible(org) else redacted_line(seq, leaf)) + b"\n"

        return end, lines()

    def _authorize(self, principal: Principal) -> None:
        self._recorder.enforce(principal, ENTRIES, "read", None, self._authorizer.decide(principal, ENTRIES, "read"))

    def _view(self, checkpoint: AuditCheckpoint, cosigned: list[tuple[str, str]]) -> CheckpointView:
        return CheckpointView(
            size=checkpoint.size,
            root=b64encode(bytes(checkpoint.root)),
            issued_at=checkpoint.issued_at,
            note=checkpoint.note + "".join(line for _, line in cosigned),
            cosigned_by=tuple(sorted(name for name, _ in cosigned)),
        )
