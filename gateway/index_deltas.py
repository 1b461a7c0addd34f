"""Index deltas: tokens added to and removed from a committed publication, all at once.

A connector's incremental build changes a few tokens of a large index; it publishes a delta
against the committed publication (its base) instead of the whole set again:

    start (base, added count and digest, removed count and digest)
    → chunks of added tokens, chunks of removed tokens, each run ascending
    → commit: the gateway recounts and re-digests both (a chunk at a time), then applies
      them in one transaction

A publication's token set is versioned. Each stored token (its keyed digest) is in the set
from version `since` until, not including, version `until`; applying a delta makes version
v + 1: the added tokens get `since = v + 1`, the removed ones `until = v + 1`. A request pins
the version its plan found (`gateway.request_plan`) and looks up `since <= pinned < until`,
so every batch of a running request sees the same set — the one before the delta or, for a
request planned after it, the one after — never a mix. Removed tokens stay stored until no
unfinished request pins a version that holds them; each applied delta collects the rest.

Before the commit, a delta's added digests are stored under the delta's own id and its
removed digests in `index_removals`; nothing pins a delta, so lookups never see them.
Digests are keyed with the base's lookup key, so they compare with the base's.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, delete, func, insert, literal, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from gateway import digest_partitions
from gateway.db import IndexChunk, IndexDigest, IndexRemoval, Publication, serialise_changes
from gateway.vault import Vault
from xiezhi.errors import Conflict, InvalidInput, NotFound
from xiezhi.wire import StartPublication

ADDED, REMOVED = "added", "removed"
_DIGESTS = IndexDigest.__table__  # type: ignore[attr-defined]
_REMOVALS = IndexRemoval.__table__  # type: ignore[attr-defined]
_PUBLICATIONS = Publication.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Applied:
    """What committing a delta did: counts and versions only."""

    base: Publication
    added: int
    removed: int
    version: int
    collected: int  # removed tokens no request pins any more, deleted


def start(session: Session, vault: Vault, connector: str, body: StartPublication, now: datetime) -> Publication:
    """Open a delta against `body.base`; an unfinished delta of the same base is dropped (a
    connector that starts again after a crash replaces what it left). Raises NotFound for a
    base that is not this connector's publication, Conflict for one not committed, and
    InvalidInput for another capability or epoch than the base's."""
    base = session.get(Publication, body.base)
    if base is None or base.connector != connector or base.base_id is not None:
        raise NotFound("the delta's base is not a publication of this connector", code="unknown_publication")
    if not base.committed:
        raise Conflict("a delta changes a committed publication; this one is not committed", code="base_uncommitted")
    if (base.capability, base.epoch) != (body.capability.id, body.epoch):
        raise InvalidInput("a delta changes a publication of the same capability and epoch", code="delta_mismatch")
    for unfinished in pending(session, base.id):
        drop(session, unfinished)
    delta_id = str(uuid.uuid4())
    delta = Publication(
        id=delta_id,
        connector=connector,
        capability=base.capability,
        title=base.title,
        tier=base.tier,
        epoch=base.epoch,
        token_count=body.token_count,
        digest=body.digest,
        created_at=now,
        lookup_key=vault.new_lookup_key(delta_id, connector),  # unused: digests are keyed with the base's
        base_id=base.id,
        removed_count=body.removed_count,
        removed_digest=body.removed_digest,
    )
    session.add(delta)
    digest_partitions.open_partition(session, delta_id)
    return delta


def add_removals(session: Session, vault: Vault, delta: Publication, number: int, tokens: list[bytes]) -> None:
    """Store chunk `number` of the tokens `delta` removes (its digests under the base's key)."""
    if delta.base_id is None:
        raise InvalidInput("only a delta removes tokens", code="not_a_delta")
    if number != delta.removed_chunks:
        raise Conflict(f"expected removal chunk {delta.removed_chunks}, got chunk {number}")
    if delta.removed_received + len(tokens) > delta.removed_count:
        raise InvalidInput("chunk would exceed the announced count of removed tokens")
    rows = [{"publication_id": delta.id, "digest": d} for d in vault.digests(base_of(session, delta), tokens)]
    try:
        session.execute(insert(IndexRemoval), rows)
    except IntegrityError:
        raise InvalidInput("chunk repeats a token already removed") from None
    delta.removed_received += len(tokens)
    delta.removed_chunks += 1
    session.add(delta)


def apply(session: Session, vault: Vault, delta: Publication, pinned: list[int]) -> Applied:
    """Check the delta's counts and digests, then apply it to its base as the next version and
    drop it. `pinned` are the base's versions that unfinished requests pin (they keep the
    tokens those versions hold). Raises InvalidInput for counts or digests that do not match,
    Conflict for a delta that adds a token the set holds or removes one it does not hold."""
    if delta.received != delta.token_count or delta.removed_received != delta.removed_count:
        raise InvalidInput(
            f"received {delta.received} of {delta.token_count} added and "
            f"{delta.removed_received} of {delta.removed_count} removed tokens"
        )
    for kind, expected in ((ADDED, delta.digest), (REMOVED, delta.removed_digest)):
        if streamed_digest(session, vault, delta, kind) != expected:
            raise InvalidInput(f"the digest of the {kind} tokens does not match the announced digest")
    serialise_changes(session.connection(), _PUBLICATIONS)  # one delta at a time, across instances
    base = base_of(session, delta)
    session.refresh(base)  # the version another instance's delta may just have made
    version = base.version + 1
    live = and_(_DIGESTS.c.publication_id == base.id, _DIGESTS.c.until.is_(None))
    added = select(_DIGESTS.c.digest).where(_DIGESTS.c.publication_id == delta.id)
    held = session.execute(select(func.count()).select_from(_DIGESTS).where(live, _DIGESTS.c.digest.in_(added)))
    if held.scalar_one():
        raise Conflict("the delta adds tokens the index already holds", code="delta_conflict")
    removed = select(_REMOVALS.c.digest).where(_REMOVALS.c.publication_id == delta.id)
    marked = session.execute(update(_DIGESTS).where(live, _DIGESTS.c.digest.in_(removed)).values(until=version))
    if marked.rowcount != delta.removed_count:  # type: ignore[attr-defined]
        raise Conflict("the delta removes tokens the index does not hold", code="delta_conflict")
    moved = select(literal(base.id), _DIGESTS.c.digest, literal(version)).where(_DIGESTS.c.publication_id == delta.id)
    session.execute(insert(_DIGESTS).from_select(["publication_id", "digest", "since"], moved))
    base.version, base.token_count = version, base.token_count + delta.token_count - delta.removed_count
    session.add(base)
    collected = collect(session, base, min([*pinned, version]))
    drop(session, delta)
    return Applied(base, delta.token_count, delta.removed_count, version, collected)


def collect(session: Session, base: Publication, oldest_pinned: int) -> int:
    """Delete the base's removed tokens that no version from `oldest_pinned` on holds."""
    gone = and_(_DIGESTS.c.publication_id == base.id, _DIGESTS.c.until.is_not(None), _DIGESTS.c.until <= oldest_pinned)
    return int(session.execute(delete(_DIGESTS).where(gone)).rowcount)  # type: ignore[attr-defined]


def pending(session: Session, base_id: str) -> list[Publication]:
    """The deltas of `base_id` not yet committed."""
    return list(session.exec(select(Publication).where(col(Publication.base_id) == base_id)))


def drop(session: Session, delta: Publication) -> None:
    """Delete an unapplied delta with what it stored."""
    digest_partitions.drop_digests(session, delta.id)
    session.execute(delete(IndexRemoval).where(col(IndexRemoval.publication_id) == delta.id))
    session.execute(delete(IndexChunk).where(col(IndexChunk.publication_id) == delta.id))
    session.delete(delta)


def base_of(session: Session, delta: Publication) -> Publication:
    """The publication a delta changes; NotFound if it was withdrawn meanwhile."""
    base = session.get(Publication, delta.base_id)
    if base is None:
        raise NotFound("the delta's base publication was withdrawn", code="unknown_publication")
    return base


def check_ascending(tokens: list[bytes], after: bytes | None) -> None:
    """Raise InvalidInput (`tokens_not_ascending`) unless `tokens` ascend strictly from above
    `after` (the previous chunk's last token, if any)."""
    previous = after
    for token in tokens:
        if previous is not None and token <= previous:
            raise InvalidInput(
                "a chunk's tokens must ascend strictly, from above the previous chunk's last token",
                code="tokens_not_ascending",
            )
        previous = token


def streamed_digest(session: Session, vault: Vault, publication: Publication, kind: str) -> str:
    """SHA-256 of `publication`'s tokens of `kind`, chunk after chunk as uploaded (ascending,
    `check_ascending`): each chunk is read, opened and hashed alone, so memory stays one
    chunk's whatever the publication's size."""
    numbers = session.exec(
        select(col(IndexChunk.number))
        .where(IndexChunk.publication_id == publication.id, IndexChunk.kind == kind)
        .order_by(col(IndexChunk.number))
    ).all()
    digest = hashlib.sha256()
    for number in numbers:
        sealed = session.exec(
            select(col(IndexChunk.sealed)).where(
                IndexChunk.publication_id == publication.id, IndexChunk.kind == kind, IndexChunk.number == number
            )
        ).one()
        digest.update(b"".join(vault.open_chunk(publication, number, sealed, kind)))
    return digest.hexdigest()
