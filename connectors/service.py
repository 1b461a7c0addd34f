"""The connector's evaluation endpoint: ticketed batches in, evaluations with proofs out.

Before it evaluates anything the connector checks the gateway's ticket: signature (by the
key its kid names in the gateway's JWK Set, `connectors.gateway_keys`), issuer, audience
(this connector), expiry, that it was never used before, and that its count and digest
match the batch exactly. It evaluates only under epochs it holds a key
for. It sees random-looking points, the request id and the requester's organisation —
nothing that identifies a person — and logs counts only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse

from audit_log.note import load_signer, read_verifier
from audit_log.witness import Witness, WitnessRefusal
from connectors.gateway_keys import gateway_keys
from connectors.keys import KeyStore
from xiezhi import __version__, apidocs, oprf, problems
from xiezhi.crypto import batch_digest
from xiezhi.errors import Denied, InvalidInput, NotFound, Unauthenticated, Unavailable
from xiezhi.telemetry import ActiveTelemetry, Telemetry, TelemetrySettings, annotate, record_batch, traced
from xiezhi.tickets import KeyLookup, TicketClaims, verify_ticket
from xiezhi.tls import TRUST_DOMAIN, ServerTLS, client_identity, gateway_identity, peer_names
from xiezhi.wire import EvaluationResult, TicketedBatch, b64encode

log = logging.getLogger("xiezhi.connector")


@dataclass(frozen=True)
class ConnectorSettings:
    connector: str
    key_dir: Path
    ticket_jwks: Path | None = None  # the gateway's ticket keys as a JWK Set file …
    ticket_jwks_url: str | None = None  # … or its https://<gateway>/.well-known/jwks.json (one of the two)
    ticket_jwks_refresh_seconds: float = 5.0  # an unknown kid refetches the set at most this often
    ticket_jwks_max_age_seconds: float = 300.0  # an older set is refetched before use
    ticket_issuer: str = "xiezhi-gateway"
    max_batch: int = 5_000
    witness_key: Path | None = None  # this connector's cosignature key, to witness the gateway's audit log
    log_key: str | None = None  # the gateway log's verifier key (name+id+key), the log it witnesses
    tls: ServerTLS | None = None  # this connector's certificate; it then accepts calls from the gateway only
    # Client certificates (by name) that may also read the newest checkpoint this connector
    # cosigned (GET /witness/checkpoint): the auditors who hold the gateway's log to it.
    witness_readers: tuple[str, ...] = ("auditor",)
    # Client certificates that may scrape GET /metrics (with telemetry `prometheus: true`) and
    # probe GET /readyz (monitoring).
    metrics_readers: tuple[str, ...] = ("admin",)
    insecure_http: bool = False  # development only: serve plain HTTP (warned at start)
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)  # where traces, metrics, logs go


class ReplayGuard:
    """Remembers ticket ids until they expire; a second use is refused."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()

    def check(self, claims: TicketClaims, now: datetime) -> None:
        moment = int(now.timestamp())
        with self._lock:
            self._seen = {jti: exp for jti, exp in self._seen.items() if exp > moment}
            if claims.ticket_id in self._seen:
                raise Unauthenticated("relay ticket was already used", code="ticket_replayed")
            self._seen[claims.ticket_id] = claims.expires_at


class Evaluator:
    def __init__(
        self, settings: ConnectorSettings, keys: KeyStore, ticket_keys: KeyLookup, clock: Callable[[], datetime]
    ) -> None:
        self._settings = settings
        self._keys = keys
        self._ticket_keys = ticket_keys
        self._clock = clock
        self._replays = ReplayGuard()

    @traced("connector.evaluate", counted=True)
    def evaluate(self, batch: TicketedBatch) -> EvaluationResult:
        now = self._clock()
        claims = verify_ticket(
            batch.ticket,
            self._ticket_keys,
            issuer=self._settings.ticket_issuer,
            connector=self._settings.connector,
            now=now,
        )
        count = len(batch.blinded_elements)
        if claims.count != count or claims.digest != batch_digest(list(batch.blinded_elements)):
            raise Unauthenticated("relay ticket does not match this batch", code="ticket_mismatch")
        if count > self._settings.max_batch:
            raise InvalidInput(f"a batch holds at most {self._settings.max_batch} elements", code="batch_too_large")
        self._replays.check(claims, now)
        annotate({"xiezhi.request_id": claims.request_id, "xiezhi.epoch": claims.epoch, "xiezhi.batch_size": count})
        record_batch("connector.evaluate", count)
        key = self._keys.key_pair(claims.epoch)
        evaluation = oprf.blind_evaluate(key.sk, batch.blinded_elements, oprf.Mode.VOPRF)
        assert evaluation.proof is not None
        log.info(
            "evaluated request=%s org=%s count=%d epoch=%d",
            claims.request_id,
            claims.requester_org,
            count,
            claims.epoch,
        )
        return EvaluationResult(
            epoch=claims.epoch, evaluated_elements=list(evaluation.evaluated_elements), proof=evaluation.proof
        )


WITNESS_CHECKPOINT = "/witness/checkpoint"
METRICS = "/metrics"
READYZ = "/readyz"


def _callers(settings: ConnectorSettings) -> Any:
    """The dependency every route has: over TLS, only the gateway's certificate may call; the
    witness readers' certificates may also read the newest cosigned checkpoint, and the
    metrics readers' scrape /metrics and probe /readyz (GET only)."""
    if settings.tls is None:
        if not settings.insecure_http:
            raise InvalidInput("a connector needs tls (certificate, key, CA) or the development flag insecure_http")
        return Depends(lambda: None)
    domain = settings.tls.domain
    expected = gateway_identity(domain)
    readers = {client_identity(name, domain) for name in settings.witness_readers}
    scrapers = {client_identity(name, domain) for name in settings.metrics_readers}
    also = {WITNESS_CHECKPOINT: readers, METRICS: scrapers, READYZ: scrapers}  # path → who else may GET it

    def gateway_only(request: Request) -> None:
        names = peer_names(request.scope)
        if expected in names:
            return
        if request.method == "GET" and also.get(request.url.path, set()).intersection(names):
            return
        raise Denied("only the gateway may call this connector", code="caller_not_gateway")

    return Depends(gateway_only)


def create_connector_app(
    settings: ConnectorSettings, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> FastAPI:
    keys = KeyStore(settings.key_dir)
    ticket_keys = gateway_keys(
        jwks_file=settings.ticket_jwks,
        jwks_url=settings.ticket_jwks_url,
        tls=settings.tls,
        domain=settings.tls.domain if settings.tls is not None else TRUST_DOMAIN,
        insecure_http=settings.insecure_http,
        clock=clock,
        refresh_seconds=settings.ticket_jwks_refresh_seconds,
        max_age_seconds=settings.ticket_jwks_max_age_seconds,
    )
    evaluator = Evaluator(settings, keys, ticket_keys.lookup, clock)
    telemetry = Telemetry(settings.telemetry, f"xiezhi-connector-{settings.connector}")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            ticket_keys.close()
            telemetry.shutdown()  # exports what is pending, metrics one last time

    app = FastAPI(
        title=f"Xiezhi connector: {settings.connector}",
        version=__version__,
        dependencies=[_callers(settings)],
        lifespan=lifespan,
        telemetry=telemetry.fastapi_options(),
        docs_url=None,  # apidocs serves /docs from the installed package, not a CDN
        redoc_url=None,
    )
    apidocs.install(app)
    problems.install(app)
    app.add_middleware(ActiveTelemetry, telemetry=telemetry)
    app.state.telemetry = telemetry

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "connector": settings.connector}

    @app.get(METRICS, response_class=Response)
    def metrics() -> Response:
        """This connector's metrics for a Prometheus scraper (telemetry `prometheus: true`), redacted."""
        text = telemetry.prometheus_text()
        if text is None:
            raise NotFound("metrics are not served: set the telemetry's prometheus option", code="metrics_off")
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/keys")
    def public_keys() -> dict[str, str]:
        return {str(epoch): b64encode(keys.key_pair(epoch).pk) for epoch in keys.epochs()}

    @app.post("/v1/evaluate")
    def evaluate(batch: TicketedBatch) -> EvaluationResult:
        return evaluator.evaluate(batch)

    witness: Witness | None = None
    if settings.witness_key is not None and settings.log_key is not None:
        witness = Witness(
            load_signer(settings.witness_key),
            read_verifier(settings.log_key),
            settings.witness_key.with_name("witness-state.json"),
            clock=lambda: clock().timestamp(),
        )

        @app.post("/witness/add-checkpoint", response_class=PlainTextResponse)
        async def add_checkpoint(request: Request) -> PlainTextResponse:
            body = (await request.body()).decode("utf-8", errors="replace")
            try:
                return PlainTextResponse(await run_in_threadpool(witness.add_checkpoint, body))
            except WitnessRefusal as refusal:
                return PlainTextResponse(refusal.body, status_code=refusal.status, media_type=refusal.content_type)

        @app.get(WITNESS_CHECKPOINT, response_class=PlainTextResponse)
        def cosigned_checkpoint() -> PlainTextResponse:
            """The newest checkpoint of the gateway's log this connector cosigned, with its
            cosignature: an auditor's verifier fails a log smaller than it or inconsistent with it."""
            assert witness is not None  # the route exists only with a witness
            note = witness.latest_note()
            if note is None:
                raise NotFound("this witness has cosigned no checkpoint yet", code="no_cosigned_checkpoint")
            return PlainTextResponse(note)

    @app.get(READYZ)
    def readyz() -> dict[str, object]:
        """Ready to evaluate: the newest epoch's OPRF key loads, and the witness state (when it
        witnesses) reads. 200 names the epoch and the size last cosigned; 503 says what is not
        ready (no_key, witness_state_unreadable). Epochs and sizes only."""
        try:
            epoch = keys.current()
            keys.key_pair(epoch)
        except Exception as exc:  # a missing or unreadable key is "not ready", said as such
            raise Unavailable("no usable OPRF key", code="no_key") from exc
        witnessed: int | None = None
        if witness is not None:
            try:
                latest = witness.latest()
            except Exception as exc:  # a damaged state file: the witness cannot check consistency
                raise Unavailable("the witness state cannot be read", code="witness_state_unreadable") from exc
            witnessed = latest.size if latest is not None else 0
        return {"status": "ready", "connector": settings.connector, "epoch": epoch, "witnessed_size": witnessed}

    return app
