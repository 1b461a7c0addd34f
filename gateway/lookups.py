"""Token lookup, one batch at a time: check it, find its tokens, turn matches into flags.

A batch gives, for each capability the model looks up, one token per row. Tokens are
looked for only in the indexes the request's plan pinned, as keyed digests
(`gateway.indexes.present`), under the permit authorization issued for the request. Each
row then gets the model's clue (its rule over every capability's match) and the flags of
the capabilities the model reveals; nothing else about a row leaves the gateway.

A lookup batch is stored with its tokens' digest, so a retry of the same batch (an answer
lost on the way, a run resumed) gets the stored flags again and a different batch for the
same rows is refused.
"""

from __future__ import annotations

import hashlib
import hmac

from sqlmodel import Session

from gateway import indexes
from gateway.authz import AuthorizedRequest
from gateway.db import MatchRequest
from gateway.request_plan import RequestPlan
from gateway.vault import StoredBatch, Vault
from xiezhi.errors import Conflict, InvalidInput
from xiezhi.supervision import SupervisionModel
from xiezhi.wire import Capability, LookupBatch, RowFlags


def check_shape(model: SupervisionModel, batch: LookupBatch, max_batch: int) -> int:
    """The batch's number of rows, once it gives one token per row for exactly the model's capabilities."""
    if set(batch.tokens) != set(model.looks_up):
        raise InvalidInput("tokens must be given for exactly the model's capabilities", code="capabilities_mismatch")
    lengths = {len(tokens) for tokens in batch.tokens.values()}
    if len(lengths) != 1:
        raise InvalidInput("every capability needs one token per row", code="ragged_tokens")
    rows = lengths.pop()
    if rows > max_batch:
        raise InvalidInput(f"a batch holds at most {max_batch} rows", code="batch_too_large")
    return rows


def check_order(request: MatchRequest, batch: LookupBatch, rows: int, evaluated: list[int]) -> None:
    """Refuse a new batch that does not fit the request where it stands.

    `evaluated` holds the rows in evaluated batch slots at each pinned connector: every one
    must have evaluated the whole list first. Rows come in order, each exactly once.
    """
    if any(count < request.subject_count for count in evaluated):
        raise Conflict("blind evaluation is not complete for every connector", code="evaluation_incomplete")
    if batch.first_row != request.rows_looked_up:
        raise Conflict(f"expected first_row {request.rows_looked_up}", code="row_out_of_order")
    if batch.first_row + rows > request.subject_count:
        raise Conflict("rows beyond the request's subject count", code="subject_count_exceeded")


def tokens_digest(batch: LookupBatch) -> bytes:
    """SHA-256 over the batch's first row and its tokens, capability by capability.

    It identifies the batch, so that a repeated lookup of the same rows can be told from a
    different one. Tokens are 16 pseudorandom bytes each and the digest is kept only sealed
    with the batch's flags (`gateway.vault`), so it adds nothing a stored token would not."""
    digest = hashlib.sha256(b"xiezhi/lookup-batch/v1\x00" + batch.first_row.to_bytes(8, "big"))
    for capability in sorted(batch.tokens):
        digest.update(capability.encode("ascii") + b"\x00" + len(batch.tokens[capability]).to_bytes(8, "big"))
        digest.update(b"".join(batch.tokens[capability]))
    return digest.digest()


def check_replay(stored: StoredBatch, batch: LookupBatch) -> list[RowFlags]:
    """The stored flags, for a batch that repeats the stored one exactly; Conflict `lookup_mismatch`
    for a different batch at the same first row."""
    if stored.tokens_digest is None or not hmac.compare_digest(stored.tokens_digest, tokens_digest(batch)):
        raise Conflict("other tokens were already looked up for these rows", code="lookup_mismatch")
    return stored.rows


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
        capability: indexes.present(
            session, vault, permit, plan.publication(capability), plan.version(capability), batch.tokens[capability]
        )
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


__all__ = ["check_order", "check_replay", "check_shape", "find", "flag_rows", "tokens_digest"]
