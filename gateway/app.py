"""create_app(settings): builds every resource once, in the lifespan, and wires the routes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from fastapi import FastAPI

from audit_log import AuditLog, AuditWriter, CheckpointSigner
from audit_log.note import load_signer, parse_witnesses
from gateway import api, audit_api, review_api
from gateway.approvals import Approvals
from gateway.audit_proofs import AuditProofs
from gateway.audit_review import AuditReview
from gateway.auth import Authenticator
from gateway.db import make_engine
from gateway.links import ConnectorLinks
from gateway.pipeline import Pipeline
from gateway.policy_admin import PolicyAdmin
from gateway.publishing import Publishing
from gateway.recorder import Recorder, SignIns
from gateway.relay import ConnectorRelay
from gateway.settings import GatewaySettings
from gateway.system import SystemView
from gateway.witnessing import Witnessing
from xiezhi import __version__, problems
from xiezhi.crypto import load_private_key
from xiezhi.supervision import ModelCatalog


def create_app(settings: GatewaySettings, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        audit = AuditLog(engine)
        witnesses = parse_witnesses(settings.audit.witnesses)
        links = ConnectorLinks(
            {name: str(url) for name, url in settings.connectors.items()},
            settings.tls,
            timeout_seconds=settings.limits.connector_timeout_seconds,
            insecure_http=settings.insecure_http,
        )
        witnessing = Witnessing(audit, witnesses, links, clock)
        log_signer = load_signer(settings.audit.signing_key)
        writer = AuditWriter(
            audit,
            CheckpointSigner(audit, log_signer, clock),
            every_entries=settings.audit.checkpoint_every_entries,
            every_seconds=settings.audit.checkpoint_every_seconds,
            max_batch=settings.audit.max_batch,
            on_checkpoint=witnessing.submit,
        )
        audit.batch_through(writer.append)
        recorder = Recorder(audit, clock)
        catalog = ModelCatalog.load(settings.models_dir)
        policy = PolicyAdmin(
            engine, recorder, settings.policy_dir, catalog, reload_seconds=settings.policy_reload_seconds, clock=clock
        )
        authorizer = policy.authorizer
        relay = ConnectorRelay(links, settings.limits)
        app.state.authenticator = Authenticator(
            settings.identity_keys, issuer=settings.issuer, audience=settings.audience
        )
        app.state.tls_domain = settings.tls.domain if settings.tls is not None else None
        app.state.catalog = catalog
        app.state.audit = audit
        app.state.pipeline = Pipeline(
            settings, engine, audit, authorizer, catalog, relay, load_private_key(settings.ticket_key), clock
        )
        app.state.publishing = Publishing(
            engine, audit, authorizer, settings.limits.max_publication_chunk_tokens, clock
        )
        app.state.policy = policy
        app.state.approvals = Approvals(engine, recorder, authorizer, catalog, clock)
        app.state.review = AuditReview(audit, authorizer, recorder, settings.audit, clock)
        app.state.system = SystemView(engine, authorizer, recorder)
        app.state.audit_proofs = AuditProofs(audit, log_signer, witnesses, authorizer, recorder, clock)
        app.state.sign_ins = SignIns(recorder)
        app.state.audit_writer = writer
        app.state.witnessing = witnessing
        try:
            yield
        finally:
            audit.batch_through(None)
            writer.close()  # signs a last checkpoint of everything committed
            witnessing.close()
            links.close()
            engine.dispose()

    app = FastAPI(
        title="Xiezhi gateway",
        version=__version__,
        lifespan=lifespan,
        description="Brokers blind, audited match requests between procuratorates and agency connectors.",
    )
    problems.install(app)
    app.include_router(api.router)
    app.include_router(audit_api.router)
    app.include_router(review_api.router)
    return app
