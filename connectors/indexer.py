"""Building capability indexes: query, normalise, reduce, evaluate, derive tokens.

For each capability the agency's query yields evidence rows; `reduce_rows` turns them into
subjects. Every distinct subject is evaluated once under the epoch key (RFC 9497
Evaluate), in parallel over the machine's cores, and its token for each capability it
satisfies is HKDF(O(y), "xiezhi/token/v1/" + capability)[:16]. The result holds tokens and
counts only.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice

from sqlalchemy import Connection

from connectors.config import Capability, ConnectorConfig
from connectors.engines import Engine, LocalEngine
from connectors.reduce import Reduced, reduce_rows
from connectors.source import agency_database, evidence_chunks
from xiezhi import oprf
from xiezhi.crypto import derive_token
from xiezhi.ids import SubjectId

CHUNK = 2_000

# (OPRF input, the capabilities its subject satisfies)
Item = tuple[bytes, tuple[str, ...]]

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
    engine: Engine | None = None,
) -> BuiltIndex:
    """Build every capability's token set under `key`.

    `progress(total)` is called once with the number of subjects to evaluate and returns a
    callback that receives the count of each finished chunk. `engine` evaluates (default: the
    local process pool of `workers` processes).
    """
    reduced = collect(config)
    members: dict[SubjectId, list[str]] = {}
    for capability_id, result in reduced.items():
        for subject in result.subjects:
            members.setdefault(subject, []).append(capability_id)
    items = [(subject.oprf_input(), tuple(caps)) for subject, caps in members.items()]
    advance = progress(len(items)) if progress else (lambda _n: None)
    tokens: dict[str, list[bytes]] = {c.id: [] for c in config.capabilities}
    for chunk_tokens in evaluate_tokens(key.sk, items, workers=workers, advance=advance, engine=engine):
        for capability_id, token in chunk_tokens:
            tokens[capability_id].append(token)
    indexes = tuple(
        CapabilityIndex(c, tuple(sorted(tokens[c.id])), reduced[c.id].rows, reduced[c.id].invalid_rows)
        for c in config.capabilities
    )
    return BuiltIndex(config.connector, epoch, key.pk, indexes, len(items))


def evaluate_tokens(
    sk: bytes,
    items: Iterable[Item],
    *,
    workers: int | None = None,
    advance: Progress = lambda _n: None,
    engine: Engine | None = None,
) -> Iterator[list[tuple[str, bytes]]]:
    """Yield, chunk by chunk, (capability, token) pairs for (oprf input, capabilities) items.

    `items` is read lazily, CHUNK at a time; `engine` runs the evaluation (default: the local
    process pool of `workers` processes)."""
    yield from evaluate_chunks(sk, _chunked(items), advance=advance, engine=engine or LocalEngine(workers))


def evaluate_chunks(
    sk: bytes,
    chunks: Iterable[Sequence[Item]],
    *,
    advance: Progress = lambda _n: None,
    engine: Engine | None = None,
) -> Iterator[list[tuple[str, bytes]]]:
    """Yield each chunk's (capability, token) pairs, in the chunks' order, as `engine` evaluates
    them (default: the local process pool); `advance(len(chunk))` after each."""
    sizes: deque[int] = deque()

    def counted() -> Iterator[Sequence[Item]]:
        for chunk in chunks:
            sizes.append(len(chunk))
            yield chunk

    for result in (engine or LocalEngine()).map(_tokens_for, sk, counted()):
        yield result
        advance(sizes.popleft())


def _chunked(items: Iterable[Item]) -> Iterator[list[Item]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, CHUNK)):
        yield chunk


def _tokens_for(sk: bytes, chunk: Sequence[Item]) -> list[tuple[str, bytes]]:
    # Module level and pure: a process pool or a Ray worker imports it by name.
    outputs = oprf.evaluate_batch(sk, [item[0] for item in chunk], oprf.Mode.VOPRF)
    return [(cap, derive_token(output, cap)) for output, (_, caps) in zip(outputs, chunk, strict=True) for cap in caps]
