"""create_app(settings): builds every resource once, in the lifespan, and wires the routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI

from audit_log import AuditLog, AuditWriter, CheckpointSigner
from audit_log.note import load_signer, parse_witnesses
from gateway import api, audit_api, review_api
from gateway.admission import Admission
from gateway.approvals import Approvals
from gateway.audit_proofs import AuditProofs
from gateway.audit_review import AuditReview
from gateway.auth import Authenticator
from gateway.db import make_engine
from gateway.evaluation import BlindEvaluation
from gateway.key_admin import KeyAdmin
from gateway.keyring import KeyProvider, LocalKeyring
from gateway.links import ConnectorLinks
from gateway.pipeline import Pipeline
from gateway.policy_admin import PolicyAdmin
from gateway.publishing import Publishing
from gateway.recorder import Recorder, SignIns
from gateway.relay import ConnectorRelay
from gateway.request_store import RequestStore
from gateway.retention import ResultRetention
from gateway.sealing import Sealer, SqlDataKeys
from gateway.settings import GatewaySettings, KeySettings
from gateway.sightings import TokenSightings
from gateway.system import SystemView
from gateway.vault import Vault
from gateway.witnessing import Witnessing
from xiezhi import __version__, problems
from xiezhi.jwks import TicketKeys
from xiezhi.supervision import ModelCatalog
from xiezhi.telemetry import ActiveTelemetry, Telemetry

log = logging.getLogger("xiezhi.gateway")


def key_provider(settings: KeySettings, environment: str) -> KeyProvider:
    """The provider of key-encryption keys the settings name (today the local keyring file)."""
    if environment == "production":
        log.warning("keys: the local keyring file holds the KEKs; production should use a KMS or HSM provider")
    return LocalKeyring(settings.keyring)


def create_app(settings: GatewaySettings, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> FastAPI:
    telemetry = Telemetry(settings.telemetry, "xiezhi-gateway")  # FastAPI takes its providers at construction

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
        sealer = Sealer(key_provider(settings.keys, settings.environment), SqlDataKeys(engine), clock)
        vault = Vault(sealer)
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
        ticket_keys = TicketKeys(settings.ticket_keys, clock=clock)
        ticket_keys.ensure(clock())  # the first key, at the first start
        app.state.ticket_keys = ticket_keys
        store = RequestStore(engine, vault, recorder, clock)
        evaluation = BlindEvaluation(settings.limits, settings.ticket_issuer, relay, ticket_keys, recorder, clock)
        sightings = TokenSightings(engine, settings.audit.anomalies.token_repeat_days)
        app.state.admission = Admission(settings.limits, store, recorder, authorizer, catalog, clock)
        app.state.pipeline = Pipeline(
            settings.limits, store, evaluation, recorder, authorizer, catalog, vault, sightings, clock
        )
        app.state.publishing = Publishing(
            engine, audit, authorizer, vault, settings.limits.max_publication_chunk_tokens, clock
        )
        app.state.keys = KeyAdmin(
            sealer,
            authorizer,
            recorder,
            clock,
            rewrap_batch=settings.keys.rewrap_batch,
            rewrap_every_seconds=settings.keys.rewrap_every_seconds,
        )
        retention = ResultRetention(engine, recorder, timedelta(days=settings.retention.result_days), clock)
        retention.start(settings.retention.sweep_every_seconds)
        app.state.retention = retention
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
            retention.close()
            app.state.keys.close()
            audit.batch_through(None)
            writer.close()  # signs a last checkpoint of everything committed
            witnessing.close()
            links.close()
            engine.dispose()
            telemetry.shutdown()  # exports what is pending, metrics one last time

    app = FastAPI(
        title="Xiezhi gateway",
        version=__version__,
        lifespan=lifespan,
        telemetry=telemetry.fastapi_options(),
        description="Brokers blind, audited match requests between procuratorates and agency connectors.",
    )
    problems.install(app)
    app.add_middleware(ActiveTelemetry, telemetry=telemetry)
    app.state.telemetry = telemetry
    app.include_router(api.router)
    app.include_router(audit_api.router)
    app.include_router(review_api.router)
    return app
