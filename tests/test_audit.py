"""The audit log itself: canonical entries, append-only tables, batched durable appends,
signed checkpoints, proofs from the stored tree, and export."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import DatabaseError

from audit_log import AuditEvent, AuditLog, AuditUnavailable, AuditWriter, CheckpointSigner, EventKind, canonical_entry
from audit_log.entries import GENESIS, UnsafeAuditEntry
from audit_log.export import DatabaseSource, write_export
from audit_log.merkle import LeafList, consistency_proof, inclusion_proof, leaf_hash, root_of, verify_inclusion
from audit_log.note import generate_signer, open_checkpoint
from audit_log.verify import ExportSource, verify
from tests.polling import WAIT_SECONDS

AT = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)
LOG_KEY = generate_signer("xiezhi.test/audit")


def event(n: int = 0, **detail: str | int | bool | None) -> AuditEvent:
    return AuditEvent(
        kind=EventKind.LOOKUP,
        at=AT + timedelta(seconds=n),
        actor="prosecutor-1",
        org="330803",
        request_id=f"r-{n % 7}",
        action="lookup",
        outcome="ok",
        model="asset_sweep",
        detail={"rows": n, **detail},
    )


def new_log(where: Path | str) -> AuditLog:
    """A new log in a SQLite file under folder `where`, or at database URL `where`."""
    url = where if isinstance(where, str) else f"sqlite:///{where / 'audit.sqlite'}"
    return AuditLog(create_engine(url))


def writer_for(log: AuditLog, every_entries: int = 1000, every_seconds: float = 3600, **kw: object) -> AuditWriter:
    return AuditWriter(
        log,
        CheckpointSigner(log, LOG_KEY, lambda: AT),
        every_entries=every_entries,
        every_seconds=every_seconds,
        **kw,  # type: ignore[arg-type]
    )


def test_entries_are_canonical_json_placed_by_seq_and_prev() -> None:
    entry = canonical_entry(event(3, clues=1), 5, b"\x07" * 32)
    fields = json.loads(entry)
    assert entry == json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert fields["seq"] == 5 and base64.b64decode(fields["prev"]) == b"\x07" * 32
    assert leaf_hash(entry) == hashlib.sha256(b"\x00" + entry).digest()


def _carrying(value: str, where: str) -> AuditEvent:
    if where == "detail value":
        return event(note=value)
    if where == "detail key":
        return event(**{value: 1})
    return event().model_copy(update={where: value})


@pytest.mark.parametrize("where", ["detail value", "detail key", "purpose", "actor"])
@pytest.mark.parametrize(
    "value",
    ["11010519491231002X", "prefix 130503670401001 suffix", "110105194912310021", "１１０１０５１９４９１２３１００２"],
)
def test_identifier_like_values_are_refused(tmp_path: Path, value: str, where: str) -> None:
    log = new_log(tmp_path)
    with pytest.raises(UnsafeAuditEntry):
        log.append_now(_carrying(value, where))
    writer = writer_for(log)
    with pytest.raises(UnsafeAuditEntry):
        writer.append(_carrying(value, where))
    writer.close()
    assert log.size() == 0


def test_short_digit_runs_split_across_fields_are_not_refused(tmp_path: Path) -> None:
    """Screening looks at each string: digits ending one field and starting the next are no run."""
    log = new_log(tmp_path)
    log.append_now(event(a="x 12345678", b="1234567 y").model_copy(update={"purpose": "（2025）浙0803执监15号"}))
    assert log.size() == 1


def test_every_log_table_refuses_update_and_delete_at_the_database(database_url: str) -> None:
    log = new_log(database_url)
    writer = writer_for(log)
    for n in range(300):  # enough for a stored level-8 node
        writer.append(event(n))
    writer.close()  # signs a checkpoint
    log.add_cosignature(300, "court", "\u2014 w AAAA\n", AT)
    statements = [
        "UPDATE audit_entries SET kind = 'x'",
        "DELETE FROM audit_entries WHERE seq = 3",
        "UPDATE audit_nodes SET hash = X'00'",
        "DELETE FROM audit_nodes",
        "UPDATE audit_checkpoints SET note = ''",
        "DELETE FROM audit_checkpoints",
        "UPDATE audit_cosignatures SET line = ''",
        "DELETE FROM audit_cosignatures",
    ]
    if log.engine.dialect.name == "postgresql":
        statements = [s.replace("X'00'", "'\\x00'::bytea") for s in statements]
        statements += [f"TRUNCATE {table} CASCADE" for table in ("audit_entries", "audit_nodes", "audit_checkpoints")]
    for statement in statements:
        with log.engine.begin() as connection, pytest.raises(DatabaseError, match="append-only"):
            connection.execute(text(statement))
    assert log.size() == 300 and len(log.entries()) == 300 and len(log.checkpoints()) == 1


def test_an_insert_that_replaces_a_stored_row_is_refused_at_the_database(database_url: str) -> None:
    """`INSERT OR REPLACE` deletes the old row without a DELETE trigger on SQLite, and an
    upsert updates it; both must be refused like any other rewrite."""
    log = new_log(database_url)
    writer = writer_for(log)
    for n in range(300):
        writer.append(event(n))
    writer.close()
    log.add_cosignature(300, "court", "\u2014 w AAAA\n", AT)
    stored = log.entry(3)
    assert stored is not None
    forged = {"seq": 3, "at": "2025-01-01 00:00:00", "entry": b"{}", "leaf": b"\x00" * 32}
    columns = "seq, recorded_at, kind, actor, outcome, entry, leaf_hash"
    values = ":seq, :at, 'relay', 'x', 'ok', :entry, :leaf"
    upsert = "ON CONFLICT (seq) DO UPDATE SET entry = excluded.entry, leaf_hash = excluded.leaf_hash"
    statements = [f"INSERT INTO audit_entries ({columns}) VALUES ({values}) {upsert}"]
    if log.engine.dialect.name == "sqlite":
        statements += [
            f"INSERT OR REPLACE INTO audit_entries ({columns}) VALUES ({values})",
            f"REPLACE INTO audit_entries ({columns}) VALUES ({values})",
            "INSERT OR REPLACE INTO audit_checkpoints (size, root, note, issued_at) VALUES (300, :leaf, '', :at)",
            "INSERT OR REPLACE INTO audit_cosignatures (size, witness, line, received_at) "
            "VALUES (300, 'court', '', :at)",
            "INSERT OR REPLACE INTO audit_nodes (level, idx, hash) VALUES (8, 0, :leaf)",
        ]
    for statement in statements:
        with log.engine.begin() as connection, pytest.raises(DatabaseError, match="append-only"):
            connection.execute(text(statement), forged)
    after = log.entry(3)
    assert after is not None and after.entry == stored.entry and after.leaf_hash == stored.leaf_hash
    assert [c.line for c in log.cosignatures()] == ["\u2014 w AAAA\n"] and log.checkpoints()[0].note
    # Appending new rows still works through the same triggers.
    log.append_now(event(300))
    assert log.size() == 301


def test_concurrent_appends_are_batched_contiguous_and_chained(database_url: str) -> None:
    log = new_log(database_url)
    writer = writer_for(log, every_entries=100)
    seqs: list[int] = []
    lock = threading.Lock()

    def worker(base: int) -> None:
        for n in range(base, base + 150):
            seq = writer.append(event(n))
            with lock:
                seqs.append(seq)

    threads = [threading.Thread(target=worker, args=(i * 1000,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Transactional appends from a caller's own session interleave with the writer's batches.
    from sqlmodel import Session

    with Session(log.engine) as session:
        log.append(session, event(99_999))
        session.commit()
    writer.close()
    assert sorted(seqs) == list(range(1200))
    records = log.entries()
    assert [r.seq for r in records] == list(range(1201))
    prev = GENESIS
    for record in records:
        fields = json.loads(record.entry)
        assert fields["seq"] == record.seq and base64.b64decode(fields["prev"]) == prev
        prev = leaf_hash(record.entry)
        assert bytes(record.leaf_hash) == prev
    checkpoints = log.checkpoints()
    assert checkpoints[-1].size == 1201  # close() signs everything committed
    assert all(b.size - a.size >= 100 for a, b in itertools.pairwise(checkpoints[:-1]))
    leaves = [bytes(r.leaf_hash) for r in records]
    for c in checkpoints:
        assert open_checkpoint(c.note, LOG_KEY.verifier()).root == root_of(leaves[: c.size]) == bytes(c.root)


def test_a_checkpoint_is_signed_after_t_seconds_without_n_entries(tmp_path: Path) -> None:
    log = new_log(tmp_path)
    signed = threading.Event()
    writer = writer_for(log, every_entries=10_000, every_seconds=0.2, on_checkpoint=lambda size: signed.set())
    writer.append(event(1))
    assert signed.wait(WAIT_SECONDS), "no checkpoint after T seconds"  # the bound ends a stuck test only
    assert log.latest_size() == 1
    writer.close()


def test_entry_times_are_stored_as_comparable_instants(database_url: str) -> None:
    """Appends write rows through the driver: a time given in China time is found by an
    instant filter exactly as the statement compiler would have stored it."""
    from audit_log.store import AuditRecord

    log = new_log(database_url)
    china = timezone(timedelta(hours=8))
    at = datetime(2026, 6, 6, 23, 0, 0, 123_456, tzinfo=china)
    log.append_many([event(0).model_copy(update={"at": at})])
    column = AuditRecord.__table__.c.recorded_at  # type: ignore[attr-defined]
    with log.engine.connect() as connection:
        found = connection.execute(select(column).where(column >= at.astimezone(UTC))).scalars().all()
        assert connection.execute(select(column).where(column > at)).scalars().all() == []
    assert [moment.replace(tzinfo=moment.tzinfo or UTC) for moment in found] == [at]


REFUSE_INSERTS = {  # the database starts refusing new entries
    "sqlite": [
        "CREATE TRIGGER refuse_inserts BEFORE INSERT ON audit_entries BEGIN SELECT RAISE(ABORT, 'disk full'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION disk_full() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER refuse_inserts BEFORE INSERT ON audit_entries FOR EACH ROW EXECUTE FUNCTION disk_full()",
    ],
}


def test_a_failed_append_fails_the_caller_and_stores_nothing(database_url: str) -> None:
    log = new_log(database_url)
    writer = writer_for(log)
    writer.append(event(1))
    with log.engine.begin() as connection:
        for statement in REFUSE_INSERTS[log.engine.dialect.name]:
            connection.execute(text(statement))
    with pytest.raises(AuditUnavailable) as refused:
        writer.append(event(2))
    assert refused.value.status == 503
    assert log.size() == 1 and len(log.entries()) == 1
    writer.close()
    with pytest.raises(AuditUnavailable):
        writer.append(event(3))


def test_proofs_from_the_stored_tree_match_proofs_from_the_leaves(database_url: str) -> None:
    log = new_log(database_url)
    log.append_many([event(n) for n in range(70_000)])  # levels 8 and 16 are stored
    leaves = [bytes(r.leaf_hash) for r in log.entries()]
    memory = LeafList(leaves)
    for seq, size in [(0, 1), (5, 70_000), (65_535, 65_536), (65_536, 70_000), (69_999, 70_000), (300, 513)]:
        proof = log.inclusion_proof(seq, size)
        assert proof == inclusion_proof(memory, seq, size)
        verify_inclusion(seq, size, leaves[seq], proof, root_of(leaves[:size]))
    for first, second in [(1, 70_000), (256, 70_000), (65_536, 70_000), (1000, 1001), (70_000, 70_000)]:
        assert log.consistency_proof(first, second) == consistency_proof(memory, first, second)
    assert log.tail().tree.root() == root_of(leaves)


def test_export_round_trips_through_the_verifier(database_url: str, tmp_path: Path) -> None:
    log = new_log(database_url)
    writer = writer_for(log, every_entries=50)
    for n in range(333):
        writer.append(event(n))
    writer.close()
    live = verify(DatabaseSource(log), LOG_KEY.verifier())
    assert live.ok, live.problems
    assert live.entries == 333 and live.latest_checkpoint == 333
    entries, checkpoints = write_export(log, tmp_path / "export")
    assert (entries, checkpoints) == (333, len(log.checkpoints()))
    lines = (tmp_path / "export" / "entries.jsonl").read_bytes().split(b"\n")[:-1]
    assert [leaf_hash(line) for line in lines] == [bytes(r.leaf_hash) for r in log.entries()]
    report = verify(ExportSource(tmp_path / "export"), LOG_KEY.verifier())
    assert report.ok and report.entries == 333 and report.checkpoints == checkpoints


DROP_UPDATE_TRIGGER = {  # what someone with the database's owner rights can do
    "sqlite": "DROP TRIGGER audit_entries_no_update",
    "postgresql": "DROP TRIGGER audit_entries_no_change ON audit_entries",
}


@pytest.mark.integration
def test_a_log_of_several_chunks_verifies_in_parallel_and_a_change_is_named(database_url: str) -> None:
    """Workers re-open the database by its URL; a changed entry sends the check back to the
    sequential pass, which names it."""
    log = new_log(database_url)
    signer = CheckpointSigner(log, LOG_KEY, lambda: AT)
    for block in range(9):
        log.append_many([event(n) for n in range(block * 4000, (block + 1) * 4000)])
        signer.issue()
    report = verify(DatabaseSource(log), LOG_KEY.verifier(), workers=2)
    assert report.ok and report.entries == 36_000 and report.checkpoints == 9
    entry = log.entry(20_001)
    assert entry is not None
    with log.engine.begin() as connection:
        connection.execute(text(DROP_UPDATE_TRIGGER[log.engine.dialect.name]))
        connection.execute(
            text("UPDATE audit_entries SET entry = :entry WHERE seq = 20001"),
            {"entry": bytes(entry.entry).replace(b'"ok"', b'"no"')},
        )
    changed = verify(DatabaseSource(log), LOG_KEY.verifier(), workers=2)
    assert [(p.position, p.code) for p in changed.problems] == [(20001, "entry_altered")]


def test_the_fast_canonical_form_is_rfc8785() -> None:
    """Entries are serialised by sorted compact JSON where that equals RFC 8785; check it does."""
    import random

    import rfc8785

    rng = random.Random(7)
    alphabet = ["a", "Z", "0", " ", '"', "\\", "\n", "\t", "\x01", "\x7f", "é", "检察", "\u2028", "😀", "/"]
    for n in range(2000):
        detail: dict[str, str | int | bool | None] = {
            f"k{i}{rng.choice('abc.')}": rng.choice(
                [
                    "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))),
                    rng.randint(-(2**53) + 1, 2**53 - 1),
                    rng.choice([True, False, None]),
                ]
            )
            for i in range(rng.randint(0, 6))
        }
        e = event(n, **detail)
        payload: dict[str, Any] = {**e.payload(), "seq": n, "prev": base64.b64encode(bytes(32)).decode()}
        assert canonical_entry(e, n, bytes(32)) == rfc8785.dumps(payload)
