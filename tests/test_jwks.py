"""Relay-ticket keys: RFC 7638 key ids, the gateway's JWK Set, rotation without restarts.

The RFC 8037 vectors pin the thumbprint and JWK encoding; the rest runs the real gateway
and connectors over mutual TLS (tests/stack.py), each connector reading the gateway's
ticket keys from its /.well-known/jwks.json.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jwt
import pytest

from connectors.gateway_keys import UrlSource, gateway_keys
from devkit.environment import init_dev
from tests.stack import HTTP, LEGAL_BASIS, ORG, PURPOSE, Clock, Stack, channel, run_cli, session_pki, start_stack
from xiezhi import oprf
from xiezhi.crypto import SigningKey, batch_digest, ed25519_from_seed, ed25519_public
from xiezhi.errors import Conflict, InvalidInput, Unauthenticated, Unavailable
from xiezhi.jwks import TicketKeys, TicketKeysError, b64url_decode, jwk_thumbprint, parse_jwks, public_jwk
from xiezhi.tickets import issue_ticket, verify_ticket
from xiezhi.tls import client_context
from xiezhi.wire import b64encode

VECTORS = json.loads((Path(__file__).parent / "vectors" / "rfc8037-jwk-vectors.json").read_text(encoding="utf-8"))
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


# ---- RFC 8037 / RFC 7638 ----------------------------------------------------------------


def test_rfc8037_thumbprint_is_the_kid() -> None:
    public = b64url_decode(VECTORS["ed25519_public_key"]["x"])
    assert jwk_thumbprint(public) == VECTORS["jwk_thumbprint"] == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    assert public_jwk(public) == {
        **VECTORS["ed25519_public_key"],
        "kid": VECTORS["jwk_thumbprint"],
        "use": "sig",
        "alg": "EdDSA",
    }


def test_rfc8037_key_parses_and_verifies_the_example_jws() -> None:
    private = VECTORS["ed25519_private_key"]
    key = ed25519_from_seed(b64url_decode(private["d"]))
    assert ed25519_public(key) == b64url_decode(private["x"])
    jws = VECTORS["ed25519_signing"]["jws"]
    header, payload, signature = jws.split(".")
    assert key.sign(f"{header}.{payload}".encode()) == b64url_decode(signature)  # Ed25519 is deterministic

    keys = parse_jwks({"keys": [{**VECTORS["ed25519_public_key"], "kid": VECTORS["jwk_thumbprint"]}]})
    assert list(keys) == [VECTORS["jwk_thumbprint"]]
    decoded = jwt.api_jws.decode_complete(jws, keys[VECTORS["jwk_thumbprint"]], algorithms=["EdDSA"])
    assert decoded["payload"] == VECTORS["ed25519_signing"]["payload"].encode()


# ---- malformed sets ------------------------------------------------------------------------

_GOOD = {**VECTORS["ed25519_public_key"], "kid": VECTORS["jwk_thumbprint"], "use": "sig", "alg": "EdDSA"}


@pytest.mark.parametrize(
    ("data", "names"),
    [
        ([], "not a JSON object"),
        ({}, '"keys" list'),
        ({"keys": {}}, '"keys" list'),
        ({"keys": []}, "empty"),
        ({"keys": [_GOOD, "x"]}, "keys[1] is not a JSON object"),
        ({"keys": [{**_GOOD, "kty": "RSA"}]}, "keys[0].kty"),
        ({"keys": [{**_GOOD, "crv": "X25519"}]}, "keys[0].crv"),
        ({"keys": [{**_GOOD, "use": "enc"}]}, "keys[0].use"),
        ({"keys": [{**_GOOD, "alg": "ES256"}]}, "keys[0].alg"),
        ({"keys": [{k: v for k, v in _GOOD.items() if k != "kid"}]}, "keys[0].kid"),
        ({"keys": [{**_GOOD, "kid": ""}]}, "keys[0].kid"),
        ({"keys": [{**_GOOD, "x": _GOOD["x"][:-2]}]}, "keys[0].x"),
        ({"keys": [{**_GOOD, "x": _GOOD["x"] + "=="}]}, "keys[0].x"),
        ({"keys": [{**_GOOD, "x": 7}]}, "keys[0].x"),
        ({"keys": [_GOOD, _GOOD]}, "keys[1].kid repeats"),
        ({"keys": [{**_GOOD, "d": VECTORS["ed25519_private_key"]["d"]}]}, "keys[0].d"),
    ],
)
def test_malformed_jwks_is_refused_naming_the_member(data: object, names: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_jwks(data)
    assert refused.value.code == "jwks_invalid"
    assert names in refused.value.public_message
    assert VECTORS["ed25519_private_key"]["d"] not in refused.value.public_message


# ---- the key folder ------------------------------------------------------------------------


def test_folder_lifecycle_ensure_rotate_retire_prune(tmp_path: Path) -> None:
    folder = tmp_path / "ticket-keys"
    keys = TicketKeys(folder)
    first = keys.ensure(START)
    assert keys.ensure(START + timedelta(hours=1)) == first  # ensure never adds a second key
    kid, key = keys.current()
    assert kid == first == jwk_thumbprint(ed25519_public(key))
    for name in (f"{first}.key", "state.json"):
        assert (folder / name).stat().st_mode & 0o777 == 0o600

    second = keys.rotate(START + timedelta(hours=2))
    assert keys.current()[0] == second != first
    published = keys.jwks()["keys"]
    assert [k["kid"] for k in published] == [second, first]  # current first
    assert set(parse_jwks(keys.jwks())) == {first, second}
    assert all("d" not in k for k in published)

    with pytest.raises(Conflict, match="rotate first"):
        keys.retire(second)
    assert keys.prune(START + timedelta(hours=2) - timedelta(seconds=1)) == []  # superseded at hours=2
    assert keys.prune(START + timedelta(hours=9)) == [first]  # … and never the current key
    assert [k["kid"] for k in keys.jwks()["keys"]] == [second]
    assert not (folder / f"{first}.key").exists()

    third = keys.rotate(START + timedelta(hours=3))
    keys.retire(second)
    assert keys.kids() == [third]
    assert TicketKeys(folder).kids() == [third]  # what another process reads


def test_a_rotation_by_another_process_reaches_a_running_instance(tmp_path: Path) -> None:
    clock = Clock(START)
    running = TicketKeys(tmp_path, clock=clock, reload_seconds=1.0)
    first = running.ensure(clock())
    assert running.current()[0] == first
    second = TicketKeys(tmp_path).rotate(clock())  # the CLI, in its own process
    assert running.current()[0] == first  # the folder is looked at no more than once a second
    clock.advance(seconds=1)
    assert running.current()[0] == second
    assert [k["kid"] for k in running.jwks()["keys"]] == [second, first]


def test_an_empty_folder_fails_closed(tmp_path: Path) -> None:
    keys = TicketKeys(tmp_path / "none")
    with pytest.raises(Unavailable) as missing:
        keys.current()
    assert missing.value.code == "ticket_key_missing"
    assert keys.jwks() == {"keys": []}
    with pytest.raises(InvalidInput, match="empty"):
        parse_jwks(keys.jwks())


def test_a_key_file_swapped_for_another_key_is_refused(tmp_path: Path) -> None:
    kid = TicketKeys(tmp_path).ensure(START)
    other = TicketKeys(tmp_path / "other")
    other_kid = other.ensure(START)
    (tmp_path / f"{kid}.key").write_bytes((tmp_path / "other" / f"{other_kid}.key").read_bytes())
    with pytest.raises(TicketKeysError, match="another key than its name says"):
        TicketKeys(tmp_path).current()


# ---- tickets name their key ------------------------------------------------------------------


def test_verify_ticket_finds_the_key_by_kid(tmp_path: Path) -> None:
    keys = TicketKeys(tmp_path)
    keys.ensure(START)
    kid, key = keys.current()
    published = parse_jwks(keys.jwks())

    for lookup in (published, published.get):  # a mapping, or a callable that may refetch first
        claims = verify_ticket(_issue(kid, key, START), lookup, issuer="xiezhi-gateway", connector="court", now=START)
        assert claims.request_id == "r-test"
    for headers, code in (({}, "ticket_invalid"), ({"kid": "nobody"}, "ticket_key_unknown")):
        forged = jwt.encode(_claims(START), key, algorithm="EdDSA", headers=headers)
        with pytest.raises(Unauthenticated) as refused:
            verify_ticket(forged, published, issuer="xiezhi-gateway", connector="court", now=START)
        assert refused.value.code == code


# ---- the running gateway and connectors ---------------------------------------------------


def test_the_gateway_serves_its_ticket_keys_as_a_jwks(stack: Stack) -> None:
    url = f"{stack.gateway_url}/.well-known/jwks.json"
    response = HTTP.get(url)  # no caller token: public keys only
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/jwk-set+json"
    current = stack.gateway_ticket_key()[0]
    assert current in parse_jwks(response.json())
    assert response.json()["keys"][0] == {**response.json()["keys"][0], "kid": current, "use": "sig", "alg": "EdDSA"}
    assert '"d"' not in response.text
    with pytest.raises(httpx.HTTPError):  # still the gateway's mutual-TLS port
        httpx.get(url, verify=client_context(session_pki().ca))


def test_a_ticket_signed_outside_the_set_is_refused(stack: Stack, tmp_path: Path) -> None:
    stranger = TicketKeys(tmp_path)
    kid = stranger.ensure(datetime.now(UTC))
    elements = _elements(1)
    response = _direct(stack, _issue(kid, stranger.current()[1], datetime.now(UTC), elements), elements)
    assert response.status_code == 401 and response.json()["code"] == "ticket_key_unknown", response.text


def test_the_jwks_fetch_pins_the_gateways_name(stack: Stack) -> None:
    """A URL that leads to another party's server (here the court connector, same CA) fails
    at the handshake: the connector trusts the gateway's name, not any certificate."""
    pki = session_pki()
    source = UrlSource(f"{stack.connector_urls['court']}/.well-known/jwks.json", pki.connector("tax"))
    with pytest.raises(Unavailable, match="could not be fetched"):
        source()
    source.close()
    genuine = UrlSource(f"{stack.gateway_url}/.well-known/jwks.json", pki.connector("tax"))
    assert stack.gateway_ticket_key()[0] in parse_jwks(genuine())
    genuine.close()


@pytest.fixture
def clocked(tmp_path: Path, generated: Path) -> Iterator[tuple[Stack, Clock]]:
    """A stack on a clock the test moves, with the court connector's index published."""
    clock = Clock(datetime.now(UTC))
    running = start_stack(tmp_path, clock)
    try:
        running.publish(generated, connectors=("court",))
        yield running, clock
    finally:
        running.stop()


@pytest.mark.integration
def test_rotation_reaches_the_running_gateway_and_connector(clocked: tuple[Stack, Clock]) -> None:
    stack, clock = clocked
    with stack.dev.ticket_keys() as operator:  # the operator's view, as `xiezhi keys rotate-tickets`
        old_kid, old_key = operator.current()
        request_id = _create(stack, subjects=3)
        assert _relay(stack, request_id).status_code == 200  # signed with the old key; the connector fetched it

        new_kid = operator.rotate(clock())
        clock.advance(seconds=6)  # past the gateway's reload (1 s) and the connector's refetch limit (5 s)
        assert new_kid in parse_jwks(HTTP.get(f"{stack.gateway_url}/.well-known/jwks.json").json())
        assert stack.gateway_ticket_key()[0] == new_kid
        elements = _elements(2)
        for kid, key in ((new_kid, operator.current()[1]), (old_kid, old_key)):
            ticket = _issue(kid, key, clock(), elements)  # a new-key ticket, and one the old key signed just now
            assert _direct(stack, ticket, elements).status_code == 200, kid
        assert _relay(stack, request_id).status_code == 200

        # Drop the old key: it vanishes from the set, and once the connector's copy is older than
        # its maximum age (300 s) the old key verifies nothing, while the gateway's tickets still
        # pass, so the gateway signs with the new key.
        assert operator.prune(clock()) == [old_kid]
    clock.advance(seconds=301)
    served = HTTP.get(f"{stack.gateway_url}/.well-known/jwks.json").json()
    assert set(parse_jwks(served)) == {new_kid}
    refused = _direct(stack, _issue(old_kid, old_key, clock(), elements), elements)
    assert refused.status_code == 401 and refused.json()["code"] == "ticket_key_unknown"
    assert _relay(stack, request_id).status_code == 200


@pytest.mark.integration
def test_rotate_tickets_command(tmp_path: Path) -> None:
    dev = init_dev(tmp_path, connectors={}, database_url=f"sqlite:///{tmp_path / 'g.sqlite'}", pki=session_pki())
    with dev.ticket_keys() as keys:
        first = keys.ensure(datetime.now(UTC))
        second = keys.rotate(datetime.now(UTC) - timedelta(hours=1))  # so `first` was superseded an hour ago
    done = run_cli("keys", "rotate-tickets", "--config", str(dev.gateway_config), timeout=120)
    assert done.returncode == 0, done.stderr
    with dev.ticket_keys() as keys:
        third = keys.current()[0]
        assert keys.kids() == [third, second]  # `second` may still have live tickets
    assert third not in (first, second)
    assert f"ticket key {third} is current (was {second})" in done.stdout
    assert f"pruned ticket key {first}" in done.stdout


def test_a_connector_can_read_the_set_from_a_file(tmp_path: Path) -> None:
    keys = TicketKeys(tmp_path / "keys")
    kid = keys.ensure(START)
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(keys.jwks()), encoding="utf-8")
    known = gateway_keys(jwks_file=path, jwks_url=None, tls=None, clock=lambda: START)
    assert known.lookup(kid) is not None and known.lookup("nobody") is None
    path.write_text(json.dumps({"keys": [{**_GOOD, "crv": "P-256"}]}), encoding="utf-8")
    with pytest.raises(Unavailable, match=r"keys\[0\]\.crv"):
        gateway_keys(jwks_file=path, jwks_url=None, tls=None, clock=lambda: START)
    with pytest.raises(InvalidInput, match="one of"):
        gateway_keys(jwks_file=path, jwks_url="https://gateway/.well-known/jwks.json", tls=None, clock=lambda: START)


# ---- helpers -------------------------------------------------------------------------------


def _elements(n: int) -> list[bytes]:
    return [b.blinded_element for b in oprf.blind([os.urandom(16) for _ in range(n)], oprf.Mode.VOPRF)]


def _claims(now: datetime) -> dict[str, object]:
    issued = int(now.timestamp())
    return {
        "iss": "xiezhi-gateway", "aud": "connector:court", "sub": ORG, "rid": "r-test", "epoch": 1, "cnt": 1,
        "dig": "x", "jti": os.urandom(8).hex(), "iat": issued, "exp": issued + 60,
    }  # fmt: skip


def _issue(kid: str, key: SigningKey, now: datetime, elements: list[bytes] | None = None) -> str:
    elements = elements or _elements(1)
    return issue_ticket(
        key, kid=kid, issuer="xiezhi-gateway", connector="court", request_id="r-test", requester_org=ORG, epoch=1,
        count=len(elements), digest=batch_digest(elements), now=now, ttl_seconds=60,
    )  # fmt: skip


def _direct(stack: Stack, ticket: str, elements: list[bytes]) -> httpx.Response:
    """A ticketed batch sent straight to the court connector on the gateway's own channel."""
    body = {"ticket": ticket, "blinded_elements": [b64encode(e) for e in elements]}
    return channel(session_pki().gateway()).post(f"{stack.connector_urls['court']}/v1/evaluate", json=body)


def _create(stack: Stack, subjects: int) -> str:
    response = HTTP.post(
        f"{stack.gateway_url}/v1/requests",
        headers={"authorization": f"Bearer {stack.user_token(['prosecutor'])}"},
        json={"model": "repeated_debtor", "purpose": PURPOSE, "legal_basis": LEGAL_BASIS, "subject_count": subjects},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["request_id"])


def _relay(stack: Stack, request_id: str) -> httpx.Response:
    """One element relayed by the gateway to the court connector under a ticket it signs."""
    return HTTP.post(
        f"{stack.gateway_url}/v1/requests/{request_id}/evaluations/court",
        headers={"authorization": f"Bearer {stack.user_token(['prosecutor'])}"},
        json={"blinded_elements": [b64encode(e) for e in _elements(1)]},
    )
