"""Building capability indexes: query, normalise, reduce, evaluate, derive tokens.

For each capability the agency's query yields evidence rows; `reduce_rows` turns them into
subjects. Every distinct subject is evaluated once under the epoch key (RFC 9497
Evaluate), in parallel over the machine's cores, and its token for each capability it
satisfies is HKDF(O(y), "xiezhi/token/v1/" + capability)[:16]. The result holds tokens and
counts only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection

from connectors.config import Capability, ConnectorConfig
from connectors.reduce import Reduced, reduce_rows
from connectors.source import agency_database, evidence_chunks
from xiezhi import oprf
from xiezhi.crypto import derive_token
from xiezhi.ids import SubjectId
from xiezhi.parallel import executor_for

CHUNK = 2_000

Progress = Callable[[int], None]


@dataclass(frozen=True)
class CapabilityIndex:
    capability: Capability
    tokens: tuple[bytes, ...]  # sorted, distinct
    rows: int
    invalid_rows: int

    @property
    def digest(self) -> str:
        return hashlib.sha256(b"".join(self.tokens)).hexdigest()


@dataclass(frozen=True)
class BuiltIndex:
    connector: str
    epoch: int
    public_key: bytes
    capabilities: tuple[CapabilityIndex, ...]
    subjects: int


def collect(config: ConnectorConfig) -> dict[str, Reduced]:
    """Run every capability's query against the agency database and reduce its rows.

    Raises InvalidInput or Unavailable as `connectors.source` translates driver errors."""
    with agency_database(config) as connection:
        return {c.id: _collect_one(connection, c) for c in config.capabilities}


def _collect_one(connection: Connection, capability: Capability) -> Reduced:
    rows = (row for chunk in evidence_chunks(connection, capability) for row in chunk)
    return reduce_rows(rows, capability.reduce)


def build(
    config: ConnectorConfig,
    key: oprf.KeyPair,
    epoch: int,
    *,
    workers: int | None = None,
    progress: Callable[[int], Progress] | None = None,
) -> BuiltIndex:
    """Build every capability's token set under `key`.

    `progress(total)` is called once with the number of subjects to evaluate and returns a
    callback that receives the count of each finished chunk.
    """
    reduced = collect(config)
    members: dict[SubjectId, list[str]] = {}
    for capability_id, result in reduced.items():
        for subject in result.subjects:
            members.setdefault(subject, []).append(capability_id)
    items = [(subject.oprf_input(), tuple(caps)) for subject, caps in members.items()]
    advance = progress(len(items)) if progress else (lambda _n: None)
    tokens: dict[str, list[bytes]] = {c.id: [] for c in config.capabilities}
    for chunk_tokens in evaluate_tokens(key.sk, items, workers=workers, advance=advance):
        for capability_id, token in chunk_tokens:
            tokens[capability_id].append(token)
    indexes = tuple(
        CapabilityIndex(c, tuple(sorted(tokens[c.id])), reduced[c.id].rows, reduced[c.id].invalid_rows)
        for c in config.capabilities
    )
    return BuiltIndex(config.connector, epoch, key.pk, indexes, len(items))


def evaluate_tokens(
    sk: bytes,
    items: Sequence[tuple[bytes, tuple[str, ...]]],
    *,
    workers: int | None = None,
    advance: Progress = lambda _n: None,
) -> Iterator[list[tuple[str, bytes]]]:
    """Yield, chunk by chunk, (capability, token) pairs for (oprf input, capabilities) items."""
    chunks = [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]
    with executor_for(len(items), workers) as pool:
        for chunk, result in zip(chunks, pool.map(_tokens_for, [sk] * len(chunks), chunks), strict=True):
            yield result
            advance(len(chunk))


def _tokens_for(sk: bytes, chunk: Sequence[tuple[bytes, tuple[str, ...]]]) -> list[tuple[str, bytes]]:
    outputs = oprf.evaluate_batch(sk, [item[0] for item in chunk], oprf.Mode.VOPRF)
    return [(cap, derive_token(output, cap)) for output, (_, caps) in zip(outputs, chunk, strict=True) for cap in caps]
