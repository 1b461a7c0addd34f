"""gateway.auth: every forged or malformed token is Unauthenticated with a reason code (never
another exception), each key verifies only its own algorithm, and each client certificate
carries only the roles its deployment maps to it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from devkit.environment import DEV_CLIENT_ROLES, dev_client_for, ensure_pki, init_dev, issue_token
from gateway.auth import MAX_TOKEN_CHARS, Authenticator, ClientChannels, Principal
from gateway.settings import GatewaySettings
from xiezhi.crypto import generate_signing_key, load_private_key, load_verification_key, public_path
from xiezhi.errors import Unauthenticated
from xiezhi.tls import client_identity, connector_identity, gateway_identity

ISSUER, AUDIENCE = "idp", "xiezhi-gateway"


def _ec_key(path: Path, curve: ec.EllipticCurve) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(curve)
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    path.write_bytes(public)
    return key


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Any]:
    generate_signing_key(tmp_path / "ed.key")
    ec_private = _ec_key(tmp_path / "ec.pub", ec.SECP256R1())
    return {
        "ed": tmp_path / "ed.key",
        "ec": ec_private,
        "paths": {"ed": public_path(tmp_path / "ed.key"), "ec": tmp_path / "ec.pub"},
    }


@pytest.fixture
def authenticator(keys: dict[str, Any]) -> Authenticator:
    return Authenticator(keys["paths"], issuer=ISSUER, audience=AUDIENCE)


def _claims(**extra: object) -> dict[str, object]:
    now = int(time.time())
    return {"iss": ISSUER, "aud": AUDIENCE, "sub": "prosecutor-330803-01", "org": "330803", "roles": ["prosecutor"],
            "iat": now, "exp": now + 600, **extra}  # fmt: skip


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict[str, object], claims: dict[str, object], sign: Any = None) -> str:
    """A compact JWS put together by hand, signed (or not) however an attacker likes."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = sign(signing_input.encode()) if sign else b""
    return f"{signing_input}.{_b64(signature)}"


def _refused(authenticator: Authenticator, authorization: str | None) -> str:
    with pytest.raises(Unauthenticated) as refused:
        authenticator.authenticate(authorization)
    return refused.value.code


def test_each_key_verifies_its_own_algorithm(authenticator: Authenticator, keys: dict[str, Any]) -> None:
    ed = issue_token(keys["ed"], subject="u", roles=["prosecutor"], org="330803", issuer=ISSUER, kid="ed")
    assert authenticator.authenticate(f"Bearer {ed}").subject == "u"
    es = jwt.encode(_claims(), keys["ec"], algorithm="ES256", headers={"kid": "ec"})
    assert authenticator.authenticate(f"Bearer {es}").roles == {"prosecutor"}


def test_a_token_in_another_algorithm_than_its_keys_is_invalid(
    authenticator: Authenticator, keys: dict[str, Any], tmp_path: Path
) -> None:
    """The reported 500: an ES256 token under the Ed25519 key's kid made pyjwt raise TypeError."""
    mallory = ec.generate_private_key(ec.SECP256R1())
    assert (
        _refused(authenticator, "Bearer " + jwt.encode(_claims(), mallory, algorithm="ES256", headers={"kid": "ed"}))
        == "token_invalid"
    )
    generate_signing_key(tmp_path / "mallory.key")
    ed_under_ec = issue_token(tmp_path / "mallory.key", subject="u", roles=["prosecutor"], issuer=ISSUER, kid="ec")
    assert _refused(authenticator, f"Bearer {ed_under_ec}") == "token_invalid"
    es384 = jwt.encode(_claims(), ec.generate_private_key(ec.SECP384R1()), algorithm="ES384", headers={"kid": "ec"})
    assert _refused(authenticator, f"Bearer {es384}") == "token_invalid"


def test_unsigned_and_symmetric_forgeries_are_invalid(authenticator: Authenticator, keys: dict[str, Any]) -> None:
    assert _refused(authenticator, "Bearer " + _forge({"alg": "none", "kid": "ed"}, _claims())) == "token_invalid"
    assert _refused(authenticator, "Bearer " + _forge({"alg": "None", "kid": "ed"}, _claims())) == "token_invalid"
    for kid in ("ed", "ec"):
        secret = keys["paths"][kid].read_bytes()  # HS256 keyed with the public key everyone has

        def hs256(data: bytes, secret: bytes = secret) -> bytes:
            return hmac.new(secret, data, hashlib.sha256).digest()

        assert (
            _refused(authenticator, "Bearer " + _forge({"alg": "HS256", "kid": kid}, _claims(), hs256))
            == "token_invalid"
        )


@pytest.mark.parametrize(
    ("kid", "code"),
    [
        (None, "token_unknown_key"),
        ("", "token_unknown_key"),
        ("other", "token_unknown_key"),
        (7, "token_malformed"),  # a kid must be a string (RFC 7515 §4.1.4; pyjwt checks it)
        (["ed"], "token_malformed"),
        ({"ed": 1}, "token_malformed"),
    ],
)
def test_a_kid_that_names_no_key_is_refused(authenticator: Authenticator, kid: object, code: str) -> None:
    header: dict[str, object] = {"alg": "EdDSA"} if kid is None else {"alg": "EdDSA", "kid": kid}
    assert _refused(authenticator, "Bearer " + _forge(header, _claims())) == code


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer    ",
        "Bearer a.b",
        "Bearer not-a-jwt",
        "Bearer %%%.%%%.%%%",
        "Bearer " + _b64(b"[1,2]") + ".e30.",
        "Bearer " + _b64(b"\xff\xfe") + ".e30.",
    ],
)
def test_malformed_headers_are_malformed(authenticator: Authenticator, authorization: str) -> None:
    assert _refused(authenticator, authorization) == "token_malformed"


def test_missing_and_oversized_tokens(authenticator: Authenticator, keys: dict[str, Any]) -> None:
    assert _refused(authenticator, None) == "token_missing"
    assert _refused(authenticator, "") == "token_missing"
    padded = issue_token(keys["ed"], subject="u" * MAX_TOKEN_CHARS, roles=["prosecutor"], issuer=ISSUER, kid="ed")
    assert _refused(authenticator, f"Bearer {padded}") == "token_malformed"  # refused before it is parsed


def test_claims_pyjwt_cannot_read_are_invalid_not_errors(authenticator: Authenticator, keys: dict[str, Any]) -> None:
    """Signed by the right key, but with claims no one can read as times or names."""
    for bad in ({"exp": float("inf")}, {"iat": "soon"}, {"exp": None}, {"sub": 12}, {"aud": 3}):
        token = jwt.encode(_claims(**bad), load_private_key(keys["ed"]), algorithm="EdDSA", headers={"kid": "ed"})
        assert _refused(authenticator, f"Bearer {token}") == "token_invalid", bad


def test_claims_the_audit_log_could_never_hold_are_refused(authenticator: Authenticator, keys: dict[str, Any]) -> None:
    for claims in ({"subject": "110101199003077777"}, {"subject": "u", "connector": "c330803199001011234"}):
        token = issue_token(keys["ed"], roles=["prosecutor"], issuer=ISSUER, kid="ed", **claims)  # type: ignore[arg-type]
        assert _refused(authenticator, f"Bearer {token}") == "token_invalid"


def test_only_ed25519_and_p256_keys_are_accepted(tmp_path: Path) -> None:
    _ec_key(tmp_path / "p384.pub", ec.SECP384R1())
    with pytest.raises(ValueError, match="P-256"):
        load_verification_key(tmp_path / "p384.pub")
    generate_signing_key(tmp_path / "ed.key")
    assert load_verification_key(public_path(tmp_path / "ed.key")).algorithm == "EdDSA"
    _ec_key(tmp_path / "p256.pub", ec.SECP256R1())
    assert load_verification_key(tmp_path / "p256.pub").algorithm == "ES256"


# ---- client certificates and the roles they carry --------------------------------------

DOMAIN = "xiezhi.internal"
CHANNELS = ClientChannels(DOMAIN, {name: list(roles) for name, roles in DEV_CLIENT_ROLES.items()})
REQUESTER = [client_identity("requester")]
AUDITOR = [client_identity("auditor")]
ADMIN = [client_identity("admin")]
COURT = [connector_identity("court"), "localhost"]


def _user(*roles: str) -> Principal:
    return Principal(subject="u", org="330803", roles=frozenset(roles))


def _mismatch(principal: Principal, names: list[str]) -> str:
    with pytest.raises(Unauthenticated) as refused:
        CHANNELS.check(principal, names)
    return refused.value.code


def test_each_system_carries_its_own_roles() -> None:
    for role in ("prosecutor", "assistant", "dept_head"):
        CHANNELS.check(_user(role), REQUESTER)
    CHANNELS.check(_user("prosecutor", "dept_head"), REQUESTER)
    CHANNELS.check(_user("security_auditor"), AUDITOR)
    CHANNELS.check(_user("security_admin"), ADMIN)
    CHANNELS.check(_user("system_admin"), ADMIN)
    CHANNELS.check(
        Principal(subject="connector:court", org=None, roles=frozenset({"connector"}), connector="court"), COURT
    )


@pytest.mark.parametrize(
    ("roles", "names"),
    [
        (("prosecutor",), AUDITOR),  # a prosecutor's match over the auditor system's certificate
        (("prosecutor",), ADMIN),
        (("prosecutor",), COURT),
        (("security_auditor",), COURT),  # an auditor's token over a connector's certificate
        (("security_auditor",), REQUESTER),
        (("security_admin",), AUDITOR),
        (("prosecutor", "security_auditor"), REQUESTER),  # one role too many is refused whole
        (("connector",), REQUESTER),
        (("visitor",), REQUESTER),
    ],
)
def test_roles_the_certificate_does_not_carry_are_refused(roles: tuple[str, ...], names: list[str]) -> None:
    assert _mismatch(_user(*roles), names) == "certificate_role_mismatch"


def test_an_unmapped_certificate_carries_no_role() -> None:
    """Fail closed: the gateway's own certificate, a client not in the mapping, no certificate."""
    for names in ([gateway_identity(DOMAIN), "localhost"], [client_identity("someone-else")], []):
        assert _mismatch(_user("prosecutor"), names) == "certificate_role_mismatch"
        assert CHANNELS.roles_for(names) == frozenset()
    assert ClientChannels(DOMAIN, {}).roles_for(REQUESTER) == frozenset()


def test_a_connectors_token_needs_its_own_certificate() -> None:
    tax = Principal(subject="connector:tax", org=None, roles=frozenset({"connector"}), connector="tax")
    assert _mismatch(tax, COURT) == "certificate_mismatch"
    assert _mismatch(tax, REQUESTER) == "certificate_mismatch"
    named = Principal(subject="u", org="330803", roles=frozenset({"prosecutor"}), connector="court")
    assert _mismatch(named, COURT) == "certificate_role_mismatch"  # its certificate, not its roles


def test_without_tls_there_is_nothing_to_check() -> None:
    plain = ClientChannels(None, {})
    plain.check(_user("prosecutor", "security_auditor"), [])


def test_the_dev_mapping_names_a_system_for_each_user_role() -> None:
    assert dev_client_for(["prosecutor", "dept_head"]) == "requester"
    assert dev_client_for(["security_auditor"]) == "auditor"
    assert dev_client_for(["security_admin", "system_admin"]) == "admin"
    assert dev_client_for(["security_auditor", "security_admin"]) is None
    assert dev_client_for(["connector"]) is None


def test_settings_map_clients_to_user_roles_only(tmp_path: Path) -> None:
    dev = init_dev(tmp_path, connectors={}, database_url="sqlite://", pki=ensure_pki(tmp_path / "pki", []))
    raw = yaml.safe_load(dev.gateway_config.read_text(encoding="utf-8"))
    settings = GatewaySettings.model_validate(raw)
    assert settings.clients["auditor"] == {"security_auditor"}  # devkit writes the development mapping
    with pytest.raises(ValidationError, match="connector"):
        GatewaySettings.model_validate({**raw, "clients": {"requester": ["prosecutor", "connector"]}})
    with pytest.raises(ValidationError, match="clients"):
        GatewaySettings.model_validate({**raw, "clients": {}})  # over TLS, no one could sign in
    with pytest.raises(ValidationError):
        GatewaySettings.model_validate({**raw, "clients": {"Requester System": ["prosecutor"]}})
    plain = {key: value for key, value in raw.items() if key not in ("tls", "clients")}
    assert GatewaySettings.model_validate({**plain, "insecure_http": True}).clients == {}
