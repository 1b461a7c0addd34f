"""A connector evaluates only batches carrying a valid, fresh, unused, matching gateway ticket.

Each case sends a real HTTP request to a real connector on loopback.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.stack import Stack, channel, session_pki
from xiezhi import oprf
from xiezhi.crypto import SigningKey, batch_digest
from xiezhi.jwks import TicketKeys
from xiezhi.tickets import issue_ticket
from xiezhi.tls import client_context
from xiezhi.wire import b64encode


def _elements(n: int = 3) -> list[bytes]:
    return [b.blinded_element for b in oprf.blind([f"subject-{i}".encode() for i in range(n)], oprf.Mode.VOPRF)]


def _ticket(
    stack: Stack,
    elements: list[bytes],
    *,
    connector: str = "court",
    key: tuple[str, SigningKey] | None = None,
    now: datetime | None = None,
    epoch: int = 1,
    count: int | None = None,
) -> str:
    kid, signing = key or stack.gateway_ticket_key()
    return issue_ticket(
        signing,
        kid=kid,
        issuer="xiezhi-gateway",
        connector=connector,
        request_id="r-test",
        requester_org="330803",
        epoch=epoch,
        count=len(elements) if count is None else count,
        digest=batch_digest(elements),
        now=now or datetime.now(UTC),
        ttl_seconds=60,
    )


def _send(stack: Stack, ticket: str, elements: list[bytes], connector: str = "court") -> httpx.Response:
    """Post a batch to a connector over the gateway's own channel (its client certificate), so
    that only the ticket decides."""
    body = {"ticket": ticket, "blinded_elements": [b64encode(e) for e in elements]}
    return channel(session_pki().gateway()).post(f"{stack.connector_urls[connector]}/v1/evaluate", json=body)


def _problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code


def test_valid_ticket_is_evaluated_with_a_proof(stack: Stack) -> None:
    elements = _elements()
    response = _send(stack, _ticket(stack, elements), elements)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["epoch"] == 1 and len(body["evaluated_elements"]) == 3 and body["proof"]


def test_forged_ticket_is_refused(stack: Stack, tmp_path: Path) -> None:
    """Signed by a key outside the gateway's set: under its own kid the connector finds no
    such key; under the gateway's current kid the signature fails."""
    mallory = TicketKeys(tmp_path / "mallory")
    mallory_kid = mallory.ensure(datetime.now(UTC))
    gateway_kid = stack.gateway_ticket_key()[0]
    elements = _elements()
    for kid, code in ((mallory_kid, "ticket_key_unknown"), (gateway_kid, "ticket_invalid")):
        ticket = _ticket(stack, elements, key=(kid, mallory.current()[1]))
        _problem(_send(stack, ticket, elements), 401, code)


def test_expired_ticket_is_refused(stack: Stack) -> None:
    elements = _elements()
    old = datetime.now(UTC) - timedelta(seconds=61)
    _problem(_send(stack, _ticket(stack, elements, now=old), elements), 401, "ticket_expired")


def test_ticket_for_another_connector_is_refused(stack: Stack) -> None:
    elements = _elements()
    _problem(_send(stack, _ticket(stack, elements, connector="tax"), elements), 401, "ticket_invalid")


def test_ticket_for_another_batch_is_refused(stack: Stack) -> None:
    elements, other = _elements(), _elements()
    _problem(_send(stack, _ticket(stack, other), elements), 401, "ticket_mismatch")
    _problem(_send(stack, _ticket(stack, elements, count=2), elements), 401, "ticket_mismatch")


def test_replayed_ticket_is_refused(stack: Stack) -> None:
    elements = _elements()
    ticket = _ticket(stack, elements)
    assert _send(stack, ticket, elements).status_code == 200
    _problem(_send(stack, ticket, elements), 401, "ticket_replayed")


def test_unknown_epoch_is_refused(stack: Stack) -> None:
    elements = _elements()
    _problem(_send(stack, _ticket(stack, elements, epoch=99), elements), 404, "unknown_epoch")


def test_garbage_ticket_and_bodies(stack: Stack) -> None:
    elements = _elements()
    _problem(_send(stack, "not-a-jwt", elements), 401, "ticket_invalid")
    url = f"{stack.connector_urls['court']}/v1/evaluate"
    gateway = channel(session_pki().gateway())
    _problem(gateway.post(url, content=b"{", headers={"content-type": "application/json"}), 400, "invalid_body")
    _problem(gateway.post(url, json={"blinded_elements": [b64encode(elements[0])]}), 400, "invalid_body")
    _problem(gateway.post(url, json={"ticket": "x", "blinded_elements": ["***"]}), 400, "invalid_body")


def test_only_the_gateways_certificate_may_call_a_connector(stack: Stack) -> None:
    """A requester's or another connector's certificate is refused before any ticket is read;
    no certificate at all fails the handshake."""
    elements = _elements()
    body = {"ticket": _ticket(stack, elements), "blinded_elements": [b64encode(e) for e in elements]}
    url = f"{stack.connector_urls['court']}/v1/evaluate"
    pki = session_pki()
    for files in (pki.client("requester"), pki.connector("tax"), pki.connector("court")):
        _problem(channel(files).post(url, json=body), 403, "caller_not_gateway")
    with pytest.raises(httpx.HTTPError):
        httpx.post(url, json=body, verify=client_context(pki.ca))
    response = channel(pki.gateway()).post(url, json=body)
    assert response.status_code == 200 and len(response.json()["evaluated_elements"]) == len(elements)


@pytest.mark.parametrize("bad", [bytes(32), b"\xff" * 32])
def test_identity_and_non_canonical_elements_are_refused(stack: Stack, bad: bytes) -> None:
    elements = [*_elements(1), bad]
    _problem(_send(stack, _ticket(stack, elements), elements), 422, "proof_invalid")
