"""A secret every gateway instance shares, sealed in the database: the token-sighting key."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from gateway.db import make_engine
from gateway.keyring import KeyringError, LocalKeyring
from gateway.sealing import Sealer, SealError, SqlDataKeys
from gateway.shared_secrets import shared_secret
from gateway.sightings import TokenSightings

AT = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def instance(engine: Engine, keyring: Path) -> Sealer:
    """What one gateway instance builds: its own sealer over the shared database and keyring."""
    return Sealer(LocalKeyring(keyring), SqlDataKeys(engine), lambda: AT)


@pytest.fixture
def engine(database_url: str) -> Engine:
    return make_engine(database_url, migrate_empty=True)


def test_every_instance_gets_the_same_sighting_key_and_digests_compare(engine: Engine, tmp_path: Path) -> None:
    keyring = tmp_path / "keyring.json"
    LocalKeyring.create(keyring, AT)
    first = shared_secret(engine, instance(engine, keyring), "token_sightings", lambda: AT)
    again = shared_secret(
        engine, instance(engine, keyring), "token_sightings", lambda: AT
    )  # a restart, another instance
    assert first == again and len(first) == 32
    token = bytes(range(16))
    one, two = (TokenSightings(engine, 30, key=key) for key in (first, again))
    assert one.digest(token) == two.digest(token)
    with engine.connect() as connection:
        (sealed,) = connection.execute(text("SELECT sealed FROM gateway_secrets WHERE name = 'token_sightings'")).one()
    assert first not in bytes(sealed)  # kept sealed, never in the clear


def test_instances_starting_at_once_agree(engine: Engine, tmp_path: Path) -> None:
    keyring = tmp_path / "keyring.json"
    LocalKeyring.create(keyring, AT)
    sealers = [instance(engine, keyring) for _ in range(4)]
    shared_secret(engine, sealers[0], "warm-up", lambda: AT)  # the data key exists before the race
    got: list[bytes] = []
    start = threading.Barrier(len(sealers))

    def start_instance(sealer: Sealer) -> None:
        start.wait()
        got.append(shared_secret(engine, sealer, "token_sightings", lambda: AT))

    threads = [threading.Thread(target=start_instance, args=(s,)) for s in sealers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 4 and len(set(got)) == 1


def test_the_database_alone_does_not_open_it(engine: Engine, tmp_path: Path) -> None:
    LocalKeyring.create(tmp_path / "keyring.json", AT)
    shared_secret(engine, instance(engine, tmp_path / "keyring.json"), "token_sightings", lambda: AT)
    LocalKeyring.create(tmp_path / "other.json", AT)  # someone with the database but not the KEK
    with pytest.raises((SealError, KeyringError)):  # its data key is wrapped under a KEK this keyring lacks
        shared_secret(engine, instance(engine, tmp_path / "other.json"), "token_sightings", lambda: AT)
