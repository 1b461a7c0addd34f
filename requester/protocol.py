"""Running one supervision model over a subject list, the requester's side of the protocol.

create request → for each connector: blind (fresh scalar per subject and connector),
relay through the gateway, verify the batched DLEQ proof, finalize → derive tokens per
capability → look the tokens up, batch by batch → read the result. Blinding and
finalizing run in a process pool over the machine's cores while batches are in flight.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass

from requester.gateway_client import GatewayClient
from xiezhi import oprf
from xiezhi.crypto import derive_token
from xiezhi.errors import ApprovalRequired, InvalidInput, ProofError
from xiezhi.parallel import executor_for
from xiezhi.telemetry import annotate, span
from xiezhi.wire import (
    ConnectorPlan,
    CreateMatchRequest,
    EvaluationBatch,
    LookupBatch,
    MatchRequestView,
    MatchResult,
)

Advance = Callable[[int], None]


@dataclass(frozen=True)
class MatchSpec:
    """What to run. `request_id` resumes a request created earlier (one that waited for
    approval) instead of creating a new one; `scope` is the region the run reaches."""

    model: str
    purpose: str
    legal_basis: str
    batch_size: int = 2_000
    scope: str | None = None
    request_id: str | None = None


# Called with the id of a request that waits for approval; returns once it may run.
OnPending = Callable[[str], None]


def run_match(
    client: GatewayClient,
    spec: MatchSpec,
    inputs: Sequence[bytes],
    *,
    advance: Advance = lambda _n: None,
    on_total: Callable[[int], None] = lambda _n: None,
    workers: int | None = None,
    on_pending: OnPending | None = None,
) -> MatchResult:
    """Run `spec.model` over OPRF inputs (one per valid row, in row order); return per-row flags.

    A request that needs approval raises ApprovalRequired (with its request id) unless
    `on_pending` is given, which is called and must return once the request is approved.
    """
    with span("client.match", {"xiezhi.model": spec.model, "xiezhi.subjects": len(inputs)}):
        view = _open(client, spec, len(inputs), on_pending)
        annotate({"xiezhi.request_id": view.request_id})
        on_total(len(inputs) * (len(view.connectors) + 1))
        tokens: dict[str, list[bytes]] = {}
        with executor_for(len(inputs), workers) as pool:
            for plan in view.connectors:
                tokens.update(
                    _evaluate_connector(client, pool, view.request_id, plan, inputs, spec.batch_size, advance)
                )
        for first in range(0, len(inputs), spec.batch_size):
            part = {capability: values[first : first + spec.batch_size] for capability, values in tokens.items()}
            client.lookup(view.request_id, LookupBatch(first_row=first, tokens=part))
            advance(len(next(iter(part.values()))))
        return client.result(view.request_id)


def _open(client: GatewayClient, spec: MatchSpec, count: int, on_pending: OnPending | None) -> MatchRequestView:
    request_id = spec.request_id
    if request_id is None:
        body = CreateMatchRequest(
            model=spec.model, purpose=spec.purpose, legal_basis=spec.legal_basis, scope=spec.scope, subject_count=count
        )
        try:
            return client.create(body)
        except ApprovalRequired as exc:
            request_id = str(exc.extensions.get("request_id") or "")
            if on_pending is None or not request_id:
                raise
            on_pending(request_id)
    view = client.view(request_id)
    if view.model != spec.model or view.subject_count != count:
        raise InvalidInput(
            f"request {request_id} is for {view.model} over {view.subject_count} subjects, "
            f"not {spec.model} over {count}: resume it with the same subject list",
            code="request_mismatch",
        )
    return view


def _evaluate_connector(
    client: GatewayClient,
    pool: Executor,
    request_id: str,
    plan: ConnectorPlan,
    inputs: Sequence[bytes],
    batch_size: int,
    advance: Advance,
) -> dict[str, list[bytes]]:
    batches = [list(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]
    blinded = [pool.submit(_blind, batch) for batch in batches]
    finals: list[Future[dict[str, list[bytes]]]] = []
    for batch, pending in zip(batches, blinded, strict=True):
        blinds, elements = pending.result()
        answer = client.evaluate(request_id, plan.connector, EvaluationBatch(blinded_elements=elements))
        if answer.epoch != plan.epoch:
            raise ProofError(f"connector {plan.connector} evaluated under an unexpected epoch")
        finals.append(
            pool.submit(
                _finalize,
                batch,
                blinds,
                answer.evaluated_elements,
                elements,
                answer.proof,
                plan.public_key,
                plan.capabilities,
            )
        )
    tokens: dict[str, list[bytes]] = {capability: [] for capability in plan.capabilities}
    for batch, future in zip(batches, finals, strict=True):
        for capability, values in future.result().items():
            tokens[capability].extend(values)
        advance(len(batch))
    return tokens


def _blind(inputs: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    blinded = oprf.blind(inputs, oprf.Mode.VOPRF)
    return [b.blind for b in blinded], [b.blinded_element for b in blinded]


def _finalize(
    inputs: list[bytes],
    blinds: list[bytes],
    evaluated: list[bytes],
    blinded: list[bytes],
    proof: bytes,
    public_key: bytes,
    capabilities: tuple[str, ...],
) -> dict[str, list[bytes]]:
    outputs = oprf.finalize(inputs, blinds, evaluated, blinded, proof, public_key, oprf.Mode.VOPRF)
    return {capability: [derive_token(output, capability) for output in outputs] for capability in capabilities}
