"""The relay-ticket signing keys in the gateway's database, shared by every instance."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from gateway.db import make_engine
from gateway.keyring import KeyringError, LocalKeyring
from gateway.sealing import Sealer, SealError, SqlDataKeys
from gateway.ticket_keys import StoredTicketKeys
from xiezhi.crypto import ed25519_public, ed25519_seed
from xiezhi.errors import Conflict, NotFound, Unavailable
from xiezhi.jwks import TicketKeys, parse_jwks

AT = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = AT

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def engine(database_url: str) -> Engine:
    return make_engine(database_url, migrate_empty=True)


@pytest.fixture
def keyring(tmp_path: Path) -> Path:
    LocalKeyring.create(tmp_path / "keyring.json", AT)
    return tmp_path / "keyring.json"


def instance(engine: Engine, keyring: Path, clock: Clock | None = None) -> StoredTicketKeys:
    """What one gateway instance builds: its own sealer and key set over the shared database."""
    clock = clock or Clock()
    return StoredTicketKeys(engine, Sealer(LocalKeyring(keyring), SqlDataKeys(engine), clock), clock=clock)


def test_lifecycle_ensure_rotate_retire_prune(engine: Engine, keyring: Path) -> None:
    keys = instance(engine, keyring)
    first = keys.ensure(AT)
    assert keys.ensure(AT) == first and keys.kids() == [first]
    second = keys.rotate(AT + timedelta(hours=1))
    third = keys.rotate(AT + timedelta(hours=2))
    assert keys.current()[0] == third and keys.kids() == [third, second, first]
    assert list(parse_jwks(keys.jwks())) == [third, second, first]  # what connectors verify with
    with pytest.raises(Conflict):
        keys.retire(third)
    with pytest.raises(NotFound):
        keys.retire("no-such-kid")
    keys.retire(second)
    assert keys.prune(AT + timedelta(minutes=59)) == []  # `first` was superseded at hour 1
    assert keys.prune(AT + timedelta(hours=1)) == [first]
    assert instance(engine, keyring).kids() == [third]  # what another instance reads


def test_the_private_key_is_kept_sealed(engine: Engine, keyring: Path) -> None:
    keys = instance(engine, keyring)
    keys.ensure(AT)
    kid, key = keys.current()
    with engine.connect() as connection:
        public, sealed = connection.execute(text("SELECT public_key, sealed FROM ticket_keys")).one()
    assert bytes(public) == ed25519_public(key)
    assert ed25519_seed(key) not in bytes(sealed)
    other_kid, other_key = instance(engine, keyring).current()  # another instance opens the same key
    assert other_kid == kid and ed25519_seed(other_key) == ed25519_seed(key)
    LocalKeyring.create(keyring.with_name("other.json"), AT)  # the database, without the KEK
    with pytest.raises((SealError, KeyringError)):
        instance(engine, keyring.with_name("other.json")).current()


def test_a_rotation_anywhere_reaches_every_instance_within_the_reload(engine: Engine, keyring: Path) -> None:
    clock = Clock()
    running, operator = instance(engine, keyring, clock), instance(engine, keyring)
    first = running.ensure(AT)
    second = operator.rotate(AT + timedelta(seconds=1))
    assert running.current()[0] == first  # read less than a second ago
    clock.now += timedelta(seconds=2)
    assert running.current()[0] == second
    assert running.kids() == [second, first]  # the old key stays published for tickets in flight


def test_instances_starting_at_once_agree_on_the_current_key(engine: Engine, keyring: Path) -> None:
    starting = [instance(engine, keyring) for _ in range(4)]
    Sealer(LocalKeyring(keyring), SqlDataKeys(engine), Clock()).seal(b"warm-up", {"t": "x"})  # the data key exists
    start = threading.Barrier(len(starting))
    failures: list[BaseException] = []

    def first_start(keys: StoredTicketKeys) -> None:
        start.wait()
        try:
            keys.ensure(AT)
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=first_start, args=(k,)) for k in starting]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    # Each may have inserted a key; all publish the same set and sign with the same one.
    assert len({k.current()[0] for k in starting}) == 1
    assert len({tuple(k.kids()) for k in starting}) == 1
    assert len({str(k.jwks()) for k in starting}) == 1


def test_no_key_fails_closed(engine: Engine, keyring: Path) -> None:
    keys = instance(engine, keyring)
    with pytest.raises(Unavailable, match="no ticket signing key"):
        keys.current()
    assert keys.kids() == [] and keys.jwks() == {"keys": []}


def test_every_key_superseded_signs_nothing(engine: Engine, keyring: Path) -> None:
    keys = instance(engine, keyring)
    kid = keys.ensure(AT)
    with engine.begin() as connection:
        connection.execute(text("UPDATE ticket_keys SET superseded_at = created_at"))
    fresh = instance(engine, keyring)
    with pytest.raises(Unavailable, match="no ticket signing key"):
        fresh.current()
    assert fresh.kids() == [kid]  # still published: tickets it signed verify until pruned


def test_an_earlier_releases_key_folder_is_adopted_once(engine: Engine, keyring: Path, tmp_path: Path) -> None:
    folder = TicketKeys(tmp_path / "ticket-keys")
    old = folder.ensure(AT - timedelta(days=2))
    newer = folder.rotate(AT - timedelta(days=1))
    keys = instance(engine, keyring)
    assert sorted(keys.adopt(folder)) == sorted([old, newer])
    assert keys.current()[0] == newer and keys.kids() == [newer, old]
    assert ed25519_seed(keys.current()[1]) == ed25519_seed(folder.current()[1])
    folder.rotate(AT)
    assert keys.adopt(folder) == []  # the database holds keys: the folder is not read again
    assert keys.current()[0] == newer
