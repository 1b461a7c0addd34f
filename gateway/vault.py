"""What the gateway keeps sealed, and the context each sealed value is bound to.

Every value here is sealed with `gateway.sealing.Sealer` (AES-256-GCM under a wrapped data
key) with a context naming its table and the row it belongs to, so a blob moved to another
publication, chunk, request or batch does not open:

- a publication's lookup key (32 random bytes): `{table: publications, field: lookup_key,
  publication, connector}`. Published tokens are stored as HMAC-SHA256 digests under it, so
  the index table alone, without the keyring, links no digest to a token;
- each uploaded chunk of a publication's tokens: `{table: index_chunks, publication,
  connector, chunk}`, read back once, when the commit recounts and re-digests;
- each lookup batch's flags, with the SHA-256 digest of the batch's tokens that a repeated
  lookup is compared with: `{table: result_batches, request, first_row}`. Batches sealed
  before the digest was kept open with none.
"""

from __future__ import annotations

import base64
import hmac
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass

from gateway.db import Publication
from gateway.sealing import Sealer, SealError
from xiezhi.crypto import random_key
from xiezhi.errors import Unavailable
from xiezhi.wire import TOKEN_BYTES, RowFlags

DIGEST_BYTES = 16


@dataclass(frozen=True)
class StoredBatch:
    """One lookup batch as stored: its rows' flags and its tokens' digest (None if sealed without)."""

    rows: list[RowFlags]
    tokens_digest: bytes | None


class Vault:
    """Seals and opens the gateway's stored values. Thread-safe; one per process."""

    def __init__(self, sealer: Sealer, cache_size: int = 4096) -> None:
        self._sealer = sealer
        self._lookup_keys: OrderedDict[str, bytes] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @property
    def sealer(self) -> Sealer:
        return self._sealer

    # ---- capability indexes ------------------------------------------------------------

    def new_lookup_key(self, publication_id: str, connector: str) -> bytes:
        """A fresh lookup key for a new publication, sealed for its row."""
        return self._sealer.seal(random_key(), _lookup_context(publication_id, connector))

    def digests(self, publication: Publication, tokens: list[bytes]) -> list[bytes]:
        """Each token's keyed digest under the publication's lookup key, in order."""
        key = self._lookup_key(publication)
        return [hmac.digest(key, token, "sha256")[:DIGEST_BYTES] for token in tokens]

    def seal_chunk(self, publication: Publication, number: int, data: bytes, kind: str = "added") -> bytes:
        return self._sealer.seal(data, _chunk_context(publication, number, kind))

    def open_chunk(self, publication: Publication, number: int, sealed: bytes, kind: str = "added") -> list[bytes]:
        """The tokens of chunk `number` (of the added tokens, or of those a delta removes).
        Raises Unavailable if it does not open (damaged or moved)."""
        data = _opened(self._sealer, sealed, _chunk_context(publication, number, kind), "an index chunk")
        return [data[i : i + TOKEN_BYTES] for i in range(0, len(data), TOKEN_BYTES)]

    def forget(self, publication_id: str) -> None:
        """Drop a deleted publication's lookup key from memory."""
        with self._lock:
            self._lookup_keys.pop(publication_id, None)

    # ---- results ------------------------------------------------------------------------

    def seal_results(self, request_id: str, first_row: int, rows: list[RowFlags], tokens_digest: bytes) -> bytes:
        batch = {
            "rows": [[r.clue, r.flags] for r in rows],  # flags in reveal order
            "tokens_digest": base64.b64encode(tokens_digest).decode("ascii"),
        }
        plain = json.dumps(batch, separators=(",", ":"))
        return self._sealer.seal(plain.encode("utf-8"), _result_context(request_id, first_row))

    def open_batch(self, request_id: str, first_row: int, sealed: bytes) -> StoredBatch:
        """One sealed lookup batch. Raises Unavailable if it does not open."""
        plain = json.loads(_opened(self._sealer, sealed, _result_context(request_id, first_row), "a result batch"))
        # A list: a batch sealed before the tokens' digest was kept.
        rows, digest = (plain, None) if isinstance(plain, list) else (plain["rows"], plain["tokens_digest"])
        return StoredBatch(
            rows=[RowFlags(row=first_row + i, clue=clue, flags=flags) for i, (clue, flags) in enumerate(rows)],
            tokens_digest=None if digest is None else base64.b64decode(digest),
        )

    def _lookup_key(self, publication: Publication) -> bytes:
        with self._lock:
            key = self._lookup_keys.get(publication.id)
            if key is not None:
                self._lookup_keys.move_to_end(publication.id)
                return key
        context = _lookup_context(publication.id, publication.connector)
        key = _opened(self._sealer, publication.lookup_key, context, "an index lookup key")
        with self._lock:
            self._lookup_keys[publication.id] = key
            while len(self._lookup_keys) > self._cache_size:
                self._lookup_keys.popitem(last=False)
        return key


def _opened(sealer: Sealer, sealed: bytes, context: dict[str, str], what: str) -> bytes:
    try:
        return sealer.open(sealed, context)
    except SealError:
        # Stored data that does not open is damage (or a row moved), never the caller's fault.
        raise Unavailable(f"{what} could not be opened", code="sealed_data_unreadable") from None


def _lookup_context(publication_id: str, connector: str) -> dict[str, str]:
    return {"table": "publications", "field": "lookup_key", "publication": publication_id, "connector": connector}


def _chunk_context(publication: Publication, number: int, kind: str) -> dict[str, str]:
    # An added chunk's context is what it was before deltas: stored chunks still open.
    return {
        "table": "index_chunks",
        "publication": publication.id,
        "connector": publication.connector,
        "chunk": str(number) if kind == "added" else f"{kind}/{number}",
    }


def _result_context(request_id: str, first_row: int) -> dict[str, str]:
    return {"table": "result_batches", "request": request_id, "first_row": str(first_row)}
