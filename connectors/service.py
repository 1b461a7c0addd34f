"""The connector's evaluation endpoint: ticketed batches in, evaluations with proofs out.

Before it evaluates anything the connector checks the gateway's ticket: signature,
issuer, audience (this connector), expiry, that it was never used before, and that its
count and digest match the batch exactly. It evaluates only under epochs it holds a key
for. It sees random-looking points, the request id and the requester's organisation —
nothing that identifies a person — and logs counts only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse

from audit_log.note import load_signer, read_verifier
from audit_log.witness import Witness, WitnessRefusal
from connectors.keys import KeyStore
from xiezhi import __version__, oprf, problems
from xiezhi.crypto import VerifyKey, batch_digest, load_public_key
from xiezhi.errors import Denied, InvalidInput, Unauthenticated
from xiezhi.tickets import TicketClaims, verify_ticket
from xiezhi.tls import ServerTLS, gateway_identity, peer_names
from xiezhi.wire import EvaluationResult, TicketedBatch, b64encode

log = logging.getLogger("xiezhi.connector")


@dataclass(frozen=True)
class ConnectorSettings:
    connector: str
    key_dir: Path
    ticket_public_key: Path
    ticket_issuer: str = "xiezhi-gateway"
    max_batch: int = 5_000
    witness_key: Path | None = None  # this connector's cosignature key, to witness the gateway's audit log
    log_key: str | None = None  # the gateway log's verifier key (name+id+key), the log it witnesses
    tls: ServerTLS | None = None  # this connector's certificate; it then accepts calls from the gateway only
    insecure_http: bool = False  # development only: serve plain HTTP (warned at start)


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
        self, settings: ConnectorSettings, keys: KeyStore, ticket_key: VerifyKey, clock: Callable[[], datetime]
    ) -> None:
        self._settings = settings
        self._keys = keys
        self._ticket_key = ticket_key
        self._clock = clock
        self._replays = ReplayGuard()

    def evaluate(self, batch: TicketedBatch) -> EvaluationResult:
        now = self._clock()
        claims = verify_ticket(
            batch.ticket,
            self._ticket_key,
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


def _callers(settings: ConnectorSettings) -> Any:
    """The dependency every route has: over TLS, only the gateway's certificate may call."""
    if settings.tls is None:
        if not settings.insecure_http:
            raise InvalidInput("a connector needs tls (certificate, key, CA) or the development flag insecure_http")
        return Depends(lambda: None)
    expected = gateway_identity(settings.tls.domain)

    def gateway_only(request: Request) -> None:
        if expected not in peer_names(request.scope):
            raise Denied("only the gateway may call this connector", code="caller_not_gateway")

    return Depends(gateway_only)


def create_connector_app(
    settings: ConnectorSettings, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> FastAPI:
    keys = KeyStore(settings.key_dir)
    evaluator = Evaluator(settings, keys, load_public_key(settings.ticket_public_key), clock)
    app = FastAPI(
        title=f"Xiezhi connector: {settings.connector}", version=__version__, dependencies=[_callers(settings)]
    )
    problems.install(app)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "connector": settings.connector}

    @app.get("/v1/keys")
    def public_keys() -> dict[str, str]:
        return {str(epoch): b64encode(keys.key_pair(epoch).pk) for epoch in keys.epochs()}

    @app.post("/v1/evaluate")
    def evaluate(batch: TicketedBatch) -> EvaluationResult:
        return evaluator.evaluate(batch)

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

    return app
