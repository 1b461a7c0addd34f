"""create_app(settings): builds every resource once, in the lifespan, and wires the routes.

The lifespan keeps what it builds as one typed `GatewayServices` (gateway.services) in the
application's state; routes reach it through the typed dependencies of `gateway.api`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from audit_log import AuditLog, AuditUnavailable, AuditWriter, CheckpointSigner
from audit_log.note import Signer, Verifier, load_signer, parse_witnesses
from audit_log.witness_policy import WitnessPolicy
from gateway import api, audit_api, openapi, review_api, storage, system_api
from gateway.admission import Admission
from gateway.alarms import CHECKPOINT_ROLLBACK, WITNESS_REFUSAL, Alarms
from gateway.approvals import Approvals
from gateway.audit_proofs import AuditProofs
from gateway.audit_review import AuditReview
from gateway.auth import Authenticator, ClientChannels
from gateway.authz import Authorizer
from gateway.checkpoint_publication import CheckpointPublication
from gateway.connector_health import ConnectorProbe
from gateway.db import make_engine
from gateway.evaluation import BlindEvaluation
from gateway.key_admin import KeyAdmin
from gateway.keyring import KeyProvider, LocalKeyring
from gateway.links import ConnectorLinks
from gateway.pipeline import Pipeline
from gateway.policy_admin import PolicyAdmin
from gateway.publishing import Publishing
from gateway.readiness import Readiness
from gateway.recorder import Recorder, SignIns
from gateway.relay import ConnectorRelay
from gateway.request_store import RequestStore
from gateway.retention import ResultRetention
from gateway.sealing import Sealer, SqlDataKeys
from gateway.services import GatewayServices
from gateway.settings import GatewaySettings, KeySettings
from gateway.shared_secrets import shared_secret
from gateway.sightings import TokenSightings
from gateway.system import SystemView
from gateway.ticket_keys import StoredTicketKeys
from gateway.vault import Vault
from gateway.witnessing import Witnessing
from gateway.workspace import Workspace
from xiezhi import __version__, apidocs, problems
from xiezhi.jwks import TicketKeys
from xiezhi.supervision import ModelCatalog
from xiezhi.telemetry import ActiveTelemetry, Telemetry

log = logging.getLogger("xiezhi.gateway")


def key_provider(settings: KeySettings, environment: str) -> KeyProvider:
    """The provider of key-encryption keys the settings name (today the local keyring file)."""
    if environment == "production":
        log.warning("keys: the local keyring file holds the KEKs; production should use a KMS or HSM provider")
    return LocalKeyring(settings.keyring)


def stored_ticket_keys(
    settings: GatewaySettings, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> tuple[StoredTicketKeys, Engine]:
    """The ticket keys of the gateway these settings describe, opened outside a running
    gateway (`xiezhi keys rotate-tickets`); the caller disposes of the engine.

    Raises SchemaOutdated for a database not at head, and what the key provider raises."""
    engine = make_engine(settings.database_url, migrate_empty=settings.environment == "development")
    sealer = Sealer(key_provider(settings.keys, settings.environment), SqlDataKeys(engine), clock)
    return _ticket_keys(settings, engine, sealer, clock), engine


class _AuditParts(NamedTuple):
    log: AuditLog
    writer: AuditWriter
    witnessing: Witnessing
    publication: CheckpointPublication
    signer: Signer
    witnesses: dict[str, Verifier]


def _ticket_keys(
    settings: GatewaySettings, engine: Engine, sealer: Sealer, clock: Callable[[], datetime]
) -> StoredTicketKeys:
    """The ticket keys every instance shares; at the first start, an earlier release's key
    folder (`ticket_keys`) moved into the database, or else a first key made."""
    keys = StoredTicketKeys(engine, sealer, clock=clock)
    if settings.ticket_keys is not None and settings.ticket_keys.is_dir():
        imported = keys.adopt(TicketKeys(settings.ticket_keys))
        if imported:
            log.info("ticket keys: %d imported from the folder the settings name into the database", len(imported))
    keys.ensure(clock())
    return keys


def build_services(
    settings: GatewaySettings,
    engine: Engine,
    links: ConnectorLinks,
    clock: Callable[[], datetime],
    telemetry: Telemetry | None = None,
) -> GatewayServices:
    """Every service of the gateway, over one engine and one set of connector links.

    Starts the background work (checkpoint signing, witnessing, retention, rewrapping); the
    lifespan stops it again.
    """
    audit = _audit_log(settings, engine, links, clock)
    recorder = Recorder(audit.log, clock)
    sealer = Sealer(key_provider(settings.keys, settings.environment), SqlDataKeys(engine), clock)
    vault = Vault(sealer)
    catalog = ModelCatalog.load(settings.models_dir)
    policy = PolicyAdmin(
        engine, recorder, settings.policy_dir, catalog, reload_seconds=settings.policy_reload_seconds, clock=clock
    )
    authorizer = policy.authorizer
    ticket_keys = _ticket_keys(settings, engine, sealer, clock)
    admission, pipeline = _match_requests(
        settings, engine, links, recorder, authorizer, catalog, vault, ticket_keys, clock
    )
    keys = KeyAdmin(
        sealer,
        authorizer,
        recorder,
        clock,
        rewrap_batch=settings.keys.rewrap_batch,
        rewrap_every_seconds=settings.keys.rewrap_every_seconds,
    )
    retention = ResultRetention(engine, recorder, timedelta(days=settings.retention.result_days), clock)
    retention.start(settings.retention.sweep_every_seconds)
    alarms = Alarms(engine, recorder, authorizer, clock, telemetry)
    behind = audit.publication.behind(audit.signer.verifier())
    if behind is not None:
        alarms.raise_alarm(CHECKPOINT_ROLLBACK, "published_checkpoints", "published_checkpoint_ahead", behind)
    audit.witnessing.start(lambda witness, reason, message: _witness_refused(alarms, witness, reason, message))
    probe = ConnectorProbe(engine, links, settings.connectors, clock)
    return GatewayServices(
        authenticator=Authenticator(settings.identity_keys, issuer=settings.issuer, audience=settings.audience),
        sign_ins=SignIns(recorder),
        channels=ClientChannels(settings.tls.domain if settings.tls is not None else None, settings.clients),
        policy=policy,
        catalog=catalog,
        ticket_keys=ticket_keys,
        admission=admission,
        pipeline=pipeline,
        publishing=Publishing(
            engine, audit.log, authorizer, vault, settings.limits.max_publication_chunk_tokens, clock
        ),
        approvals=Approvals(engine, recorder, authorizer, catalog, clock),
        workspace=Workspace(engine, authorizer, catalog, clock),
        keys=keys,
        system=SystemView(engine, authorizer, recorder, probe),
        review=AuditReview(audit.log, authorizer, recorder, settings.audit, clock),
        audit_proofs=AuditProofs(
            audit.log,
            audit.signer,
            audit.witnesses,
            authorizer,
            recorder,
            clock,
            _witness_policy(settings, audit.witnesses),
            held=audit.witnessing.held_views,
        ),
        audit=audit.log,
        audit_writer=audit.writer,
        witnessing=audit.witnessing,
        publication=audit.publication,
        alarms=alarms,
        readiness=Readiness(engine, probe, sealer, alarms),
        telemetry=telemetry,
        retention=retention,
    )


def _audit_log(
    settings: GatewaySettings, engine: Engine, links: ConnectorLinks, clock: Callable[[], datetime]
) -> _AuditParts:
    """The audit log, its batched writer signing checkpoints, and the witnesses cosigning them."""
    audit = AuditLog.existing(engine)  # the migrations made its tables and triggers
    witnesses = parse_witnesses(settings.audit.witnesses)
    signer = load_signer(settings.audit.signing_key)
    publication = CheckpointPublication(audit, settings.audit.publish_dir)
    witnessing = Witnessing(audit, witnesses, links, clock, signer.verifier(), on_cosigned=publication.published)

    def signed(size: int) -> None:
        publication.published(size)
        witnessing.submit(size)

    writer = AuditWriter(
        audit,
        CheckpointSigner(audit, signer, clock),
        every_entries=settings.audit.checkpoint_every_entries,
        every_seconds=settings.audit.checkpoint_every_seconds,
        max_batch=settings.audit.max_batch,
        on_checkpoint=signed,
    )
    audit.batch_through(writer.append)
    return _AuditParts(audit, writer, witnessing, publication, signer, witnesses)


def _witness_policy(settings: GatewaySettings, witnesses: dict[str, Verifier]) -> WitnessPolicy:
    quorum = settings.audit.witness_quorum
    return WitnessPolicy(
        witnesses=witnesses,
        quorum=quorum if quorum is not None else (1 if witnesses else 0),
        max_unsigned_seconds=settings.audit.checkpoint_every_seconds + 60.0,
    )


def _witness_refused(alarms: Alarms, witness: str, reason: str, message: str) -> None:
    alarms.raise_alarm(WITNESS_REFUSAL, witness, reason, message)


def _match_requests(
    settings: GatewaySettings,
    engine: Engine,
    links: ConnectorLinks,
    recorder: Recorder,
    authorizer: Authorizer,
    catalog: ModelCatalog,
    vault: Vault,
    ticket_keys: StoredTicketKeys,
    clock: Callable[[], datetime],
) -> tuple[Admission, Pipeline]:
    """Admission and the pipeline of running requests, sharing one request store."""
    store = RequestStore(engine, vault, recorder, clock)
    relay = ConnectorRelay(links, settings.limits)
    evaluation = BlindEvaluation(settings.limits, settings.ticket_issuer, relay, ticket_keys, recorder, clock)
    # One key for every instance, sealed in the database: sightings compare across instances and restarts.
    sighting_key = shared_secret(engine, vault.sealer, "token_sightings", clock)
    sightings = TokenSightings(engine, settings.audit.anomalies.token_repeat_days, key=sighting_key)
    admission = Admission(settings.limits, store, recorder, authorizer, catalog, clock)
    pipeline = Pipeline(settings.limits, store, evaluation, recorder, authorizer, catalog, vault, sightings, clock)
    return admission, pipeline


def create_app(settings: GatewaySettings, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> FastAPI:
    telemetry = Telemetry(settings.telemetry, "xiezhi-gateway")  # FastAPI takes its providers at construction

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Development may start on an empty database; production only on a migrated one.
        engine = make_engine(settings.database_url, migrate_empty=settings.environment == "development")
        links = ConnectorLinks(
            {name: str(url) for name, url in settings.connectors.items()},
            settings.tls,
            timeout_seconds=settings.limits.connector_timeout_seconds,
            insecure_http=settings.insecure_http,
        )
        services = build_services(settings, engine, links, clock, telemetry)
        app.state.services = services
        try:
            yield
        finally:
            services.retention.close()
            services.keys.close()
            services.audit.batch_through(None)
            services.audit_writer.close()  # signs a last checkpoint of everything committed
            services.witnessing.close()
            links.close()
            engine.dispose()
            telemetry.shutdown()  # exports what is pending, metrics one last time

    app = FastAPI(
        title="Xiezhi gateway",
        version=__version__,
        lifespan=lifespan,
        telemetry=telemetry.fastapi_options(),
        description="Brokers blind, audited match requests between procuratorates and agency connectors.",
        docs_url=None,  # apidocs serves /docs from the installed package, not a CDN
        redoc_url=None,
    )
    apidocs.install(app)
    problems.install(app)

    @app.exception_handler(DBAPIError)
    async def _database(_: Request, exc: DBAPIError) -> JSONResponse:
        unavailable = storage.translate(exc)  # a full disk or a busy database: 503, rolled back
        return problems.internal_error(exc) if unavailable is None else problems.render(unavailable)

    @app.exception_handler(AuditUnavailable)
    async def _audit(_: Request, exc: AuditUnavailable) -> JSONResponse:
        return problems.render(storage.translate(exc) or exc)  # storage_full when that is why

    app.add_middleware(ActiveTelemetry, telemetry=telemetry)
    app.state.telemetry = telemetry
    app.include_router(api.router)
    app.include_router(audit_api.router)
    app.include_router(review_api.router)
    app.include_router(system_api.router)
    generate = app.openapi

    def document() -> dict[str, Any]:
        """FastAPI's document, completed once (gateway.openapi): problem details, security schemes."""
        if app.openapi_schema is None:
            app.openapi_schema = openapi.complete(generate())
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
    return app
