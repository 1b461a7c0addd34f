"""A connector's index build: bounded in memory, incremental, resumable.

    scan      each capability's query streamed in chunks (connectors.source); a row the
              published build already read (same keyed digest) is taken from the state as
              it was, only a new row's ID is normalised; everything goes to the state file,
              not to memory. Where the agency's database can digest rows itself
              (PostgreSQL, MySQL, MariaDB: connectors.row_digests), a rebuild reads only
              the digests, bucketed by prefix, compares them with the published ones,
              and reads whole only the rows that are new
    diff      per capability, the subjects whose rows changed (a row new or gone) are reduced
              again; those that became members are to add, those that stopped, to remove
    evaluate  the subjects to add, in chunks in subject order, under the epoch key (RFC 9497
              Evaluate, on the local process pool or an engine the caller gives); each chunk's
              tokens are stored before the next starts
    publish   per capability: the whole set when the gateway holds none of this epoch (a
              first build, or a new epoch: a full rebuild), else a delta (tokens added and
              removed) that the gateway applies at once; then the state takes the result

Every step records its progress in the state (`connectors.build_state`), so a build killed
anywhere runs again from the last completed chunk and publishes exactly what a clean build
would. A capability's query has no position to resume from: one killed during its scan is
read again from the start.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Connection

from connectors import row_digests
from connectors.build_state import BuildState, state_key
from connectors.config import Capability, ConnectorConfig, DistinctKeys, LatestValue
from connectors.engines import Engine
from connectors.indexer import evaluate_tokens
from connectors.publisher import TokenStream
from connectors.reduce import holds
from connectors.source import agency_database, evidence_chunks
from xiezhi import oprf
from xiezhi.errors import InvalidIdentifier
from xiezhi.ids import normalise_subject_id
from xiezhi.wire import PublicationView

SCAN_CHUNK = 5_000
MERGE_NEW_ROWS = 200_000  # past this many new rows, a scan reads every row rather than pick them
EVALUATE_CHUNK = 20_000  # subjects per stored step; the engine splits it further
ADD, REMOVE = "add", "remove"
# A row's content as the state keeps it: JSON, dates and decimals as their text. One encoder
# for every row (json.dumps with options builds a new one per call).
_JSON = json.JSONEncoder(default=str, ensure_ascii=False, separators=(",", ":"))

Hook = Callable[[str], None]  # called with the name of each step as it completes (tests stop a build there)


class IndexPublisher(Protocol):
    """What the build needs of the gateway (`connectors.publisher.Publisher`)."""

    def publish_set(
        self, connector: str, epoch: int, public_key: bytes, capability: Capability, tokens: TokenStream
    ) -> PublicationView: ...

    def publish_delta(
        self,
        connector: str,
        epoch: int,
        public_key: bytes,
        capability: Capability,
        base: str,
        added: TokenStream,
        removed: TokenStream,
    ) -> PublicationView: ...

    def publication(self, connector: str, publication_id: str) -> PublicationView: ...

    def activate(self, connector: str, epoch: int) -> None: ...


@dataclass(frozen=True)
class CapabilityReport:
    capability: Capability
    rows: int
    invalid_rows: int
    tokens: int  # the capability's set after the build
    added: int
    removed: int
    full: bool  # published whole (no earlier publication in this epoch)


@dataclass(frozen=True)
class BuildReport:
    connector: str
    epoch: int
    subjects: int  # evaluated in this build
    capabilities: tuple[CapabilityReport, ...]


def state_path(state_dir: Path, connector: str, epoch: int) -> Path:
    return state_dir / f"{connector}-epoch-{epoch:04d}.sqlite"


def build_and_publish_incremental(
    config: ConnectorConfig,
    key: oprf.KeyPair,
    epoch: int,
    state_dir: Path,
    publisher: IndexPublisher,
    *,
    workers: int | None = None,
    hook: Hook = lambda _step: None,
    progress: Callable[[int], None] = lambda _n: None,
    engine: Engine | None = None,
) -> BuildReport:
    """Build `config`'s indexes under `key` and bring the gateway's copy of epoch `epoch` up to
    date (whole sets the first time, deltas after), resuming a run that stopped."""
    state = BuildState(state_path(state_dir, config.connector, epoch), state_key(key.sk))
    try:
        counts: dict[str, int] = {}
        for capability in config.capabilities:  # each whole before the next: the scan's index is per run
            counts[capability.id] = _scan(state, config, capability, hook)
            _diff(state, capability, hook)
        evaluated = _evaluate(state, key.sk, workers, hook, progress, engine)
        reports = tuple(
            _publish(state, publisher, config.connector, epoch, key.pk, c, counts[c.id], hook)
            for c in config.capabilities
        )
        if any(r.full for r in reports) and state.done("activated") is None:
            publisher.activate(config.connector, epoch)  # a new epoch's sets are all in
            state.mark("activated")
            hook("activated")
        state.finish_run()
        return BuildReport(config.connector, epoch, evaluated, reports)
    finally:
        state.close()


# ---- scan ------------------------------------------------------------------------------------


def _scan(state: BuildState, config: ConnectorConfig, capability: Capability, hook: Hook) -> int:
    """Read `capability`'s rows and sort out which are new (normalised into the state) and
    which are gone; returns the rows read."""
    step = f"scanned:{capability.id}"
    done = state.done(step)
    if done is None and state.done(f"published:{capability.id}") is None:
        state.start_scan(capability.id)
        with agency_database(config) as connection:
            rows = _read(state, connection, capability)
        state.mark(step, rows)
        hook(step)
        return rows
    return 0 if done is None else done[0]


def _read(state: BuildState, connection: Connection, capability: Capability) -> int:
    """Where the agency's database can digest rows (`connectors.row_digests`), an earlier
    build's rows are compared by digest alone, bucket by bucket, and only the new rows are
    read whole; failing that (too many new rows), or on a first build, every row is
    read with its digest; elsewhere rows are read whole and digested here."""
    if not row_digests.supported(connection):
        chunks = evidence_chunks(connection, capability, chunk_rows=SCAN_CHUNK)
        return _scan_all(state, capability, (_digested(state, capability.id, chunk) for chunk in chunks))
    key = state.row_key(capability.id)
    if state.has_rows(capability.id):
        merged = _merge(state, connection, capability, key)
        if merged is not None:
            rows, new = merged
            picked = row_digests.rows_with_digests(connection, capability, key, new, chunk_rows=SCAN_CHUNK)
            _read_new_rows(state, capability, _distinct(_contents(picked)))
            return rows
        state.start_scan(capability.id)  # too many new rows to pick: read them all
    every = row_digests.rows_with_digests(connection, capability, key, chunk_rows=SCAN_CHUNK)
    return _scan_all(state, capability, _contents(every))


def _scan_all(state: BuildState, capability: Capability, chunks: Iterable[list[tuple[bytes, str]]]) -> int:
    """Every row (digest, content) into the scan; then the new ones normalised, the gone ones found."""
    rows = 0
    for chunk in chunks:
        rows += len(chunk)
        state.add_scan(chunk)
    state.end_scan()
    _read_new_rows(state, capability, state.new_rows(capability.id))
    with state.transaction():
        state.find_gone(capability.id)
    return rows


def _merge(
    state: BuildState, connection: Connection, capability: Capability, key: bytes
) -> tuple[int, list[bytes]] | None:
    """Compare the database's row digests with the published ones, bucket by bucket (each
    bucket the digests of one two-byte prefix; the published ones come in order): the gone
    rows go to the state; returns (rows read, the new rows' digests), or None past
    `MERGE_NEW_ROWS` new rows (picking that many by digest costs more than reading every row)."""
    published = state.published_rows(capability.id)
    held = next(published, None)
    rows, new = 0, list[bytes]()
    gone = _Gone(state, capability.id)
    width = row_digests.PREFIX_BYTES
    for bucket in row_digests.digests(connection, capability, key):
        rows += len(bucket)
        prefix = bucket[0][:width]
        while held is not None and held[:width] < prefix:
            gone.add(held)
            held = next(published, None)
        here = set()
        while held is not None and held[:width] == prefix:
            here.add(held)
            held = next(published, None)
        present = set(bucket)  # a row held twice is one row
        new += present - here
        for row in here - present:
            gone.add(row)
        if len(new) > MERGE_NEW_ROWS:
            return None
    while held is not None:
        gone.add(held)
        held = next(published, None)
    gone.flush()
    return rows, new


class _Gone:
    """Published rows found gone, written to the state a page at a time."""

    def __init__(self, state: BuildState, capability: str) -> None:
        self._state, self._capability, self._rows = state, capability, list[bytes]()

    def add(self, row: bytes) -> None:
        self._rows.append(row)
        if len(self._rows) >= SCAN_CHUNK:
            self.flush()

    def flush(self) -> None:
        self._state.add_gone(self._capability, self._rows)
        self._rows = []


def _contents(chunks: Iterable[list[tuple[bytes, tuple[Any, ...]]]]) -> Iterator[list[tuple[bytes, str]]]:
    encode = _JSON.encode
    for chunk in chunks:
        yield [(digest, encode(row)) for digest, row in chunk]


def _distinct(chunks: Iterable[list[tuple[bytes, str]]]) -> Iterator[tuple[bytes, str]]:
    """Each row once (the database gives a row held twice twice; the scan keeps it once)."""
    seen: set[bytes] = set()
    for chunk in chunks:
        for digest, content in chunk:
            if digest not in seen:
                seen.add(digest)
                yield digest, content


def _digested(state: BuildState, capability: str, chunk: list[tuple[Any, ...]]) -> list[tuple[bytes, str]]:
    """Each row as the state keeps it while the run lasts: a keyed digest of its content and
    the content as JSON (dates and decimals as their text)."""
    prefix = capability.encode("utf-8") + b"\x1f"
    keyed, encode = state.keyed, _JSON.encode
    contents = [encode(row) for row in chunk]
    return [(keyed(prefix + content.encode("utf-8")), content) for content in contents]


def _read_new_rows(state: BuildState, capability: Capability, rows: Iterable[tuple[bytes, str]]) -> None:
    """Normalise the rows the published build did not read (all of them on a first build)."""
    batch: list[tuple[str, bytes, bytes | None, object, bytes]] = []
    subjects: dict[object, bytes | None] = {}  # raw ID → subject within a batch (IDs repeat)
    sealed: dict[bytes, bytes] = {}
    for digest, content in rows:
        row = json.loads(content)
        if row[0] not in subjects:
            subjects[row[0]] = _subject(state, row[0], sealed)
        key = _kept_key(state, capability, row[1] if len(row) > 1 else None)
        value = state.digest("value", row[2] if len(row) > 2 else None)
        batch.append((capability.id, digest, subjects[row[0]], key, value))
        if len(batch) >= SCAN_CHUNK:
            _store_fresh(state, batch, sealed)
            batch, subjects, sealed = [], {}, {}
    _store_fresh(state, batch, sealed)
    with state.transaction():
        state.end_fresh()


def _store_fresh(
    state: BuildState, batch: list[tuple[str, bytes, bytes | None, object, bytes]], sealed: dict[bytes, bytes]
) -> None:
    with state.transaction():
        state.add_subjects(sealed.items())
        state.add_fresh(batch)


def _subject(state: BuildState, raw: object, sealed: dict[bytes, bytes]) -> bytes | None:
    """A new row's subject: its ID normalised as the requester's client does, keyed; None for
    an ID that fails (the row is counted, never indexed, never "fixed")."""
    try:
        if not isinstance(raw, str):
            raise InvalidIdentifier("证件号码为空", code="empty")
        oprf_input = normalise_subject_id(raw).oprf_input()
    except InvalidIdentifier:
        return None
    subject = state.keyed(b"subject\x1f" + oprf_input)
    if subject not in sealed:
        sealed[subject] = state.seal(subject, oprf_input)
    return subject


def _kept_key(state: BuildState, capability: Capability, key: object) -> object:
    if key is None or capability.reduce is None:
        return None
    if isinstance(capability.reduce, DistinctKeys):
        return state.digest("key", key)  # only distinctness counts
    return key  # ordered: a date (as its ISO text) or a number


# ---- diff ------------------------------------------------------------------------------------


def _diff(state: BuildState, capability: Capability, hook: Hook) -> None:
    step = f"diffed:{capability.id}"
    if state.done(step) is not None or state.done(f"published:{capability.id}") is not None:
        return
    reduction = capability.reduce
    if isinstance(reduction, LatestValue):  # values are kept keyed: compare keyed
        reduction = LatestValue(latest_value_is=state.digest("value", reduction.latest_value_is).hex())
    published = state.member_count(capability.id) > 0  # none on a first build: nothing to look up
    with state.transaction():  # the changes and the step's mark together
        batch: list[tuple[str, bytes, str, bytes | None]] = []
        for subject, evidence in state.affected(capability.id):
            keyed = [(key, value.hex() if isinstance(value, bytes) else value) for key, value in evidence]
            member = bool(keyed) and holds(keyed, reduction)
            token = state.member_token(capability.id, subject) if published else None
            if member and token is None:
                batch.append((capability.id, subject, ADD, None))
            elif not member and token is not None:
                batch.append((capability.id, subject, REMOVE, token))
            if len(batch) >= SCAN_CHUNK:
                state.add_changes(batch)
                batch = []
        state.add_changes(batch)
        state.mark(step)
    hook(step)


# ---- evaluate --------------------------------------------------------------------------------


def _evaluate(
    state: BuildState,
    sk: bytes,
    workers: int | None,
    hook: Hook,
    progress: Callable[[int], None],
    engine: Engine | None = None,
) -> int:
    evaluated = 0
    after = b""
    while chunk := state.unevaluated(after, EVALUATE_CHUNK):
        items = [(oprf_input, tuple(caps)) for _, oprf_input, caps in chunk]
        pairs = [pair for part in evaluate_tokens(sk, items, workers=workers, engine=engine) for pair in part]
        subjects = [subject for subject, _, caps in chunk for _ in caps]
        state.set_tokens(
            (token, capability, subject) for subject, (capability, token) in zip(subjects, pairs, strict=True)
        )
        evaluated += len(chunk)
        after = chunk[-1][0]
        progress(len(chunk))
        hook("evaluated-chunk")
    return evaluated


# ---- publish ---------------------------------------------------------------------------------


def _publish(
    state: BuildState,
    publisher: IndexPublisher,
    connector: str,
    epoch: int,
    public_key: bytes,
    capability: Capability,
    rows: int,
    hook: Hook,
) -> CapabilityReport:
    step = f"published:{capability.id}"
    base = state.base(capability.id)
    added, removed = state.changed_tokens(capability.id, ADD), state.changed_tokens(capability.id, REMOVE)
    if state.done(step) is None:
        if base is None:
            view = publisher.publish_set(connector, epoch, public_key, capability, added)
            state.commit_capability(capability.id, view.publication_id, view.version, full=True)
        else:
            _publish_delta(state, publisher, connector, epoch, public_key, capability, base, added, removed)
        hook(step)
    full = state.done(f"full:{capability.id}") is not None
    return CapabilityReport(
        capability, rows, state.invalid(capability.id), state.member_count(capability.id), added.count,
        removed.count, full,
    )  # fmt: skip


def _publish_delta(
    state: BuildState,
    publisher: IndexPublisher,
    connector: str,
    epoch: int,
    public_key: bytes,
    capability: Capability,
    base: tuple[str, int],
    added: TokenStream,
    removed: TokenStream,
) -> None:
    publication, version = base
    if not added.count and not removed.count:
        state.commit_capability(capability.id, publication, version)
        return
    # A run killed after the gateway applied its delta and before the state took it: the
    # gateway's version is past the one the state knows, and the delta must not go twice.
    sent = state.done(f"sent:{capability.id}")
    if sent is not None and publisher.publication(connector, publication).version > version:
        state.commit_capability(capability.id, publication, version + 1)
        return
    state.mark(f"sent:{capability.id}", detail=added.digest)
    view = publisher.publish_delta(connector, epoch, public_key, capability, publication, added, removed)
    state.commit_capability(capability.id, publication, view.version)
