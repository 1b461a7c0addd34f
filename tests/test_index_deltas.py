"""Index deltas at the gateway: applied at once as the next version, pinned versions kept."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from devkit.environment import REPO_ROOT
from gateway import index_deltas, indexes
from gateway.auth import Principal
from gateway.authz import AuthorizedRequest, Authorizer, load_policy_dir, permit
from gateway.db import IndexDigest, Publication, make_engine
from gateway.index_deltas import REMOVED
from gateway.keyring import LocalKeyring
from gateway.sealing import Sealer, SqlDataKeys
from gateway.vault import Vault
from xiezhi.errors import Conflict, InvalidInput, NotFound
from xiezhi.wire import CapabilityDescriptor, StartPublication

AT = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
CAPABILITY = CapabilityDescriptor(id="court.multiple_terminated", title="两起以上终本案件的被执行人", tier=1)
PUBLIC_KEY = b"\x02" * 32
PROSECUTOR = Principal("prosecutor-330803-01", "330803", frozenset({"prosecutor"}), clearance=3)


def tokens(*numbers: int) -> list[bytes]:
    return [n.to_bytes(16, "big") for n in numbers]


def digest(values: list[bytes]) -> str:
    return hashlib.sha256(b"".join(sorted(values))).hexdigest()


class Store:
    """One gateway's index store over a real SQLite database the migrations made."""

    def __init__(self, engine: Engine, vault: Vault) -> None:
        self.engine, self.vault = engine, vault
        authorizer = Authorizer(load_policy_dir(REPO_ROOT / "policies"))
        decision = authorizer.decide(PROSECUTOR, "model:asset_sweep", "run")
        self.permit: AuthorizedRequest = permit(PROSECUTOR, "r-1", "run", decision)

    def publish(self, values: list[bytes], connector: str = "court") -> str:
        body = StartPublication(
            epoch=1, public_key=PUBLIC_KEY, capability=CAPABILITY, token_count=len(values), digest=digest(values)
        )
        with Session(self.engine) as session:
            publication = indexes.start(session, self.vault, connector, body, AT)
            indexes.add_chunk(session, self.vault, publication, 0, b"".join(sorted(values)))
            indexes.commit(session, self.vault, publication, AT)
            session.commit()
            return publication.id

    def delta(
        self,
        base: str,
        added: list[bytes],
        removed: list[bytes],
        *,
        pinned: list[int] | None = None,
        announce: tuple[str, str] | None = None,
    ) -> index_deltas.Applied:
        added_digest, removed_digest = announce or (digest(added), digest(removed))
        body = StartPublication(
            epoch=1, public_key=PUBLIC_KEY, capability=CAPABILITY, token_count=len(added), digest=added_digest,
            base=base, removed_count=len(removed), removed_digest=removed_digest,
        )  # fmt: skip
        with Session(self.engine) as session:
            delta = self.open(session, body)
            if added:
                indexes.add_chunk(session, self.vault, delta, 0, b"".join(sorted(added)))
            if removed:
                indexes.add_chunk(session, self.vault, delta, 0, b"".join(sorted(removed)), REMOVED)
            applied = index_deltas.apply(session, self.vault, delta, pinned or [])
            session.commit()
            return applied

    def open(self, session: Session, body: StartPublication, connector: str = "court") -> Publication:
        return indexes.start(session, self.vault, connector, body, AT)

    def present(self, publication: str, version: int, values: list[bytes]) -> set[bytes]:
        with Session(self.engine) as session:
            return indexes.present(session, self.vault, self.permit, publication, version, values)

    def version(self, publication: str) -> tuple[int, int]:
        with Session(self.engine) as session:
            row = session.get(Publication, publication)
            assert row is not None
            return row.version, row.token_count

    def stored(self, publication: str) -> int:
        with Session(self.engine) as session:
            query = select(func.count()).select_from(IndexDigest).where(IndexDigest.publication_id == publication)
            return session.exec(query).one()


@pytest.fixture
def store(database_url: str, tmp_path: Path) -> Iterator[Store]:
    """On SQLite, and on PostgreSQL 15 (integration tier)."""
    engine = make_engine(database_url, migrate_empty=True)
    LocalKeyring.create(tmp_path / "keyring.json", AT)
    yield Store(engine, Vault(Sealer(LocalKeyring(tmp_path / "keyring.json"), SqlDataKeys(engine), lambda: AT)))
    engine.dispose()


EVERY = tokens(*range(1, 11))


def test_a_delta_is_the_next_version_and_earlier_versions_stay_as_they_were(store: Store) -> None:
    base = store.publish(tokens(1, 2, 3, 4, 5))
    applied = store.delta(base, tokens(6, 7), tokens(2, 3), pinned=[1])
    assert (applied.version, applied.added, applied.removed) == (2, 2, 2)
    assert store.version(base) == (2, 5)
    assert store.present(base, 1, EVERY) == set(tokens(1, 2, 3, 4, 5))
    assert store.present(base, 2, EVERY) == set(tokens(1, 4, 5, 6, 7))
    # A token removed and added again: each version still reads its own set.
    store.delta(base, tokens(2), tokens(7), pinned=[1, 2])
    assert store.present(base, 1, EVERY) == set(tokens(1, 2, 3, 4, 5))
    assert store.present(base, 2, EVERY) == set(tokens(1, 4, 5, 6, 7))
    assert store.present(base, 3, EVERY) == set(tokens(1, 2, 4, 5, 6))


def test_lookups_of_a_pinned_version_interleaved_with_deltas_never_see_a_mix(store: Store) -> None:
    """A request pins version 1 and looks its batches up while deltas land between them:
    every batch answers from version 1; a request pinned after a delta, from its version."""
    base = store.publish(tokens(*range(1, 9)))
    batches = [tokens(1, 2, 3), tokens(4, 5, 6), tokens(7, 8, 9, 10)]
    seen_by_pinned, seen_by_later = set(), set()
    for number, batch in enumerate(batches):
        seen_by_pinned |= store.present(base, 1, batch)
        applied = store.delta(base, tokens(9 + number), tokens(1 + 3 * number), pinned=[1])
        seen_by_later |= store.present(base, applied.version, batch)
    assert seen_by_pinned == set(tokens(*range(1, 9)))  # version 1, batch after batch
    assert store.present(base, 4, tokens(*range(1, 12))) == set(tokens(2, 3, 5, 6, 8, 9, 10, 11))


def test_removed_tokens_are_kept_while_a_version_holding_them_is_pinned(store: Store) -> None:
    base = store.publish(tokens(1, 2, 3))
    store.delta(base, [], tokens(1), pinned=[1])
    assert store.stored(base) == 3  # version 1 is pinned: token 1 stays
    applied = store.delta(base, [], tokens(2), pinned=[])  # nothing pins 1 or 2 any more
    assert applied.collected == 2 and store.stored(base) == 1
    assert store.present(base, applied.version, EVERY) == set(tokens(3))


def test_a_refused_delta_changes_nothing(store: Store) -> None:
    base = store.publish(tokens(1, 2, 3))
    with pytest.raises(Conflict, match="removes tokens the index does not hold"):
        store.delta(base, tokens(4), tokens(9))
    with pytest.raises(Conflict, match="adds tokens the index already holds"):
        store.delta(base, tokens(3), [])
    with pytest.raises(InvalidInput, match="digest of the added tokens"):
        store.delta(base, tokens(4), [], announce=(digest(tokens(5)), digest([])))
    assert store.version(base) == (1, 3)
    assert store.present(base, 1, EVERY) == set(tokens(1, 2, 3))


def test_a_delta_needs_a_committed_base_of_the_same_connector_capability_and_epoch(store: Store) -> None:
    base = store.publish(tokens(1))
    body = StartPublication(
        epoch=1, public_key=PUBLIC_KEY, capability=CAPABILITY, token_count=0, digest=digest([]),
        base=base, removed_count=0, removed_digest=digest([]),
    )  # fmt: skip
    with Session(store.engine) as session, pytest.raises(NotFound):
        store.open(session, body.model_copy(update={"base": "00000000-0000-0000-0000-000000000000"}))
    other = CapabilityDescriptor(id="court.winning_plaintiff_unpaid", title="x", tier=2)
    with Session(store.engine) as session, pytest.raises(InvalidInput, match="same capability and epoch"):
        store.open(session, body.model_copy(update={"capability": other}))
    with Session(store.engine) as session, pytest.raises(InvalidInput, match="does not belong to connector tax"):
        store.open(session, body, connector="tax")
    unfinished = StartPublication(
        epoch=1, public_key=PUBLIC_KEY, capability=CAPABILITY, token_count=1, digest=digest(tokens(5))
    )
    with Session(store.engine) as session:
        pending = store.open(session, unfinished)
        session.commit()
        pending_id = pending.id
    with Session(store.engine) as session, pytest.raises(Conflict, match="not committed"):
        store.open(session, body.model_copy(update={"base": pending_id}))
    with pytest.raises(ValidationError, match="belong to a delta"):
        StartPublication(
            epoch=1, public_key=PUBLIC_KEY, capability=CAPABILITY, token_count=0, digest=digest([]), removed_count=1
        )


def test_a_delta_started_again_replaces_the_unfinished_one(store: Store) -> None:
    base = store.publish(tokens(1, 2))
    body = StartPublication(
        epoch=1, public_key=PUBLIC_KEY, capability=CAPABILITY, token_count=1, digest=digest(tokens(3)),
        base=base, removed_count=0, removed_digest=digest([]),
    )  # fmt: skip
    with Session(store.engine) as session:
        left = store.open(session, body)
        indexes.add_chunk(session, store.vault, left, 0, b"".join(tokens(3)))
        session.commit()
        left_id = left.id
    store.delta(base, tokens(4), [])  # a crash, then the build starts its delta again
    with Session(store.engine) as session:
        assert session.get(Publication, left_id) is None
    assert store.present(base, 2, EVERY) == set(tokens(1, 2, 4))
