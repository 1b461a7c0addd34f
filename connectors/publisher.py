"""Publishing a built index to the gateway: start, chunks in order, commit; then activate.
A delta to a committed publication: start (naming its base), chunks of added tokens, chunks
of removed tokens, commit (the gateway applies it as the base's next version).

Every failure becomes a ConnectorError naming the step and the gateway's reason code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import httpx

from connectors.config import Capability as ConfiguredCapability
from connectors.indexer import BuiltIndex, CapabilityIndex
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
        views = {index.capability.id: self._publish_one(built, index) for index in built.capabilities}
        if activate:
            self._call("activate", "POST", f"/v1/connectors/{built.connector}/epochs/{built.epoch}/activate")
        return views

    def _publish_one(self, built: BuiltIndex, index: CapabilityIndex) -> PublicationView:
        start = StartPublication(
            epoch=built.epoch,
            public_key=built.public_key,
            capability=CapabilityDescriptor(
                id=index.capability.id, title=index.capability.title, tier=index.capability.tier
            ),
            token_count=len(index.tokens),
            digest=index.digest,
        )
        body = start.model_dump(mode="json")
        body["public_key"] = b64encode(built.public_key)
        view = self._call("start", "POST", f"/v1/connectors/{built.connector}/publications", json=body)
        path = f"/v1/connectors/{built.connector}/publications/{view['publication_id']}"
        self._upload(f"{path}/chunks", index.tokens)
        return PublicationView.model_validate(self._call("commit", "POST", f"{path}/commit"))

    def publish_delta(
        self,
        built: BuiltIndex,
        index: CapabilityIndex,
        base: str,
        added: Sequence[bytes],
        removed: Sequence[bytes],
    ) -> PublicationView:
        """Change the committed publication `base` of `index`'s capability: add `added` and
        remove `removed` (distinct tokens), applied by the gateway at once as the base's next
        version. Returns the base's view after it."""
        added, removed = sorted(added), sorted(removed)
        start = StartPublication(
            epoch=built.epoch,
            public_key=built.public_key,
            capability=CapabilityDescriptor(
                id=index.capability.id, title=index.capability.title, tier=index.capability.tier
            ),
            token_count=len(added),
            digest=hashlib.sha256(b"".join(added)).hexdigest(),
            base=base,
            removed_count=len(removed),
            removed_digest=hashlib.sha256(b"".join(removed)).hexdigest(),
        )
        body = start.model_dump(mode="json")
        body["public_key"] = b64encode(built.public_key)
        view = self._call("start", "POST", f"/v1/connectors/{built.connector}/publications", json=body)
        path = f"/v1/connectors/{built.connector}/publications/{view['publication_id']}"
        self._upload(f"{path}/chunks", added)
        self._upload(f"{path}/removals", removed)
        return PublicationView.model_validate(self._call("commit", "POST", f"{path}/commit"))

    # ---- what the incremental build calls (connectors.incremental.IndexPublisher) ----------

    def publish_set(
        self, connector: str, epoch: int, public_key: bytes, capability: ConfiguredCapability, tokens: list[bytes]
    ) -> PublicationView:
        """Publish `tokens` (sorted, distinct) as `capability`'s whole set for `epoch`."""
        built, index = _one(connector, epoch, public_key, capability, tuple(tokens))
        return self._publish_one(built, index)

    def publish_delta_of(
        self,
        connector: str,
        epoch: int,
        public_key: bytes,
        capability: ConfiguredCapability,
        base: str,
        added: list[bytes],
        removed: list[bytes],
    ) -> PublicationView:
        built, index = _one(connector, epoch, public_key, capability, ())
        return self.publish_delta(built, index, base, added, removed)

    def publication(self, connector: str, publication_id: str) -> PublicationView:
        """The gateway's view of one of this connector's publications (its version, counts)."""
        path = f"/v1/connectors/{connector}/publications/{publication_id}"
        return PublicationView.model_validate(self._call("read", "GET", path))

    def activate(self, connector: str, epoch: int) -> None:
        self._call("activate", "POST", f"/v1/connectors/{connector}/epochs/{epoch}/activate")

    def _upload(self, path: str, tokens: Sequence[bytes]) -> None:
        for number, first in enumerate(range(0, len(tokens), CHUNK_TOKENS)):
            self._call(
                "chunk",
                "PUT",
                f"{path}/{number}",
                content=b"".join(tokens[first : first + CHUNK_TOKENS]),
                headers={"content-type": "application/octet-stream"},
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


def _one(
    connector: str, epoch: int, public_key: bytes, capability: ConfiguredCapability, tokens: tuple[bytes, ...]
) -> tuple[BuiltIndex, CapabilityIndex]:
    index = CapabilityIndex(capability, tokens, rows=0, invalid_rows=0)
    return BuiltIndex(connector, epoch, public_key, (index,), subjects=0), index
