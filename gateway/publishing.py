"""Index publication by connectors: authorize the connector, then store and audit.

A connector identity may publish only its own indexes: the token's `connector` claim must
name the connector in the path, and the policy must grant `publish` on `index:<connector>`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import Session

from audit_log import AuditLog, EventKind
from gateway import index_deltas, indexes
from gateway.auth import Principal
from gateway.authz import Authorizer, Outcome
from gateway.db import Publication
from gateway.index_deltas import ADDED
from gateway.recorder import Recorder
from gateway.vault import Vault
from xiezhi.errors import Conflict
from xiezhi.wire import EpochView, PublicationView, StartPublication


class Publishing:
    def __init__(
        self,
        engine: Engine,
        audit: AuditLog,
        authorizer: Authorizer,
        vault: Vault,
        max_chunk_tokens: int,
        clock: Callable[[], datetime],
    ) -> None:
        self._engine = engine
        self._vault = vault
        self._recorder = Recorder(audit, clock)
        self._authorizer = authorizer
        self._max_chunk_tokens = max_chunk_tokens
        self._clock = clock

    def start(self, principal: Principal, connector: str, body: StartPublication) -> PublicationView:
        self._authorize(principal, connector)
        with Session(self._engine) as session:
            publication = indexes.start(session, self._vault, connector, body, self._clock())
            self._check_tier(body)  # after start's own checks; nothing is committed if it refuses
            session.commit()
            return _view(publication)

    def view(self, principal: Principal, connector: str, publication_id: str) -> PublicationView:
        self._authorize(principal, connector)
        with Session(self._engine) as session:
            return _view(indexes.get_publication(session, connector, publication_id))

    def chunk(
        self, principal: Principal, connector: str, publication_id: str, number: int, data: bytes, kind: str = ADDED
    ) -> PublicationView:
        """Store a chunk of the tokens a publication holds, or (`kind` removed) of the tokens
        a delta removes."""
        self._authorize(principal, connector)
        with Session(self._engine) as session:
            publication = indexes.get_publication(session, connector, publication_id)
            indexes.add_chunk(session, self._vault, publication, number, data, kind)
            session.commit()
            return _view(publication)

    def commit(self, principal: Principal, connector: str, publication_id: str) -> PublicationView:
        """Commit a publication, or apply a delta to its base as the base's next version."""
        self._authorize(principal, connector)
        with Session(self._engine) as session:
            publication = indexes.get_publication(session, connector, publication_id)
            if publication.base_id is not None:
                return self._apply(session, principal, publication)
            replaced = indexes.commit(session, self._vault, publication, self._clock())
            self._recorder.record(
                session,
                principal,
                EventKind.INDEX_PUBLICATION,
                "commit",
                "ok",
                connector=connector,
                capability=publication.capability,
                epoch=publication.epoch,
                tokens=publication.token_count,
                replaced=replaced,
            )
            session.commit()
            return _view(publication)

    def _apply(self, session: Session, principal: Principal, delta: Publication) -> PublicationView:
        pinned = indexes.pinned_versions(session, delta.base_id or "")
        applied = index_deltas.apply(session, self._vault, delta, pinned)
        base = applied.base
        base.updated_at = self._clock()
        session.add(base)
        self._recorder.record(
            session,
            principal,
            EventKind.INDEX_PUBLICATION,
            "delta",
            "ok",
            connector=base.connector,
            capability=base.capability,
            epoch=base.epoch,
            tokens=base.token_count,
            added=applied.added,
            removed=applied.removed,
            version=applied.version,
            collected=applied.collected,
        )
        session.commit()
        return _view(base)

    def activate(self, principal: Principal, connector: str, epoch: int) -> EpochView:
        self._authorize(principal, connector)
        with Session(self._engine) as session:
            capabilities = indexes.activate(session, connector, epoch, self._clock())
            # Older epochs' indexes go once no running request pins them (in this transaction).
            pruned = indexes.prune_superseded(session, self._vault, connector)
            self._recorder.record(
                session,
                principal,
                EventKind.EPOCH_ACTIVATED,
                "activate",
                "ok",
                connector=connector,
                epoch=epoch,
                capabilities=len(capabilities),
                pruned_publications=pruned,
            )
            session.commit()
        return EpochView(connector=connector, epoch=epoch, active=True, capabilities=tuple(capabilities))

    @property
    def max_chunk_tokens(self) -> int:
        return self._max_chunk_tokens

    def _check_tier(self, body: StartPublication) -> None:
        """The policy's tier decides who may look a capability up; an agency may classify its
        data as no more sensitive than the policy does, or the index would be under-protected."""
        capability = body.capability
        tier = self._authorizer.policy.rules.tiers.get(capability.id)
        if tier is None:
            raise Conflict(f"the policy gives {capability.id} no tier", code="capability_unclassified")
        if capability.tier > tier:
            raise Conflict(
                f"{capability.id} is declared tier {capability.tier}, above the policy's tier {tier}",
                code="tier_above_policy",
            )

    def _authorize(self, principal: Principal, connector: str) -> None:
        decision = self._authorizer.decide(principal, f"index:{connector}", "publish")
        if decision.allowed and principal.connector != connector:
            decision = replace(
                decision, outcome=Outcome.DENY, rule="own-connector-only", reason="publish_other_connector"
            )
        self._recorder.enforce(principal, f"index:{connector}", "publish", None, decision)


def _view(publication: Publication) -> PublicationView:
    return PublicationView(
        publication_id=publication.id,
        connector=publication.connector,
        capability=publication.capability,
        epoch=publication.epoch,
        token_count=publication.token_count,
        received=publication.received,
        committed=publication.committed,
        version=publication.version,
        base=publication.base_id,
        removed_count=publication.removed_count,
        removed_received=publication.removed_received,
    )
