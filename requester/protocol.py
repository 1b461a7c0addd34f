"""Running one supervision model over a subject list, the requester's side of the protocol.

create request → for each connector: blind (fresh scalar per subject and connector),
relay through the gateway, verify the batched DLEQ proof, finalize → derive tokens per
capability → look the tokens up, batch by batch → read the result. Blinding and
finalizing run in a process pool over the machine's cores while batches are in flight.

Each evaluation batch is a batch slot at the gateway (its first row and size), so a run can
be resumed: the request's view says which slots exist and how many rows were looked up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass

from requester.gateway_client import GatewayClient
from xiezhi import oprf
from xiezhi.crypto import derive_token
from xiezhi.errors import ApprovalRequired, InvalidInput, ProofError, XiezhiError
from xiezhi.parallel import executor_for
from xiezhi.telemetry import annotate, span
from xiezhi.wire import (
    ConnectorPlan,
    CreateMatchRequest,
    EvaluationBatch,
    EvaluationFailure,
    EvaluationSlot,
    FailureReason,
    LookupBatch,
    MatchRequestView,
    MatchResult,
)

Advance = Callable[[int], None]


@dataclass(frozen=True)
class MatchSpec:
    """What to run. `request_id` resumes a request created earlier — one that waited for
    approval, or one whose run stopped half way — instead of creating a new one; `scope` is
    the region the run reaches."""

    model: str
    purpose: str
    legal_basis: str
    batch_size: int = 2_000
    scope: str | None = None
    request_id: str | None = None
    subjects_digest: str | None = None  # the list file's SHA-256: the approver sees it


# Called with the id of a request that waits for approval; returns once it may run.
OnPending = Callable[[str], None]

Batch = tuple[int, int]  # first row, number of rows


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

    A resumed request continues where the gateway says it stands: rows already looked up are
    skipped (their flags come with the result), and only the batches still needed for the
    rest are evaluated again — in the gateway's batch slots where it has them, whatever
    `spec.batch_size` is now. An error after the request was opened carries its id in
    `extensions["request_id"]`, so the caller can say how to resume or cancel it.
    """
    with span("client.match", {"xiezhi.model": spec.model, "xiezhi.subjects": len(inputs)}):
        view = _open(client, spec, len(inputs), on_pending)
        annotate({"xiezhi.request_id": view.request_id})
        try:
            return _run(client, spec, view, inputs, advance, on_total, workers)
        except XiezhiError as exc:
            exc.extensions.setdefault("request_id", view.request_id)
            raise


def _run(
    client: GatewayClient,
    spec: MatchSpec,
    view: MatchRequestView,
    inputs: Sequence[bytes],
    advance: Advance,
    on_total: Callable[[int], None],
    workers: int | None,
) -> MatchResult:
    start = view.rows_looked_up
    slots = {progress.connector: progress.slots for progress in view.evaluations}
    needed = {
        plan.connector: still_needed(layout(slots.get(plan.connector, ()), len(inputs), spec.batch_size), start)
        for plan in view.connectors
    }
    on_total(sum(count for batches in needed.values() for _, count in batches) + len(inputs) - start)
    tokens: dict[str, list[bytes]] = {}  # per capability, rows start … n−1
    with executor_for(len(inputs) - start, workers) as pool:
        for plan in view.connectors:
            run = _ConnectorRun(client, pool, view, plan, advance)
            tokens.update(run.tokens(inputs, needed[plan.connector], start))
    for first in range(start, len(inputs), spec.batch_size):
        size = min(spec.batch_size, len(inputs) - first)
        part = {capability: values[first - start : first - start + size] for capability, values in tokens.items()}
        client.lookup(view.request_id, LookupBatch(first_row=first, tokens=part))
        advance(size)
    return client.result(view.request_id)


def layout(slots: Sequence[EvaluationSlot], total: int, batch_size: int) -> list[Batch]:
    """Batches covering rows 0 … total−1: the gateway's batch slots as they are, and the rows
    between and after them cut into batches of at most `batch_size`."""
    batches: list[Batch] = []
    row = 0
    for slot in sorted(slots, key=lambda s: s.first_row):
        batches += _cut(row, slot.first_row, batch_size)
        batches.append((slot.first_row, slot.count))
        row = slot.first_row + slot.count
    return batches + _cut(row, total, batch_size)


def still_needed(batches: Sequence[Batch], rows_looked_up: int) -> list[Batch]:
    """The batches holding a row not yet looked up: the only ones whose tokens a run needs."""
    return [(first, count) for first, count in batches if first + count > rows_looked_up]


def _cut(start: int, end: int, batch_size: int) -> list[Batch]:
    return [(first, min(batch_size, end - first)) for first in range(start, end, batch_size)]


def _open(client: GatewayClient, spec: MatchSpec, count: int, on_pending: OnPending | None) -> MatchRequestView:
    request_id = spec.request_id
    if request_id is None:
        body = CreateMatchRequest(
            model=spec.model, purpose=spec.purpose, legal_basis=spec.legal_basis, scope=spec.scope,
            subject_count=count, subjects_digest=spec.subjects_digest,
        )  # fmt: skip
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


class _ConnectorRun:
    """Blind evaluation of one connector's batches: each batch sent as its batch slot, its proof
    verified, and a batch whose proof fails reported to the gateway and evaluated again, as
    long as its slot has attempts left."""

    def __init__(
        self, client: GatewayClient, pool: Executor, view: MatchRequestView, plan: ConnectorPlan, advance: Advance
    ) -> None:
        self._client, self._pool, self._view, self._plan, self._advance = client, pool, view, plan, advance

    def tokens(self, inputs: Sequence[bytes], batches: Sequence[Batch], start: int) -> dict[str, list[bytes]]:
        """Per capability of the connector, the tokens of rows `start` onwards (`batches` cover them)."""
        parts = [list(inputs[first : first + count]) for first, count in batches]
        blinded = [self._pool.submit(_blind, part) for part in parts]
        finals = [
            self._send(first, part, pending.result())
            for (first, _), part, pending in zip(batches, parts, blinded, strict=True)
        ]
        tokens: dict[str, list[bytes]] = {capability: [] for capability in self._plan.capabilities}
        for (first, count), part, final in zip(batches, parts, finals, strict=True):
            try:
                values = final.result()
            except ProofError:
                values = self._again(first, part)
            skip = max(0, start - first)  # rows of the first batch looked up already
            for capability, batch_tokens in values.items():
                tokens[capability].extend(batch_tokens[skip:])
            self._advance(count)
        return tokens

    def _send(self, first: int, part: list[bytes], blinded: tuple[list[bytes], list[bytes]]) -> Future[Tokens]:
        """Evaluate one batch at its slot; the future verifies and finalizes it."""
        blinds, elements = blinded
        plan = self._plan
        answer = self._client.evaluate(
            self._view.request_id, plan.connector, EvaluationBatch(first_row=first, blinded_elements=elements)
        )
        if answer.epoch != plan.epoch:
            raise ProofError(f"connector {plan.connector} evaluated under an unexpected epoch")
        return self._pool.submit(
            _finalize,
            part,
            blinds,
            answer.evaluated_elements,
            elements,
            answer.proof,
            plan.public_key,
            plan.capabilities,
        )

    def _again(self, first: int, part: list[bytes]) -> Tokens:
        """Report a batch whose proof failed and evaluate it again while its slot allows."""
        plan, request_id = self._plan, self._view.request_id
        while True:
            failure = EvaluationFailure(first_row=first, count=len(part), reason=FailureReason.PROOF_FAILED)
            slot = self._client.report_failure(request_id, plan.connector, failure)
            if slot.attempts >= self._view.max_batch_attempts:
                raise ProofError(
                    f"connector {plan.connector}'s evaluations of rows {first}–{first + len(part) - 1} did not "
                    f"verify {slot.attempts} times; each failure was reported to the gateway. Resume later with "
                    f"--request-id {request_id}, or cancel the request (xiezhi requests cancel --request-id "
                    f"{request_id})",
                    code="proof_failed",
                )
            try:
                return self._send(first, part, self._pool.submit(_blind, part).result()).result()
            except ProofError:
                continue


Tokens = dict[str, list[bytes]]


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
) -> Tokens:
    outputs = oprf.finalize(inputs, blinds, evaluated, blinded, proof, public_key, oprf.Mode.VOPRF)
    return {capability: [derive_token(output, capability) for output in outputs] for capability in capabilities}
