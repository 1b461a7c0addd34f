"""Capability indexes: publication by connectors, epoch activation, and token lookup.

A connector publishes one capability's token set for one epoch in three steps — start
(announcing count and digest), chunks in order, commit (the gateway recounts and
re-digests before accepting) — then activates the epoch once every capability is in.
A newer committed publication of the same capability and epoch replaces the older one; a
delta (`gateway.index_deltas`) changes a committed one in place, as its next version.

Tokens are never stored as such (`gateway.vault`): each chunk is kept sealed for the
commit's check, and each token as a keyed digest under its publication's lookup key, which
is what lookups compare; on PostgreSQL each publication's digests are a partition of their
own (`gateway.digest_partitions`).

A publication's tokens arrive ascending: each chunk's tokens in order, each chunk's first
above the previous chunk's last. The commit then re-digests the chunks as they were
uploaded, one at a time, so its memory is one chunk's, whatever the publication's size.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from gateway import digest_partitions, index_deltas
from gateway.authz import AuthorizedRequest
from gateway.db import ConnectorEpoch, IndexChunk, IndexDigest, MatchRequest, Publication, aware
from gateway.index_deltas import ADDED, REMOVED
from gateway.request_plan import PinnedConnector, RequestPlan
from gateway.vault import Vault
from xiezhi.errors import Conflict, InvalidInput, NotFound, Unavailable
from xiezhi.wire import TOKEN_BYTES, Capability, CapabilityInfo, RequestStatus, StartPublication


def start(session: Session, vault: Vault, connector: str, body: StartPublication, now: datetime) -> Publication:
    """Register the epoch's public key (or check it is unchanged) and open a publication, or a
    delta when `body.base` names the committed publication it changes."""
    if Capability(body.capability.id).connector != connector:
        raise InvalidInput(f"capability {body.capability.id} does not belong to connector {connector}")
    epoch = _epoch(session, connector, body.epoch)
    if epoch is None:
        session.add(ConnectorEpoch(connector=connector, epoch=body.epoch, public_key=body.public_key))
    elif epoch.public_key != body.public_key:
        raise Conflict(f"epoch {body.epoch} of {connector} already has a different public key")
    if body.base is not None:
        return index_deltas.start(session, vault, connector, body, now)
    publication_id = str(uuid.uuid4())
    publication = Publication(
        id=publication_id,
        connector=connector,
        capability=body.capability.id,
        title=body.capability.title,
        tier=body.capability.tier,
        epoch=body.epoch,
        token_count=body.token_count,
        digest=body.digest,
        created_at=now,
        lookup_key=vault.new_lookup_key(publication_id, connector),
    )
    session.add(publication)
    digest_partitions.open_partition(session, publication_id)
    return publication


def add_chunk(
    session: Session, vault: Vault, publication: Publication, number: int, data: bytes, kind: str = ADDED
) -> None:
    """Store chunk `number` (0-based, in order) of concatenated 16-byte tokens: tokens the
    publication holds, or (`kind` removed) tokens a delta removes from its base.

    Raises InvalidInput (`tokens_not_ascending`) unless the tokens ascend strictly, from
    above the last token of the chunk before."""
    if publication.committed:
        raise Conflict("publication is already committed")
    if not data or len(data) % TOKEN_BYTES:
        raise InvalidInput(f"a chunk is a non-empty run of {TOKEN_BYTES}-byte tokens")
    tokens = [data[i : i + TOKEN_BYTES] for i in range(0, len(data), TOKEN_BYTES)]
    index_deltas.check_ascending(tokens, _last_token(session, vault, publication, number, kind))
    if kind == REMOVED:
        index_deltas.add_removals(session, vault, publication, number, tokens)
    else:
        _add_tokens(session, vault, publication, number, tokens)
    sealed = vault.seal_chunk(publication, number, data, kind)
    session.add(IndexChunk(publication_id=publication.id, kind=kind, number=number, sealed=sealed))


def _add_tokens(session: Session, vault: Vault, publication: Publication, number: int, tokens: list[bytes]) -> None:
    if number != publication.chunks:
        raise Conflict(f"expected chunk {publication.chunks}, got chunk {number}")
    if publication.received + len(tokens) > publication.token_count:
        raise InvalidInput("chunk would exceed the announced token count")
    # A delta's tokens are keyed with its base's key, so they compare with the base's.
    keyed = index_deltas.base_of(session, publication) if publication.base_id is not None else publication
    rows = [{"publication_id": publication.id, "digest": d} for d in vault.digests(keyed, tokens)]
    try:
        session.execute(insert(IndexDigest), rows)
    except IntegrityError:
        raise InvalidInput("chunk repeats a token already published") from None
    publication.received += len(tokens)
    publication.chunks += 1
    session.add(publication)


def commit(session: Session, vault: Vault, publication: Publication, now: datetime) -> int:
    """Check count and digest, mark committed, drop older publications it replaces.

    Returns the number of superseded publications removed.
    """
    if publication.committed:
        raise Conflict("publication is already committed")
    if publication.received != publication.token_count:
        raise InvalidInput(f"received {publication.received} of {publication.token_count} tokens")
    if publication.base_id is not None:
        raise Conflict("a delta is applied to its base, not committed on its own", code="not_a_full_publication")
    if index_deltas.streamed_digest(session, vault, publication, ADDED) != publication.digest:
        raise InvalidInput("token digest does not match the announced digest")
    superseded = _committed(session, publication.connector, publication.capability, publication.epoch)
    for old in superseded:
        drop_publication(session, vault, old)
    publication.committed = True
    publication.committed_at = publication.updated_at = now
    session.add(publication)
    return len(superseded)


def activate(session: Session, connector: str, epoch_number: int, now: datetime) -> list[str]:
    """Make `epoch_number` the connector's active epoch; returns its capabilities."""
    epoch = _epoch(session, connector, epoch_number)
    if epoch is None:
        raise NotFound(f"{connector} has published nothing for epoch {epoch_number}")
    capabilities = sorted(p.capability for p in _committed(session, connector, None, epoch_number))
    if not capabilities:
        raise Conflict(f"epoch {epoch_number} of {connector} has no committed index")
    for other in session.exec(select(ConnectorEpoch).where(ConnectorEpoch.connector == connector)):
        other.active = other.epoch == epoch_number
        session.add(other)
    epoch.activated_at = now
    return capabilities


def plan(session: Session, capabilities: tuple[Capability, ...]) -> RequestPlan:
    """Pin, for each connector a model needs, its active epoch and each capability's index.

    Fails closed: a connector with no active epoch or a capability with no committed index
    in it makes the whole model unavailable.
    """
    epochs: dict[str, ConnectorEpoch] = {}
    publications: dict[str, dict[Capability, str]] = {}
    versions: dict[str, dict[Capability, int]] = {}
    dates: dict[str, dict[Capability, datetime]] = {}
    titles: dict[str, dict[Capability, str]] = {}
    for capability in capabilities:
        connector = capability.connector
        epoch = epochs.get(connector) or _active(session, connector)
        if epoch is None:
            raise Unavailable(f"connector {connector} has no active index epoch", code="index_unavailable")
        found = _committed(session, connector, capability, epoch.epoch)
        if not found:
            raise Unavailable(f"capability {capability} has no published index", code="index_unavailable")
        epochs[connector] = epoch
        publications.setdefault(connector, {})[capability] = found[0].id
        if found[0].version != 1:
            versions.setdefault(connector, {})[capability] = found[0].version
        as_of = found[0].updated_at or found[0].committed_at
        if as_of is not None:
            dates.setdefault(connector, {})[capability] = aware(as_of)
        titles.setdefault(connector, {})[capability] = found[0].title
    return RequestPlan(
        {
            connector: PinnedConnector(
                epoch=epoch.epoch,
                public_key=epoch.public_key,
                publications=publications[connector],
                versions=versions.get(connector, {}),
                as_of=dates.get(connector, {}),
                titles=titles.get(connector, {}),
            )
            for connector, epoch in epochs.items()
        }
    )


def describe(session: Session, capabilities: tuple[Capability, ...]) -> tuple[CapabilityInfo, ...]:
    """Each capability's title and tier as its connector's active index publishes them (None
    for a capability with no index published there now)."""
    described = []
    epochs: dict[str, ConnectorEpoch | None] = {}
    for capability in capabilities:
        if capability.connector not in epochs:
            epochs[capability.connector] = _active(session, capability.connector)
        epoch = epochs[capability.connector]
        found = _committed(session, capability.connector, capability, epoch.epoch) if epoch else []
        title, tier = (found[0].title, found[0].tier) if found else (None, None)
        described.append(CapabilityInfo(id=capability, title=title, tier=tier))
    return tuple(described)


def tier_of(session: Session, publication_id: str) -> int:
    publication = session.get(Publication, publication_id)
    if publication is None:
        raise Unavailable("a pinned index has been withdrawn", code="index_unavailable")
    return publication.tier


def present(
    session: Session,
    vault: Vault,
    permit: AuthorizedRequest,
    publication_id: str,
    version: int,
    tokens: list[bytes],
) -> set[bytes]:
    """Return which of `tokens` are in version `version` of the publication's token set,
    comparing keyed digests.

    Only under `permit`: the type checker then shows that authorization ran first, since
    only `gateway.authz` makes one. Raises Unavailable if the publication was withdrawn.
    """
    publication = session.get(Publication, publication_id)
    if publication is None:
        raise Unavailable("a pinned index has been withdrawn", code="index_unavailable")
    by_digest = dict(zip(vault.digests(publication, tokens), tokens, strict=True))
    held = digest_partitions.held_digests(session, publication_id, version, list(by_digest))
    return {by_digest[digest] for digest in held}


def drop_publication(session: Session, vault: Vault, publication: Publication) -> None:
    """Delete a publication with its digests and sealed chunks, and its unapplied deltas."""
    for delta in index_deltas.pending(session, publication.id):
        index_deltas.drop(session, delta)
    digest_partitions.drop_digests(session, publication.id)
    session.execute(delete(IndexChunk).where(col(IndexChunk.publication_id) == publication.id))
    session.delete(publication)
    vault.forget(publication.id)


def _last_token(session: Session, vault: Vault, publication: Publication, number: int, kind: str) -> bytes | None:
    """The last token of chunk `number - 1` of `kind`, if stored (opened: tokens are kept only sealed)."""
    if number < 1:
        return None
    sealed = session.exec(
        select(col(IndexChunk.sealed)).where(
            IndexChunk.publication_id == publication.id, IndexChunk.kind == kind, IndexChunk.number == number - 1
        )
    ).first()
    return None if sealed is None else vault.open_chunk(publication, number - 1, sealed, kind)[-1]


def get_publication(session: Session, connector: str, publication_id: str) -> Publication:
    publication = session.get(Publication, publication_id)
    if publication is None or publication.connector != connector:
        raise NotFound("unknown publication", code="unknown_publication")
    return publication


def _active(session: Session, connector: str) -> ConnectorEpoch | None:
    return session.exec(
        select(ConnectorEpoch).where(ConnectorEpoch.connector == connector, ConnectorEpoch.active)
    ).first()


def _epoch(session: Session, connector: str, epoch: int) -> ConnectorEpoch | None:
    return session.exec(
        select(ConnectorEpoch).where(ConnectorEpoch.connector == connector, ConnectorEpoch.epoch == epoch)
    ).first()


def _committed(session: Session, connector: str, capability: str | None, epoch: int) -> list[Publication]:
    query = select(Publication).where(
        Publication.connector == connector,
        Publication.epoch == epoch,
        Publication.committed,
        col(Publication.base_id).is_(None),
    )
    if capability is not None:
        query = query.where(Publication.capability == capability)
    return list(session.exec(query.order_by(col(Publication.committed_at).desc())))


# Requests in these states will never look anything up again (a completed request answers a
# repeated lookup from its stored flags, not from an index); any other state may.
_FINISHED = (
    RequestStatus.COMPLETED.value,
    RequestStatus.REJECTED.value,
    RequestStatus.EXPIRED.value,
    RequestStatus.CANCELLED.value,
)


def prune_superseded(session: Session, vault: Vault, connector: str) -> int:
    """Drop `connector`'s publications of epochs older than its active one, except those an
    unfinished request pins; returns how many were dropped.

    A request pins its publications in its plan when it starts and looks tokens up in them
    until it completes, so they stay until then; a later activation drops them. A status
    this function does not know counts as unfinished: when unsure, keep.
    """
    active = _active(session, connector)
    if active is None:
        return 0
    pinned = _pinned_publications(session)
    older = session.exec(
        select(Publication).where(Publication.connector == connector, Publication.epoch < active.epoch)
    ).all()
    dropped = [publication for publication in older if publication.id not in pinned]
    for publication in dropped:
        drop_publication(session, vault, publication)
    return len(dropped)


def _pinned_publications(session: Session) -> set[str]:
    plans = session.exec(select(col(MatchRequest.plan)).where(col(MatchRequest.status).not_in(_FINISHED)))
    return {publication_id for plan in plans for publication_id in plan.publication_ids()}


def pinned_versions(session: Session, publication_id: str) -> list[int]:
    """The versions of `publication_id` that unfinished requests pin."""
    plans = session.exec(select(col(MatchRequest.plan)).where(col(MatchRequest.status).not_in(_FINISHED)))
    return [version for plan in plans for pid, version in plan.pinned_versions().items() if pid == publication_id]
