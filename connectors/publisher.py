"""Publishing a built index to the gateway: start, chunks in order, commit; then activate.
A delta to a committed publication: start (naming its base), chunks of added tokens, chunks
of removed tokens, commit (the gateway applies it as the base's next version).

Every failure becomes a ConnectorError naming the step and the gateway's reason code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import httpx

from connectors.config import Capability as ConfiguredCapability
from connectors.indexer import BuiltIndex
from xiezhi.errors import ConnectorError
from xiezhi.tls import TLSFiles, check_scheme, verification
from xiezhi.wire import Capability, CapabilityDescriptor, PublicationView, StartPublication, b64encode

CHUNK_TOKENS = 50_000


class Publisher:
    def __init__(
        self, gateway_url: str, token: str, *, tls: TLSFiles | None = None, insecure_http: bool = False
    ) -> None:
        """Publish to `gateway_url` presenting the connector's certificate `tls` (mutual TLS)."""
        check_scheme(gateway_url, insecure_http, "gateway")
        self._base = gateway_url.rstrip("/")
        verify = verification(tls)
        self._client = httpx.Client(timeout=120.0, verify=verify)
        self._headers = {"authorization": f"Bearer {token}"}

    def publish(self, built: BuiltIndex, *, activate: bool = True) -> dict[Capability, PublicationView]:
        """Publish every capability's full token set (then activate the epoch); returns each
        capability's committed publication, the base of later deltas."""
        views = {
            index.capability.id: self.publish_set(
                built.connector, built.epoch, built.public_key, index.capability, TokenStream.of(index.tokens)
            )
            for index in built.capabilities
        }
        if activate:
            self.activate(built.connector, built.epoch)
        return views

    def publish_set(
        self, connector: str, epoch: int, public_key: bytes, capability: ConfiguredCapability, tokens: TokenStream
    ) -> PublicationView:
        """Publish `tokens` as `capability`'s whole set for `epoch`, chunk by chunk."""
        path = self._start(connector, _start(epoch, public_key, capability, tokens))
        self._upload(f"{path}/chunks", tokens)
        return PublicationView.model_validate(self._call("commit", "POST", f"{path}/commit"))

    def publish_delta(
        self,
        connector: str,
        epoch: int,
        public_key: bytes,
        capability: ConfiguredCapability,
        base: str,
        added: TokenStream,
        removed: TokenStream,
    ) -> PublicationView:
        """Change the committed publication `base` of `capability`: add `added` and remove
        `removed`, applied by the gateway at once as the base's next version. Returns the
        base's view after it."""
        path = self._start(connector, _start(epoch, public_key, capability, added, base=base, removed=removed))
        self._upload(f"{path}/chunks", added)
        self._upload(f"{path}/removals", removed)
        return PublicationView.model_validate(self._call("commit", "POST", f"{path}/commit"))

    def publication(self, connector: str, publication_id: str) -> PublicationView:
        """The gateway's view of one of this connector's publications (its version, counts)."""
        path = f"/v1/connectors/{connector}/publications/{publication_id}"
        return PublicationView.model_validate(self._call("read", "GET", path))

    def activate(self, connector: str, epoch: int) -> None:
        self._call("activate", "POST", f"/v1/connectors/{connector}/epochs/{epoch}/activate")

    def _start(self, connector: str, start: StartPublication) -> str:
        body = start.model_dump(mode="json")
        body["public_key"] = b64encode(start.public_key)
        view = self._call("start", "POST", f"/v1/connectors/{connector}/publications", json=body)
        return f"/v1/connectors/{connector}/publications/{view['publication_id']}"

    def _upload(self, path: str, tokens: TokenStream) -> None:
        for number, chunk in enumerate(tokens.chunks()):
            self._call(
                "chunk", "PUT", f"{path}/{number}", content=chunk, headers={"content-type": "application/octet-stream"}
            )

    def _call(self, step: str, method: str, path: str, **kwargs: object) -> dict[str, object]:
        headers = {**self._headers, **kwargs.pop("headers", {})}  # type: ignore[dict-item]
        try:
            response = self._client.request(method, self._base + path, headers=headers, **kwargs)  # type: ignore[arg-type]
        except httpx.HTTPError:
            raise ConnectorError(f"publication step '{step}': gateway unreachable") from None
        if response.status_code >= 300:
            code = _problem_code(response)
            raise ConnectorError(
                f"publication step '{step}' refused by the gateway (HTTP {response.status_code}, {code})", code=code
            )
        return response.json()  # type: ignore[no-any-return]


def _problem_code(response: httpx.Response) -> str:
    try:
        return str(response.json().get("code", "unknown"))
    except ValueError:
        return "unknown"


@dataclass(frozen=True)
class TokenStream:
    """A sorted run of distinct tokens, known by count and SHA-256 digest, read in chunks of
    at most CHUNK_TOKENS as often as needed (`chunks` reads from the start each time)."""

    count: int
    digest: str
    chunks: Callable[[], Iterator[bytes]]

    @classmethod
    def of(cls, tokens: Sequence[bytes]) -> TokenStream:
        ordered = sorted(tokens)

        def chunks() -> Iterator[bytes]:
            for first in range(0, len(ordered), CHUNK_TOKENS):
                yield b"".join(ordered[first : first + CHUNK_TOKENS])

        return cls(len(ordered), hashlib.sha256(b"".join(ordered)).hexdigest(), chunks)


def _start(
    epoch: int,
    public_key: bytes,
    capability: ConfiguredCapability,
    tokens: TokenStream,
    *,
    base: str | None = None,
    removed: TokenStream | None = None,
) -> StartPublication:
    return StartPublication(
        epoch=epoch,
        public_key=public_key,
        capability=CapabilityDescriptor(id=capability.id, title=capability.title, tier=capability.tier),
        token_count=tokens.count,
        digest=tokens.digest,
        base=base,
        removed_count=removed.count if removed else 0,
        removed_digest=removed.digest if removed else None,
    )
