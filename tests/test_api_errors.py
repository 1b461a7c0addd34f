"""Bad input to every gateway endpoint gets a specific 4xx problem detail, over real HTTP."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import httpx
import pytest

from devkit.environment import issue_token
from tests.stack import HTTP, LEGAL_BASIS, Stack
from tests.stack import PURPOSE as CASE
from xiezhi import oprf
from xiezhi.wire import b64encode

PURPOSE = {"purpose": CASE, "legal_basis": LEGAL_BASIS}
UNKNOWN = "00000000-0000-4000-8000-000000000000"  # shaped like a request or publication id; no such one


def _call(stack: Stack, method: str, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return HTTP.request(method, stack.gateway_url + path, headers=headers, **kwargs)


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code and body["status"] == status and body["detail"]
    assert status in _declared(response.request), f"{response.request.method} {response.request.url.path}: {status}"
    return body


_DOCUMENTS: dict[str, dict[str, Any]] = {}


def _declared(request: httpx.Request) -> set[int]:
    """The statuses the gateway's OpenAPI document declares for `request`'s operation (404 and
    405 for a path or method it has none for)."""
    base = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
    if base not in _DOCUMENTS:
        _DOCUMENTS[base] = HTTP.get(f"{base}/openapi.json").json()
    for template, item in _DOCUMENTS[base]["paths"].items():
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), request.url.path):
            operation = item.get(request.method.lower())
            return {405} if operation is None else {int(s) for s in operation["responses"]}
    return {404}


def _request(stack: Stack, token: str, model: str = "housing_fund", n: int = 2) -> dict[str, Any]:
    response = _call(stack, "POST", "/v1/requests", token, json={"model": model, "subject_count": n, **PURPOSE})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _elements(n: int) -> list[str]:
    return [b64encode(b.blinded_element) for b in oprf.blind([b"x%d" % i for i in range(n)], oprf.Mode.VOPRF)]


@pytest.fixture
def prosecutor(stack: Stack) -> str:
    return stack.user_token(["prosecutor"])


# ---- authentication ------------------------------------------------------------------


def test_missing_and_malformed_tokens(stack: Stack) -> None:
    _problem(_call(stack, "GET", "/v1/models"), 401, "token_missing")
    _problem(_call(stack, "GET", "/v1/models", headers={"authorization": "Basic abc"}), 401, "token_malformed")
    _problem(_call(stack, "GET", "/v1/models", "not.a.jwt"), 401, "token_malformed")


def test_tokens_failing_claims_checks(stack: Stack, tmp_path: Any) -> None:
    key = stack.dev.idp_key
    cases = {
        "token_expired": issue_token(key, subject="u", roles=["prosecutor"], org="330803", now=1_000_000),
        "token_invalid": issue_token(key, subject="u", roles=["prosecutor"], org="330803", audience="other"),
        "token_unknown_key": issue_token(key, subject="u", roles=["prosecutor"], org="330803", kid="other-kid"),
    }
    for code, token in cases.items():
        _problem(_call(stack, "GET", "/v1/models", token), 401, code)
    bad_issuer = issue_token(key, subject="u", roles=["prosecutor"], org="330803", issuer="someone-else")
    _problem(_call(stack, "GET", "/v1/models", bad_issuer), 401, "token_invalid")
    bad_org = issue_token(key, subject="u", roles=["prosecutor"], org="Zhejiang")
    _problem(_call(stack, "GET", "/v1/models", bad_org), 401, "token_invalid")


def test_token_signed_by_another_key_with_the_right_kid(stack: Stack, tmp_path: Any) -> None:
    from xiezhi.crypto import generate_signing_key

    generate_signing_key(tmp_path / "mallory.key")
    forged = issue_token(tmp_path / "mallory.key", subject="u", roles=["prosecutor"], org="330803")
    _problem(_call(stack, "GET", "/v1/models", forged), 401, "token_invalid")


# ---- create ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"model": "housing_fund", "subject_count": "one", **PURPOSE}, 400, "invalid_body"),
        ({"model": "housing_fund", "subject_count": 0, **PURPOSE}, 400, "invalid_body"),
        ({"model": "housing_fund", "subject_count": 1, "extra": 1, **PURPOSE}, 400, "invalid_body"),
        ({"model": "no_such_model", "subject_count": 1, **PURPOSE}, 404, "unknown_model"),
        ({"model": "housing_fund", "subject_count": 1, "scope": "33080", **PURPOSE}, 400, "invalid_body"),
        ({"model": "housing_fund", "subject_count": 10_000_000, **PURPOSE}, 400, "too_many_subjects"),
    ],
)
def test_create_rejects_bad_bodies(stack: Stack, prosecutor: str, body: dict[str, Any], status: int, code: str) -> None:
    _problem(_call(stack, "POST", "/v1/requests", prosecutor, json=body), status, code)


def test_create_rejects_non_json(stack: Stack, prosecutor: str) -> None:
    _problem(
        _call(
            stack, "POST", "/v1/requests", prosecutor, content=b"{oops", headers={"content-type": "application/json"}
        ),
        400,
        "invalid_body",
    )


@pytest.mark.parametrize(
    ("roles", "status", "code"),
    [
        # Each over the certificate of the client system that carries its roles (tests/stack.py).
        (["system_admin"], 403, "denied_by_policy"),
        (["security_auditor"], 403, "denied_by_policy"),
        (["security_admin"], 403, "denied_by_policy"),
        (["security_admin", "system_admin"], 403, "separation_of_duties"),
        ([], 403, "no_roles"),
        # Roles no client system's certificate carries are refused before the policy looks.
        (["connector"], 401, "certificate_role_mismatch"),
        (["prosecutor", "system_admin"], 401, "certificate_role_mismatch"),
        (["visitor"], 401, "certificate_role_mismatch"),
    ],
)
def test_roles_that_may_not_run_models(stack: Stack, roles: list[str], status: int, code: str) -> None:
    body = {"model": "housing_fund", "subject_count": 1, **PURPOSE}
    _problem(_call(stack, "POST", "/v1/requests", stack.user_token(roles), json=body), status, code)


def test_a_connector_may_not_run_models(stack: Stack) -> None:
    body = {"model": "housing_fund", "subject_count": 1, **PURPOSE}
    _problem(_call(stack, "POST", "/v1/requests", stack.connector_token("court"), json=body), 403, "denied_by_policy")


# ---- evaluation, lookup, result -------------------------------------------------------


def test_evaluation_errors(stack: Stack, prosecutor: str) -> None:
    request = _request(stack, prosecutor, n=2)
    base = f"/v1/requests/{request['request_id']}/evaluations"
    _problem(
        _call(
            stack,
            "POST",
            f"/v1/requests/{UNKNOWN}/evaluations/housing_fund",
            prosecutor,
            json={"blinded_elements": _elements(1)},
        ),
        404,
        "unknown_request",
    )
    other = stack.user_token(["prosecutor"], subject="prosecutor-330803-02")
    _problem(
        _call(stack, "POST", f"{base}/housing_fund", other, json={"blinded_elements": _elements(1)}),
        404,
        "unknown_request",
    )
    _problem(
        _call(stack, "POST", f"{base}/court", prosecutor, json={"blinded_elements": _elements(1)}),
        404,
        "unknown_connector",
    )
    for bad in (["%%%"], [b64encode(b"short")], []):
        _problem(
            _call(stack, "POST", f"{base}/housing_fund", prosecutor, json={"blinded_elements": bad}),
            400,
            "invalid_body",
        )
    _problem(
        _call(stack, "POST", f"{base}/housing_fund", prosecutor, json={"blinded_elements": [b64encode(bytes(32))]}),
        422,
        "proof_invalid",
    )
    _problem(
        _call(stack, "POST", f"{base}/housing_fund", prosecutor, json={"blinded_elements": _elements(3)}),
        409,
        "subject_count_exceeded",
    )
    assert (
        _call(stack, "POST", f"{base}/housing_fund", prosecutor, json={"blinded_elements": _elements(2)}).status_code
        == 200
    )


def test_lookup_and_result_errors(stack: Stack, prosecutor: str) -> None:
    request = _request(stack, prosecutor, n=2)
    rid = request["request_id"]
    token = b64encode(bytes(16))
    caps = ["housing_fund.balance_positive", "housing_fund.sealed_with_balance"]
    lookups = f"/v1/requests/{rid}/lookups"
    _problem(
        _call(stack, "POST", lookups, prosecutor, json={"first_row": 0, "tokens": {c: [token] for c in caps}}),
        409,
        "evaluation_incomplete",
    )
    _problem(_call(stack, "GET", f"/v1/requests/{rid}/result", prosecutor), 409, "not_completed")
    _call(
        stack,
        "POST",
        f"/v1/requests/{rid}/evaluations/housing_fund",
        prosecutor,
        json={"blinded_elements": _elements(2)},
    ).raise_for_status()
    _problem(
        _call(stack, "POST", lookups, prosecutor, json={"first_row": 0, "tokens": {caps[0]: [token]}}),
        400,
        "capabilities_mismatch",
    )
    _problem(
        _call(
            stack,
            "POST",
            lookups,
            prosecutor,
            json={"first_row": 0, "tokens": {caps[0]: [token], caps[1]: [token, token]}},
        ),
        400,
        "ragged_tokens",
    )
    _problem(
        _call(
            stack,
            "POST",
            lookups,
            prosecutor,
            json={"first_row": 0, "tokens": {c: [b64encode(bytes(15))] for c in caps}},
        ),
        400,
        "invalid_body",
    )
    _problem(
        _call(stack, "POST", lookups, prosecutor, json={"first_row": 1, "tokens": {c: [token] for c in caps}}),
        409,
        "row_out_of_order",
    )
    _problem(
        _call(stack, "POST", lookups, prosecutor, json={"first_row": 0, "tokens": {c: [token] * 3 for c in caps}}),
        409,
        "subject_count_exceeded",
    )
    ok = _call(stack, "POST", lookups, prosecutor, json={"first_row": 0, "tokens": {c: [token] * 2 for c in caps}})
    assert ok.status_code == 200 and [r["clue"] for r in ok.json()["rows"]] == [False, False]
    result = _call(stack, "GET", f"/v1/requests/{rid}/result", prosecutor)
    assert result.status_code == 200 and len(result.json()["rows"]) == 2
    # Roles no one may hold together: no client system's certificate carries them both.
    _problem(
        _call(stack, "GET", f"/v1/requests/{rid}/result", stack.user_token(["prosecutor", "security_auditor"])),
        401,
        "certificate_role_mismatch",
    )
    auditor = stack.user_token(["security_auditor"], subject="auditor-330000-01", org="330000")
    _problem(_call(stack, "GET", f"/v1/requests/{rid}/result", auditor), 404, "unknown_request")


# ---- publication ----------------------------------------------------------------------


def _start(
    stack: Stack,
    token: str,
    connector: str = "tax",
    capability: str = "tax.interest_income_declared",
    tokens: list[bytes] | None = None,
    public_key: bytes | None = None,
    epoch: int = 7,
) -> httpx.Response:
    tokens = tokens or []
    body = {
        "epoch": epoch,
        "public_key": b64encode(public_key or oprf.generate_key_pair(oprf.Mode.VOPRF).pk),
        "capability": {"id": capability, "title": "测试", "tier": 2},
        "token_count": len(tokens),
        "digest": hashlib.sha256(b"".join(sorted(tokens))).hexdigest(),
    }
    return _call(stack, "POST", f"/v1/connectors/{connector}/publications", token, json=body)


def test_publication_authorization(stack: Stack, prosecutor: str) -> None:
    _problem(_start(stack, prosecutor), 403, "not_granted")
    _problem(_start(stack, stack.connector_token("court")), 403, "publish_other_connector")
    _problem(_start(stack, stack.connector_token("tax"), capability="court.multiple_terminated"), 400, "invalid_input")


def test_publication_chunk_and_commit_errors(stack: Stack) -> None:
    tax = stack.connector_token("tax")
    tokens = [bytes([i]) * 16 for i in range(1, 4)]
    pub = _start(stack, tax, tokens=tokens)
    assert pub.status_code == 201, pub.text
    base = f"/v1/connectors/tax/publications/{pub.json()['publication_id']}"
    octets = {"content-type": "application/octet-stream"}
    _problem(
        _call(stack, "PUT", f"{base}/chunks/0", tax, content=tokens[0], headers={"content-type": "text/plain"}),
        400,
        "bad_content_type",
    )
    _problem(_call(stack, "PUT", f"{base}/chunks/1", tax, content=tokens[0], headers=octets), 409, "conflict")
    _problem(_call(stack, "PUT", f"{base}/chunks/0", tax, content=b"x" * 17, headers=octets), 400, "invalid_input")
    unsorted = "tokens_not_ascending"
    _problem(_call(stack, "PUT", f"{base}/chunks/0", tax, content=tokens[0] * 2, headers=octets), 400, unsorted)
    assert _call(stack, "PUT", f"{base}/chunks/0", tax, content=tokens[0], headers=octets).status_code == 200
    _problem(_call(stack, "POST", f"{base}/commit", tax), 400, "invalid_input")  # 1 of 3 received
    _problem(_call(stack, "PUT", f"{base}/chunks/1", tax, content=tokens[2] + tokens[1], headers=octets), 400, unsorted)
    _problem(_call(stack, "PUT", f"{base}/chunks/1", tax, content=tokens[0] + tokens[1], headers=octets), 400, unsorted)
    assert (
        _call(stack, "PUT", f"{base}/chunks/1", tax, content=tokens[1] + tokens[2], headers=octets).status_code == 200
    )
    assert _call(stack, "POST", f"{base}/commit", tax).json()["committed"] is True
    _problem(_call(stack, "POST", f"{base}/commit", tax), 409, "conflict")
    _problem(_call(stack, "PUT", f"{base}/chunks/2", tax, content=tokens[0], headers=octets), 409, "conflict")
    _problem(_call(stack, "POST", f"/v1/connectors/tax/publications/{UNKNOWN}/commit", tax), 404, "unknown_publication")
    _problem(_call(stack, "POST", "/v1/connectors/tax/publications/nope/commit", tax), 400, "bad_publication_id")


def test_publication_digest_and_key_conflicts(stack: Stack) -> None:
    tax = stack.connector_token("tax")
    pk = oprf.generate_key_pair(oprf.Mode.VOPRF).pk
    body = _start(stack, tax, tokens=[b"\x01" * 16], public_key=pk, epoch=8).json()
    base = f"/v1/connectors/tax/publications/{body['publication_id']}"
    _call(
        stack,
        "PUT",
        f"{base}/chunks/0",
        tax,
        content=b"\x02" * 16,
        headers={"content-type": "application/octet-stream"},
    ).raise_for_status()
    _problem(_call(stack, "POST", f"{base}/commit", tax), 400, "invalid_input")
    _problem(_start(stack, tax, epoch=8), 409, "conflict")  # same epoch, another public key
    _problem(_call(stack, "POST", "/v1/connectors/tax/epochs/99/activate", tax), 404, "not_found")


def test_openapi_docs_and_request_view(stack: Stack, prosecutor: str) -> None:
    spec = HTTP.get(f"{stack.gateway_url}/openapi.json").json()
    assert "/v1/requests/{request_id}/lookups" in spec["paths"]
    assert HTTP.get(f"{stack.gateway_url}/docs").status_code == 200
    request = _request(stack, prosecutor)
    view = _call(stack, "GET", f"/v1/requests/{request['request_id']}", prosecutor).json()
    assert view["status"] == "evaluating" and [c["connector"] for c in view["connectors"]] == ["housing_fund"]
    _problem(_call(stack, "GET", f"/v1/requests/{UNKNOWN}", prosecutor), 404, "unknown_request")
    _problem(_call(stack, "GET", "/v1/requests/nope", prosecutor), 400, "bad_request_id")


# ---- values no database or audit log can hold -------------------------------------------

HUGE = str(2**63)  # one past SQLite's largest integer: an OverflowError in the query, once
HUGER = "9" * 40


@pytest.mark.parametrize(
    ("path", "code"),
    [
        (f"/v1/audit/entries/{HUGE}", "bad_seq"),
        (f"/v1/audit/entries/{HUGER}", "bad_seq"),
        ("/v1/audit/entries/²", "bad_seq"),  # a digit to str.isdigit, not to int()
        (f"/v1/audit/entries?limit={HUGE}", "bad_limit"),
        (f"/v1/audit/entries?before={HUGE}", "bad_before"),
        (f"/v1/audit/entries?seqs=1,{HUGE}", "identifier_in_filter"),  # 19 digits: screened before it is read
        (f"/v1/audit/entries.csv?seqs={HUGER}", "identifier_in_filter"),
        ("/v1/audit/entries?seqs=1,²", "bad_seqs"),
        (f"/v1/audit/policy-changes?before={HUGE}", "bad_before"),
        (f"/v1/audit/checkpoint?size={HUGE}", "bad_size"),
        (f"/v1/audit/checkpoints?since={HUGE}", "bad_since"),
        (f"/v1/audit/checkpoints?limit={HUGE}", "bad_limit"),
        (f"/v1/audit/proofs/inclusion?seq={HUGE}", "bad_seq"),
        (f"/v1/audit/proofs/inclusion?seq=1&size={HUGE}", "bad_size"),
        (f"/v1/audit/proofs/consistency?first={HUGE}&second=1", "bad_first"),
        (f"/v1/audit/proofs/consistency?first=1&second={HUGE}", "bad_second"),
        (f"/v1/audit/export/entries.jsonl?size={HUGE}", "bad_size"),
    ],
)
def test_huge_integers_in_audit_queries_are_400(stack: Stack, path: str, code: str) -> None:
    auditor = stack.user_token(["security_auditor"], subject="auditor-330000-01", org="330000")
    _problem(_call(stack, "GET", path, auditor), 400, code)


def test_huge_integers_in_paths_and_bodies_are_400(stack: Stack, prosecutor: str) -> None:
    tax = stack.connector_token("tax")
    _problem(_call(stack, "POST", f"/v1/connectors/tax/epochs/{HUGE}/activate", tax), 400, "bad_epoch")
    chunk = f"/v1/connectors/tax/publications/{UNKNOWN}/chunks/{HUGE}"
    octets = {"content-type": "application/octet-stream"}
    _problem(_call(stack, "PUT", chunk, tax, content=bytes(16), headers=octets), 400, "bad_number")
    _problem(_start(stack, tax, epoch=2**63), 400, "invalid_body")
    body = {"model": "housing_fund", "subject_count": 2**63, **PURPOSE}
    _problem(_call(stack, "POST", "/v1/requests", prosecutor, json=body), 400, "invalid_body")
    rid = _request(stack, prosecutor)["request_id"]
    lookup = {"first_row": 2**63, "tokens": {"housing_fund.balance_positive": [b64encode(bytes(16))]}}
    _problem(_call(stack, "POST", f"/v1/requests/{rid}/lookups", prosecutor, json=lookup), 400, "invalid_body")


def test_values_shaped_like_an_id_are_refused_never_recorded(stack: Stack, prosecutor: str) -> None:
    """The audit log refuses anything shaped like an ID number; such input is refused first, as a
    client error, instead of failing the call at the log (once a 500)."""
    shaped = "110101199003077777"
    tax = stack.connector_token("tax")
    _problem(_start(stack, tax, connector=f"x{shaped}"), 400, "bad_connector")
    _problem(_call(stack, "POST", f"/v1/connectors/x{shaped}/epochs/1/activate", tax), 400, "bad_connector")
    elements = {"blinded_elements": _elements(1)}
    path = f"/v1/requests/{UNKNOWN}/evaluations/x{shaped}"
    _problem(_call(stack, "POST", path, prosecutor, json=elements), 400, "bad_connector")
    _problem(_call(stack, "GET", "/v1/models", stack.user_token(["prosecutor"], subject=shaped)), 401, "token_invalid")
    admin = stack.user_token(["security_admin"], subject="secadmin-330000-01", org="330000")
    _problem(_call(stack, "PATCH", "/v1/orgs/330803", admin, json={"name": f"衢江{shaped}"}), 400, "invalid_body")
    org = {"code": "330899", "name": f"测试{shaped}", "parent": "330800"}
    _problem(_call(stack, "POST", "/v1/orgs", admin, json=org), 400, "invalid_body")


def test_a_body_that_is_not_text_is_invalid(stack: Stack, prosecutor: str) -> None:
    json_header = {"content-type": "application/json"}
    _problem(
        _call(stack, "POST", "/v1/requests", prosecutor, content=b"\x97", headers=json_header), 400, "invalid_body"
    )


def test_unknown_routes_and_methods_are_problems(stack: Stack) -> None:
    _problem(_call(stack, "GET", "/v1/nothing-here"), 404, "http_404")
    not_allowed = _call(stack, "DELETE", "/v1/requests")
    _problem(not_allowed, 405, "http_405")
    assert not_allowed.headers["allow"] == "GET, POST"  # RFC 9110: a 405 names the methods there are
    admin = stack.user_token(["security_admin"], subject="secadmin-330000-01", org="330000")
    other = _call(stack, "OPTIONS", "/v1/orgs/330803", admin)
    assert other.status_code == 405 and other.headers["allow"] == "DELETE, PATCH"  # two routes, one path


def test_concurrent_batches_cannot_exceed_the_subject_count(stack: Stack, prosecutor: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    request = _request(stack, prosecutor, n=3)
    url = f"/v1/requests/{request['request_id']}/evaluations/housing_fund"
    batches = [_elements(2) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        statuses = sorted(
            pool.map(lambda b: _call(stack, "POST", url, prosecutor, json={"blinded_elements": b}).status_code, batches)
        )
    assert statuses == [200, 409, 409, 409]
