"""Holding a log to its witnesses: the policy file, the quorum and unsigned-tail rules, held
checkpoints, and a rollback of a live database (SQLite and PostgreSQL) caught by what a real
witness (`audit_log.witness.Witness`) remembers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from audit_log import AuditLog, CheckpointSigner
from audit_log.export import DatabaseSource
from audit_log.note import COSIGNATURE_V1, Checkpoint, NoteError, Verifier, generate_signer
from audit_log.verify import verify
from audit_log.witness import Witness, WitnessRefusal, add_checkpoint_body
from audit_log.witness_policy import (
    HeldCheckpoint,
    WitnessPolicy,
    check_quorum,
    check_unsigned_tail,
    read_held,
    witnessed_size,
)
from tests.test_audit import AT, LOG_KEY, event, new_log

WITNESS_KEYS = {name: generate_signer(f"xiezhi.test/witness/{name}") for name in ("court", "tax", "housing_fund")}


def vkeys() -> dict[str, Verifier]:
    return {name: signer.verifier(COSIGNATURE_V1) for name, signer in WITNESS_KEYS.items()}


def test_the_witnessed_size_is_the_largest_a_quorum_each_cosigned() -> None:
    cosigned = {"court": 300, "tax": 200, "housing_fund": 100}
    assert [witnessed_size(cosigned, q) for q in (0, 1, 2, 3)] == [0, 300, 200, 100]
    assert witnessed_size({"court": 300}, 2) == 0  # fewer witnesses cosigned than the quorum


def test_the_quorum_allows_only_so_many_uncosigned_checkpoints() -> None:
    policy = WitnessPolicy(witnesses=vkeys(), quorum=2, max_uncosigned_checkpoints=1)
    assert check_quorum(policy, [100, 200, 300], {"court": 300, "tax": 200}) == []  # only 300 is beyond
    [finding] = check_quorum(policy, [100, 200, 300], {"court": 300})
    assert (finding.position, finding.code) == (0, "unwitnessed_checkpoints")
    assert check_quorum(WitnessPolicy(), [100, 200, 300], {}) == []  # no witnesses, no quorum


def test_an_old_unsigned_tail_fails_and_a_fresh_one_does_not() -> None:
    policy = WitnessPolicy(max_unsigned_seconds=60)
    assert check_unsigned_tail(policy, 40, AT, AT + timedelta(seconds=59)) == []
    [finding] = check_unsigned_tail(policy, 40, AT, AT + timedelta(seconds=61))
    assert (finding.position, finding.code) == (40, "unsigned_tail")
    assert check_unsigned_tail(WitnessPolicy(max_unsigned_seconds=None), 40, AT, AT + timedelta(days=9)) == []


def test_a_quorum_beyond_the_witnesses_named_is_refused() -> None:
    with pytest.raises(NoteError, match="quorum of 4"):
        WitnessPolicy(witnesses=vkeys(), quorum=4)


def test_a_policy_file_names_its_witnesses_and_held_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "held.jsonl").write_text(json.dumps({"note": "x\n\n— y AAAA\n", "source": "court's copy"}) + "\n")
    (tmp_path / "policy.yaml").write_text(
        "witnesses:\n"
        + "".join(f"  {name}: {key}\n" for name, key in vkeys().items())
        + "quorum: 2\nmax_uncosigned_checkpoints: 3\nmax_unsigned_seconds: 30\ncheckpoints: [held.jsonl]\n"
    )
    policy = WitnessPolicy.load(tmp_path / "policy.yaml")
    assert (set(policy.witnesses), policy.quorum, policy.max_uncosigned_checkpoints) == (set(WITNESS_KEYS), 2, 3)
    assert policy.max_unsigned_seconds == 30 and [h.source for h in policy.held] == ["court's copy"]
    (tmp_path / "bad.yaml").write_text("witnesses: {}\nquorum: 1\nretries: 3\n")
    with pytest.raises(NoteError, match=r"unknown field.*retries"):
        WitnessPolicy.load(tmp_path / "bad.yaml")
    (tmp_path / "bad.yaml").write_text("quorum: -1\n")
    with pytest.raises(NoteError, match="quorum must be a whole number"):
        WitnessPolicy.load(tmp_path / "bad.yaml")


def test_held_checkpoint_files_are_json_lines_or_one_note(tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_text("origin\n3\nroot\n\n— key AAAA\n")
    assert [h.source for h in read_held(tmp_path / "one.txt")] == [str(tmp_path / "one.txt")]
    (tmp_path / "bad.jsonl").write_text('{"note": "a"}\n{"size": 3}\n')
    with pytest.raises(NoteError, match="line 2: not a checkpoint record"):
        read_held(tmp_path / "bad.jsonl")


class Cosigning:
    """A log that signs checkpoints and has real witnesses cosign them, as the gateway does."""

    def __init__(self, log: AuditLog, folder: Path) -> None:
        self.log = log
        self.signer = CheckpointSigner(log, LOG_KEY, lambda: AT)
        self.witnesses = {
            name: Witness(key, LOG_KEY.verifier(), folder / f"{name}-state.json", clock=lambda: AT.timestamp())
            for name, key in WITNESS_KEYS.items()
        }
        self.known = {name: 0 for name in WITNESS_KEYS}

    def append_and_cosign(self, count: int) -> int:
        start = self.log.size()
        self.log.append_many([event(n) for n in range(start, start + count)])
        size = self.signer.issue()
        assert size is not None
        checkpoint = self.log.checkpoint(size)
        assert checkpoint is not None
        for name, witness in self.witnesses.items():
            old = self.known[name]
            proof = self.log.consistency_proof(old, size) if old else []
            line = witness.add_checkpoint(add_checkpoint_body(old, proof, checkpoint.note))
            self.log.add_cosignature(size, name, line, AT)
            self.known[name] = size
        return size

    def held(self) -> tuple[HeldCheckpoint, ...]:
        notes = {name: witness.latest_note() for name, witness in self.witnesses.items()}
        return tuple(HeldCheckpoint(note, f"witness {name}") for name, note in notes.items() if note is not None)


DROP = {
    "sqlite": [
        f"DROP TRIGGER {t}_no_{v}"
        for t in ("audit_entries", "audit_checkpoints", "audit_cosignatures", "audit_nodes")
        for v in ("delete", "update")
    ],
    "postgresql": [
        f"ALTER TABLE {t} DISABLE TRIGGER USER"
        for t in ("audit_entries", "audit_checkpoints", "audit_cosignatures", "audit_nodes")
    ],
}


def test_a_live_database_rolled_back_is_caught_by_what_real_witnesses_remember(
    database_url: str, tmp_path: Path
) -> None:
    log = new_log(database_url)
    cosigning = Cosigning(log, tmp_path)
    early = cosigning.append_and_cosign(40)
    cosigning.append_and_cosign(25)
    policy = WitnessPolicy(witnesses=vkeys(), quorum=2, held=cosigning.held())
    assert verify(DatabaseSource(log), LOG_KEY.verifier(), policy=policy).ok

    # An administrator restores the database as it was at the early checkpoint.
    with log.engine.begin() as connection:
        for statement in DROP[log.engine.dialect.name]:
            connection.execute(text(statement))
        connection.execute(text("DELETE FROM audit_cosignatures WHERE size > :s"), {"s": early})
        connection.execute(text("DELETE FROM audit_checkpoints WHERE size > :s"), {"s": early})
        connection.execute(text("DELETE FROM audit_entries WHERE seq >= :s"), {"s": early})
    alone = verify(DatabaseSource(log), LOG_KEY.verifier(), policy=WitnessPolicy(witnesses=vkeys(), quorum=2))
    assert alone.ok  # consistent with itself: only what is held outside shows the rollback
    report = verify(DatabaseSource(log), LOG_KEY.verifier(), policy=policy)
    assert [(p.position, p.code) for p in report.problems] == [(early, "log_rolled_back")]
    assert "witness" in report.problems[0].message and str(early + 25) in report.problems[0].message


def test_stripped_cosignatures_fail_the_quorum_on_a_live_database(database_url: str, tmp_path: Path) -> None:
    log = new_log(database_url)
    cosigning = Cosigning(log, tmp_path)
    for _ in range(4):
        cosigning.append_and_cosign(10)
    policy = WitnessPolicy(witnesses=vkeys(), quorum=1)
    assert verify(DatabaseSource(log), LOG_KEY.verifier(), policy=policy).ok
    with log.engine.begin() as connection:
        for statement in DROP[log.engine.dialect.name]:
            connection.execute(text(statement))
        connection.execute(text("DELETE FROM audit_cosignatures"))
    report = verify(DatabaseSource(log), LOG_KEY.verifier(), policy=policy)
    assert [p.code for p in report.problems] == ["unwitnessed_checkpoints"]
    held = verify(
        DatabaseSource(log), LOG_KEY.verifier(), policy=WitnessPolicy(witnesses=vkeys(), held=cosigning.held())
    )
    assert sorted(p.code for p in held.problems) == ["cosignature_missing"] * 3


def test_a_held_checkpoint_not_signed_by_the_log_is_reported(tmp_path: Path) -> None:
    log = new_log(tmp_path)
    Cosigning(log, tmp_path).append_and_cosign(5)
    (tmp_path / "other").mkdir()
    other = new_log(tmp_path / "other")
    other.append_many([event(0)])
    CheckpointSigner(other, generate_signer("xiezhi.test/audit"), lambda: AT).issue()  # same origin, another key
    forged = other.checkpoint()
    assert forged is not None
    report = verify(
        DatabaseSource(log), LOG_KEY.verifier(), policy=WitnessPolicy(held=(HeldCheckpoint(forged.note, "x"),))
    )
    assert [p.code for p in report.problems] == ["held_checkpoint_invalid"]


def test_entries_left_unsigned_long_after_they_were_written_fail(tmp_path: Path) -> None:
    log = new_log(tmp_path)
    Cosigning(log, tmp_path).append_and_cosign(5)
    later = [
        event(0).model_copy(update={"at": datetime(2026, 11, 21, 10, 0, tzinfo=UTC) + timedelta(minutes=m)})
        for m in range(3)
    ]
    log.append_many(later)  # recorded over two minutes, never checkpointed
    report = verify(DatabaseSource(log), LOG_KEY.verifier(), policy=WitnessPolicy(max_unsigned_seconds=60))
    assert [(p.position, p.code) for p in report.problems] == [(5, "unsigned_tail")]
    assert verify(DatabaseSource(log), LOG_KEY.verifier(), policy=WitnessPolicy(max_unsigned_seconds=300)).ok


@pytest.mark.parametrize("size", ["²", "١٢", "01", "-1", "99999999999999999999"])
def test_a_size_that_is_not_plain_decimal_is_refused_not_crashed_on(size: str, tmp_path: Path) -> None:
    """`str.isdigit` accepts '²' and Arabic-Indic digits, which `int` then refuses: the
    witness must answer 400 and a note must fail to parse, never raise something else."""
    witness = Witness(WITNESS_KEYS["court"], LOG_KEY.verifier(), tmp_path / "state.json")
    with pytest.raises(WitnessRefusal) as refused:
        witness.add_checkpoint(f"old {size}\n\nxiezhi.test/audit\n1\nAAAA\n\n— x AAAA\n")
    assert refused.value.status == 400
    with pytest.raises(NoteError, match="tree size"):
        Checkpoint.parse(f"xiezhi.test/audit\n{size}\n{'A' * 43}=\n")
