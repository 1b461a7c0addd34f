"""Token lookup, one batch at a time: check it, find its tokens, turn matches into flags.

A batch gives, for each capability the model looks up, one token per row. Tokens are
looked for only in the indexes the request's plan pinned, as keyed digests
(`gateway.indexes.present`), under the permit authorization issued for the request. Each
row then gets the model's clue (its rule over every capability's match) and the flags of
the capabilities the model reveals; nothing else about a row leaves the gateway.
"""

from __future__ import annotations

from sqlmodel import Session

from gateway import indexes
from gateway.authz import AuthorizedRequest
from gateway.db import MatchRequest
from gateway.request_plan import RequestPlan
from gateway.vault import Vault
from xiezhi.errors import Conflict, InvalidInput
from xiezhi.supervision import SupervisionModel
from xiezhi.wire import Capability, LookupBatch, RowFlags


def check_batch(
    request: MatchRequest, model: SupervisionModel, batch: LookupBatch, evaluated: list[int], max_batch: int
) -> int:
    """The batch's number of rows, once it fits the request where it stands.

    `evaluated` holds the elements evaluated so far at each pinned connector: every one must
    have evaluated the whole list first. Rows come in order, each exactly once.
    """
    if set(batch.tokens) != set(model.looks_up):
        raise InvalidInput("tokens must be given for exactly the model's capabilities", code="capabilities_mismatch")
    lengths = {len(tokens) for tokens in batch.tokens.values()}
    if len(lengths) != 1:
        raise InvalidInput("every capability needs one token per row", code="ragged_tokens")
    rows = lengths.pop()
    if rows > max_batch:
        raise InvalidInput(f"a batch holds at most {max_batch} rows", code="batch_too_large")
    if any(count < request.subject_count for count in evaluated):
        raise Conflict("blind evaluation is not complete for every connector", code="evaluation_incomplete")
    if batch.first_row != request.rows_looked_up:
        raise Conflict(f"expected first_row {request.rows_looked_up}", code="row_out_of_order")
    if batch.first_row + rows > request.subject_count:
        raise Conflict("rows beyond the request's subject count", code="subject_count_exceeded")
    return rows


def find(
    session: Session,
    vault: Vault,
    permit: AuthorizedRequest,
    plan: RequestPlan,
    model: SupervisionModel,
    batch: LookupBatch,
) -> dict[Capability, set[bytes]]:
    """Per capability, which of the batch's tokens its pinned index holds."""
    return {
        capability: indexes.present(session, vault, permit, plan.publication(capability), batch.tokens[capability])
        for capability in model.looks_up
    }


def flag_rows(model: SupervisionModel, batch: LookupBatch, hits: dict[Capability, set[bytes]]) -> list[RowFlags]:
    """Each row's clue under the model's rule, and the flags of the capabilities it reveals."""
    rows = len(batch.tokens[model.looks_up[0]])
    matched: list[dict[str, bool]] = [
        {capability: batch.tokens[capability][i] in hits[capability] for capability in model.looks_up}
        for i in range(rows)
    ]
    return [
        RowFlags(
            row=batch.first_row + i,
            clue=model.clue.evaluate(flags),
            flags={capability: flags[capability] for capability in model.reveals},
        )
        for i, flags in enumerate(matched)
    ]


__all__ = ["check_batch", "find", "flag_rows"]
