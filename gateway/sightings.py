"""Token sightings: which request looked up which pseudonymous token, known only by a keyed digest.

The audit log must never hold a token, yet an auditor should learn when one token is looked
up again and again. So each lookup also writes, in its own transaction, one row per distinct
token to `token_sightings`: the first 8 bytes of HMAC-SHA256 of the token under a random key,
with its capability and connector, the request, the user, their organisation and the time.
A subject's tokens differ per capability (`xiezhi.crypto.derive_token` binds it), so one
subject looked up by a model of two capabilities is two sightings, one per capability.

The key is shared by every gateway instance and survives restarts, kept only sealed in the
database (`gateway.shared_secrets`: AES-256-GCM under a data key the key-encryption key
wraps): a stolen database (sightings plus published indexes) without the key provider cannot
link a digest back to a token, so not to a subject's index entry either. Without a key given
(unit tests, tools) one is drawn for this object alone. Tokens change when a connector
activates a new key epoch. Rows older than the retention
(`token_repeat_days`) are deleted whenever new ones are written.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, LargeBinary, delete, func, insert, or_, select
from sqlmodel import Column, Field, Session, SQLModel

from gateway.anomalies import Sighting
from gateway.db import aware
from xiezhi.wire import Capability

DIGEST_BYTES = 8


class TokenSighting(SQLModel, table=True):
    __tablename__ = "token_sightings"

    id: int | None = Field(default=None, primary_key=True)
    digest: bytes = Field(sa_column=Column(LargeBinary(DIGEST_BYTES), nullable=False, index=True))
    capability: str
    connector: str
    request_id: str = Field(index=True)
    actor: str
    org: str | None = None
    at: datetime = Field(index=True)


_TABLE = TokenSighting.__table__  # type: ignore[attr-defined]


class TokenSightings:
    """Writes sightings under this process's key. The key never leaves the object, nor its repr."""

    def __init__(self, engine: Engine, keep_days: int, key: bytes | None = None) -> None:
        self._key = key if key is not None else secrets.token_bytes(32)
        self._keep = timedelta(days=keep_days)

    def __repr__(self) -> str:
        return f"TokenSightings(keep={self._keep}, key=<redacted>)"

    def digest(self, token: bytes) -> bytes:
        return hmac.new(self._key, token, hashlib.sha256).digest()[:DIGEST_BYTES]

    def record(
        self,
        session: Session,
        *,
        request_id: str,
        actor: str,
        org: str | None,
        tokens: Mapping[str, Sequence[bytes]],
        now: datetime,
    ) -> int:
        """Stage, in `session`'s transaction, one row per distinct (capability, token) of a lookup batch.

        `tokens` maps capability → tokens, one per row; a token repeated within the batch (a
        subject listed twice) is one sighting: a token counts once per request. Returns the
        rows staged.
        """
        distinct = {(capability, self.digest(token)) for capability, batch in tokens.items() for token in batch}
        at = _utc(now)
        session.execute(delete(TokenSighting).where(_TABLE.c.at < at - self._keep))
        rows = [
            {
                "digest": digest,
                "capability": capability,
                "connector": Capability(capability).connector,
                "request_id": request_id,
                "actor": actor,
                "org": org,
                "at": at,
            }
            for capability, digest in sorted(distinct)
        ]
        if rows:
            session.execute(insert(TokenSighting), rows)
        return len(rows)


def repeated(
    connection: Connection,
    since: datetime,
    until: datetime,
    orgs: Collection[str],
    *,
    requests: int,
    users: int,
) -> list[Sighting]:
    """The sightings in (since, until] of the tokens seen by ≥ `requests` requests or ≥ `users` users.

    Only sightings of users in `orgs` (or of no organisation) count, so an auditor's view
    stays within their subtree. This is a pre-selection in SQL; `anomalies.token_repeated`
    applies the rule itself to what it returns.
    """
    visible = or_(_TABLE.c.org.is_(None), _TABLE.c.org.in_(sorted(orgs)))
    scope = [_TABLE.c.at > _utc(since), _TABLE.c.at <= _utc(until), visible]
    candidates = (
        select(_TABLE.c.capability, _TABLE.c.digest)
        .where(*scope)
        .group_by(_TABLE.c.capability, _TABLE.c.digest)
        .having(
            or_(
                func.count(func.distinct(_TABLE.c.request_id)) >= requests,
                func.count(func.distinct(_TABLE.c.actor)) >= users,
            )
        )
        .subquery()
    )
    query = select(_TABLE).join(
        candidates, (candidates.c.capability == _TABLE.c.capability) & (candidates.c.digest == _TABLE.c.digest)
    )
    return [
        Sighting(bytes(row.digest), row.capability, row.request_id, row.actor, row.org, aware(row.at))
        for row in connection.execute(query.where(*scope))
    ]


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


__all__ = ["TokenSighting", "TokenSightings", "repeated"]
