"""The gateway's ticket keys as a connector knows them: a JWK Set from a file or from the gateway.

The connector verifies each relay ticket with the key its header names (`kid`). The keys
come from the gateway's JWK Set, either a file the operator copied or the gateway's
`/.well-known/jwks.json`, fetched over mutual TLS: the connector presents its own
certificate (connector certificates carry the clientAuth usage) and pins the gateway's
name, so only the real gateway can answer.

- An unknown kid triggers a refetch, at most once per `refresh_seconds`; a kid still
  unknown after it is refused by the ticket check (`ticket_key_unknown`).
- A set older than `max_age_seconds` is refetched before use, so a key the gateway has
  pruned or retired stops verifying tickets within that time.
- With a URL nothing is fetched at start: the gateway may start after its connectors.

Every fetch failure, an oversized answer and a malformed set become one `Unavailable`
(`ticket_keys_unavailable`) naming what went wrong, never key material.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import httpx

from xiezhi.crypto import VerifyKey
from xiezhi.errors import InvalidInput, Unavailable
from xiezhi.jwks import parse_jwks
from xiezhi.tls import TRUST_DOMAIN, TLSFiles, check_scheme, gateway_identity, pinned, verification

MAX_JWKS_BYTES = 64 * 1024
FETCH_TIMEOUT_SECONDS = 10.0
_CODE = "ticket_keys_unavailable"

Source = Callable[[], object]  # returns the JWK Set as parsed JSON, or raises Unavailable


class GatewayKeys:
    """The gateway's published ticket keys by kid, refreshed from `source`; thread-safe."""

    def __init__(
        self,
        source: Source,
        *,
        clock: Callable[[], datetime],
        refresh_seconds: float = 5.0,
        max_age_seconds: float = 300.0,
        close: Callable[[], None] = lambda: None,
    ) -> None:
        self._source = source
        self._clock = clock
        self._refresh = timedelta(seconds=refresh_seconds)
        self._max_age = timedelta(seconds=max_age_seconds)
        self._close = close
        self._lock = threading.Lock()
        self._keys: dict[str, VerifyKey] = {}
        self._fetched_at: datetime | None = None
        self._attempted_at: datetime | None = None

    def lookup(self, kid: str) -> VerifyKey | None:
        """The key named `kid`, refetching the set first if it is stale or lacks `kid` (rate
        limited); None if the gateway does not publish it. Raises Unavailable if a needed
        refetch fails."""
        with self._lock:
            now = self._clock()
            stale = not _within(self._fetched_at, now, self._max_age)
            if stale or kid not in self._keys:
                if not _within(self._attempted_at, now, self._refresh):
                    self._fetch(now)
                elif stale:
                    raise Unavailable("the gateway's ticket keys are out of date and could not be fetched", code=_CODE)
            return self._keys.get(kid)

    def kids(self) -> list[str]:
        with self._lock:
            return sorted(self._keys)

    def load(self) -> None:
        """Fetch now (at start, for a file: a malformed file stops the connector starting)."""
        with self._lock:
            self._fetch(self._clock())

    def close(self) -> None:
        self._close()

    def _fetch(self, now: datetime) -> None:
        self._attempted_at = now
        try:
            keys = parse_jwks(self._source())
        except InvalidInput as exc:
            raise Unavailable(f"the gateway's ticket keys are unusable: {exc.public_message}", code=_CODE) from None
        self._keys, self._fetched_at = keys, now


def _within(start: datetime | None, now: datetime, span: timedelta) -> bool:
    return start is not None and start <= now < start + span


def file_source(path: Path) -> Source:
    """Read the JWK Set from `path` (the gateway's set, copied by the operator)."""

    def read() -> object:
        try:
            return json.loads(path.read_bytes())
        except OSError:
            raise Unavailable(f"the ticket key set {path} could not be read", code=_CODE) from None
        except ValueError:
            raise Unavailable(f"the ticket key set {path} is not JSON", code=_CODE) from None

    return read


class UrlSource:
    """GET the gateway's JWK Set over mutual TLS, pinned to the gateway's name; one place
    that turns every transport failure into Unavailable."""

    def __init__(
        self,
        url: str,
        tls: TLSFiles | None,
        *,
        domain: str = TRUST_DOMAIN,
        insecure_http: bool = False,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        check_scheme(url, insecure_http, "gateway JWKS")
        self._url = url
        # No keep-alive: fetches are minutes apart, and an idle TLS connection held open from
        # here would keep the gateway waiting for it when the gateway shuts down.
        self._client = httpx.Client(
            timeout=FETCH_TIMEOUT_SECONDS,
            verify=verification(tls),
            transport=transport,
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        self._extensions = pinned(gateway_identity(domain)) if tls is not None else {}

    def __call__(self) -> object:
        try:
            with self._client.stream(
                "GET", self._url, headers={"accept": "application/jwk-set+json"}, extensions=self._extensions
            ) as response:
                if response.status_code != 200:
                    raise Unavailable(f"the gateway's JWKS answered HTTP {response.status_code}", code=_CODE)
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise Unavailable(f"the gateway's JWKS is larger than {MAX_JWKS_BYTES} bytes", code=_CODE)
        except httpx.HTTPError:
            raise Unavailable("the gateway's JWKS could not be fetched", code=_CODE) from None
        try:
            return json.loads(bytes(body))
        except ValueError:
            raise Unavailable("the gateway's JWKS is not JSON", code=_CODE) from None

    def close(self) -> None:
        self._client.close()


def gateway_keys(
    *,
    jwks_file: Path | None,
    jwks_url: str | None,
    tls: TLSFiles | None,
    domain: str = TRUST_DOMAIN,
    insecure_http: bool = False,
    clock: Callable[[], datetime],
    refresh_seconds: float = 5.0,
    max_age_seconds: float = 300.0,
) -> GatewayKeys:
    """The connector's view of the gateway's ticket keys: from exactly one of a JWKS file
    (read now; a malformed file raises Unavailable) or the gateway's JWKS URL (read on first use)."""
    if (jwks_file is None) == (jwks_url is None):
        raise InvalidInput("give the gateway's ticket keys as one of ticket_jwks (a file) or ticket_jwks_url")
    if jwks_url is not None:
        fetch = UrlSource(jwks_url, tls, domain=domain, insecure_http=insecure_http)
        return GatewayKeys(
            fetch, clock=clock, refresh_seconds=refresh_seconds, max_age_seconds=max_age_seconds, close=fetch.close
        )
    assert jwks_file is not None
    keys = GatewayKeys(
        file_source(jwks_file), clock=clock, refresh_seconds=refresh_seconds, max_age_seconds=max_age_seconds
    )
    keys.load()
    return keys
