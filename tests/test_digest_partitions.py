"""A publication's digests: uploaded ascending, committed one chunk at a time, and on
PostgreSQL kept in a partition of their own that is dropped with the publication."""

from __future__ import annotations

import tracemalloc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, text
from sqlmodel import Session

from gateway import indexes
from gateway.db import Publication, make_engine
from gateway.index_deltas import REMOVED
from gateway.keyring import LocalKeyring
from gateway.sealing import Sealer, SqlDataKeys
from gateway.vault import Vault
from tests.test_index_deltas import AT, CAPABILITY, EVERY, PUBLIC_KEY, Store, digest, tokens
from xiezhi.errors import InvalidInput
from xiezhi.wire import StartPublication


class _Tokens(list[bytes]):
    """A chunk's opened tokens, which a weak reference can watch."""


class CountingVault(Vault):
    """A vault that records which chunks are opened, and which of their token lists are alive."""

    def __init__(self, sealer: Sealer) -> None:
        super().__init__(sealer)
        self.opened: list[int] = []
        self.alive_at_open: list[int] = []
        self._lists: list[weakref.ref[_Tokens]] = []

    def open_chunk(self, publication: Publication, number: int, sealed: bytes, kind: str = "added") -> list[bytes]:
        self.alive_at_open.append(sum(ref() is not None for ref in self._lists))
        self.opened.append(number)
        opened = _Tokens(super().open_chunk(publication, number, sealed, kind))
        self._lists.append(weakref.ref(opened))
        return opened


@pytest.fixture
def counted(database_url: str, tmp_path: Path) -> Iterator[Store]:
    """A store (SQLite, and PostgreSQL in the integration tier) whose vault counts chunk reads."""
    engine = make_engine(database_url, migrate_empty=True)
    LocalKeyring.create(tmp_path / "keyring.json", AT)
    sealer = Sealer(LocalKeyring(tmp_path / "keyring.json"), SqlDataKeys(engine), lambda: AT)
    yield Store(engine, CountingVault(sealer))
    engine.dispose()


def _start(store: Store, session: Session, values: list[bytes]) -> Publication:
    body = StartPublication(
        epoch=1, public_key=PUBLIC_KEY, capability=CAPABILITY, token_count=len(values), digest=digest(values)
    )
    return indexes.start(session, store.vault, "court", body, AT)


def _refused(session: Session, store: Store, publication: Publication, number: int, values: list[bytes]) -> None:
    with pytest.raises(InvalidInput) as refused:
        indexes.add_chunk(session, store.vault, publication, number, b"".join(values))
    assert refused.value.code == "tokens_not_ascending"


def test_a_chunk_out_of_order_is_refused_with_a_code(counted: Store) -> None:
    with Session(counted.engine) as session:
        publication = _start(counted, session, tokens(1, 2, 3, 4, 5, 6))
        _refused(session, counted, publication, 0, tokens(2, 1, 3))  # unsorted within the chunk
        _refused(session, counted, publication, 0, tokens(1, 1, 2))  # a token twice
        indexes.add_chunk(session, counted.vault, publication, 0, b"".join(tokens(1, 2, 3)))
        _refused(session, counted, publication, 1, tokens(3, 4))  # starts at the previous chunk's last
        _refused(session, counted, publication, 1, tokens(0, 4))  # starts below it
        indexes.add_chunk(session, counted.vault, publication, 1, b"".join(tokens(4, 5, 6)))
        indexes.commit(session, counted.vault, publication, AT)
        session.commit()
        publication_id = publication.id
    assert counted.present(publication_id, 1, EVERY) == set(tokens(1, 2, 3, 4, 5, 6))


def test_a_deltas_removed_tokens_must_ascend_too(counted: Store) -> None:
    base = counted.publish(tokens(1, 2, 3, 4))
    body = StartPublication(
        epoch=1, public_key=PUBLIC_KEY, capability=CAPABILITY, token_count=0, digest=digest([]),
        base=base, removed_count=2, removed_digest=digest(tokens(2, 3)),
    )  # fmt: skip
    with Session(counted.engine) as session:
        delta = counted.open(session, body)
        with pytest.raises(InvalidInput) as refused:
            indexes.add_chunk(session, counted.vault, delta, 0, b"".join(tokens(3, 2)), REMOVED)
        assert refused.value.code == "tokens_not_ascending"


CHUNKS, PER_CHUNK = 40, 5_000


def test_the_commit_reads_one_chunk_at_a_time(counted: Store) -> None:
    """The commit opens the chunks in order, each after the previous one's tokens are gone,
    and its memory stays far below the publication's tokens (≈10 MB held as a list)."""
    values = tokens(*range(1, CHUNKS * PER_CHUNK + 1))
    vault = counted.vault
    assert isinstance(vault, CountingVault)
    with Session(counted.engine) as session:
        publication = _start(counted, session, values)
        for number in range(CHUNKS):
            part = values[number * PER_CHUNK : (number + 1) * PER_CHUNK]
            indexes.add_chunk(session, vault, publication, number, b"".join(part))
        session.commit()
        vault.opened.clear()
        vault.alive_at_open.clear()
        tracemalloc.start()
        try:
            indexes.commit(session, vault, publication, AT)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        session.commit()
    assert vault.opened == list(range(CHUNKS))
    assert max(vault.alive_at_open) == 0
    assert peak < 3 * 2**20, f"the commit peaked at {peak / 2**20:.1f} MiB"


def _partitions(engine: Engine) -> set[str]:
    query = "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'index_digests'::regclass"
    with engine.connect() as connection:
        return set(connection.execute(text(query)).scalars())


def _partition_of(engine: Engine, publication_id: str) -> str:
    with engine.connect() as connection:
        return str(
            connection.execute(text("SELECT 'index_partitions.d_' || md5(:p)"), {"p": publication_id}).scalar_one()
        )


@pytest.mark.integration
def test_on_postgresql_each_publication_and_delta_is_a_partition_dropped_with_it(postgres: str, tmp_path: Path) -> None:
    engine = make_engine(_new_database(postgres), migrate_empty=True)
    LocalKeyring.create(tmp_path / "keyring.json", AT)
    store = Store(engine, Vault(Sealer(LocalKeyring(tmp_path / "keyring.json"), SqlDataKeys(engine), lambda: AT)))
    base = store.publish(tokens(1, 2, 3, 4, 5))
    assert _partitions(engine) == {_partition_of(engine, base)}
    with engine.connect() as connection:  # the key holds `until`: lookups read the key alone
        keys = connection.execute(text("SELECT indexdef FROM pg_indexes WHERE schemaname = 'index_partitions'"))
        assert [
            key.endswith("(digest, since) INCLUDE (until)") and "publication_id" not in key for key in keys.scalars()
        ] == [True]
    assert _lookup_plan(engine, store, base) == "Index Only Scan"
    applied = store.delta(base, tokens(6, 7), tokens(2), pinned=[1])
    assert _partitions(engine) == {_partition_of(engine, base)}  # the delta's own partition is gone
    assert store.present(base, 1, EVERY) == set(tokens(1, 2, 3, 4, 5))
    assert store.present(base, applied.version, EVERY) == set(tokens(1, 3, 4, 5, 6, 7))
    other = store.publish(tokens(8, 9), connector="court")  # the same capability again: replaces the first
    assert _partitions(engine) == {_partition_of(engine, other)}
    with Session(engine) as session:
        publication = session.get(Publication, other)
        assert publication is not None
        indexes.drop_publication(session, store.vault, publication)
        session.commit()
    assert _partitions(engine) == set()
    engine.dispose()


def _lookup_plan(engine: Engine, store: Store, publication_id: str) -> str:
    """How PostgreSQL runs the statement a lookup sends, short of scanning the whole table
    (which it would prefer for five rows): the first node of its plan."""
    sent: list[tuple[str, object]] = []

    def record(_connection: object, _cursor: object, statement: str, parameters: object, *_rest: object) -> None:
        if "index_partitions" in statement:
            sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        assert store.present(publication_id, 1, EVERY) == set(tokens(1, 2, 3, 4, 5))
    finally:
        event.remove(engine, "before_cursor_execute", record)
    ((statement, parameters),) = sent
    with engine.connect() as connection:
        connection.exec_driver_sql("SET enable_seqscan = off")
        connection.exec_driver_sql("SET enable_bitmapscan = off")
        plan = connection.exec_driver_sql("EXPLAIN " + statement, parameters).scalars().all()  # type: ignore[arg-type]
    return str(plan[0]).split(" on ")[0].split(" using ")[0]


def _new_database(base_url: str) -> str:
    from tests.test_migrations import two_roles

    return two_roles(base_url).owner_url
