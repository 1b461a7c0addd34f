"""Reading a witness's newest cosigned checkpoint of the gateway's log, as an auditor does.

Each connector that witnesses the log answers `GET /witness/checkpoint` with the newest
checkpoint it cosigned — the log's signed note plus its own cosignature — to the gateway and
to the client certificates its settings name as witness readers (the auditor's). The
verifier holds the log to it (`audit_log.witness_policy`); nothing here is trusted before
the signatures on it are checked there.
"""

from __future__ import annotations

import httpx

from xiezhi.errors import Unavailable
from xiezhi.tls import TRUST_DOMAIN, TLSFiles, check_scheme, connector_identity, pinned, verification

MAX_NOTE_BYTES = 64 * 1024


def read_witness_checkpoint(
    connector: str,
    url: str,
    *,
    tls: TLSFiles | None,
    domain: str = TRUST_DOMAIN,
    insecure_http: bool = False,
    timeout: float = 10.0,
) -> str:
    """The note `connector`'s witness at `url` last cosigned (its certificate must name it).

    Raises Unavailable (witness_unreachable) when it cannot be read, naming the witness."""
    check_scheme(url, insecure_http, f"witness {connector}")
    extensions = pinned(connector_identity(connector, domain)) if url.startswith("https://") else {}
    try:
        with httpx.Client(timeout=timeout, verify=verification(tls)) as client:
            response = client.get(url.rstrip("/") + "/witness/checkpoint", extensions=extensions)
    except httpx.HTTPError as exc:
        raise Unavailable(
            f"witness {connector} unreachable ({type(exc).__name__})", code="witness_unreachable"
        ) from None
    if response.status_code != 200 or len(response.content) > MAX_NOTE_BYTES:
        raise Unavailable(
            f"witness {connector} answered HTTP {response.status_code} for its cosigned checkpoint",
            code="witness_unreachable",
        )
    return response.text
