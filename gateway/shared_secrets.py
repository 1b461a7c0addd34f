"""Secrets every gateway instance must share, kept sealed in the database.

A secret is drawn once, by whichever instance needs it first, sealed under the current data
key (`gateway.sealing`, context naming the table and the secret) and stored by name; an
instance starting at the same moment loses the insert race and reads the winner's. A stolen
database does not open it: that needs the key-encryption key, which the key provider holds.
The token-sighting key is one (`gateway.sightings`): sightings recorded by any instance, or
before a restart, compare with each other.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from gateway.db import GatewaySecret
from gateway.sealing import Sealer

_TABLE = GatewaySecret.__table__  # type: ignore[attr-defined]


def shared_secret(engine: Engine, sealer: Sealer, name: str, clock: Callable[[], datetime], size: int = 32) -> bytes:
    """The secret stored as `name`, drawn (`size` random bytes) and stored if there is none yet.

    Raises SealError if the stored secret does not open (another KEK, a changed row)."""
    context = {"table": "gateway_secrets", "name": name}
    with engine.begin() as connection:
        insert = (postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert)(_TABLE)
        sealed = sealer.seal(secrets.token_bytes(size), context)
        connection.execute(insert.values(name=name, sealed=sealed, created_at=clock()).on_conflict_do_nothing())
        stored = connection.execute(select(_TABLE.c.sealed).where(_TABLE.c.name == name)).scalar_one()
    return sealer.open(bytes(stored), context)


__all__ = ["shared_secret"]
