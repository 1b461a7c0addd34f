"""Schemathesis over the gateway's own OpenAPI document, as every role, against the served stack.

For each role a token and the client certificate its system holds (a connector's own), and
for each operation of the document valid and invalid inputs drawn from its schemas, sent over
mutual TLS to the running gateway. Every answer must be no 5xx (but the 502 and 503 the
document declares), a status the operation declares, the content type it declares, and a
body matching the declared schema (problem details included). The examples per operation
are few and derandomised, so the run is the same each time and stays within a minute or two;
$XIEZHI_FUZZ_EXAMPLES asks for more (e.g. 200) for a deeper search by hand.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok
from schemathesis.errors import FailureGroup

from tests.stack import HTTP, ORG, Stack, client_for, session_pki
from xiezhi.tls import TLSFiles

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("XIEZHI_FUZZ_EXAMPLES", "4"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
PROVINCE = "330000"


@dataclass(frozen=True)
class Role:
    name: str
    token: Callable[[Stack], str]
    certificate: Callable[[], TLSFiles]


def _user(role: str, org: str) -> Role:
    def token(stack: Stack) -> str:
        return stack.user_token([role], subject=f"fuzz-{role}-{org}", org=org)

    return Role(role, token, lambda: session_pki().client(client_for([role])))


ROLES = [
    _user("prosecutor", ORG),
    _user("dept_head", ORG),
    _user("security_auditor", PROVINCE),
    _user("security_admin", PROVINCE),
    _user("system_admin", PROVINCE),
    Role("connector", lambda stack: stack.connector_token("court"), lambda: session_pki().connector("court")),
]


@pytest.fixture(scope="module")
def document(stack: Stack) -> dict[str, Any]:
    response = HTTP.get(f"{stack.gateway_url}/openapi.json")
    assert response.status_code == 200
    served: dict[str, Any] = response.json()
    return served


@dataclass(frozen=True)
class Caller:
    """How one role reaches the gateway: its token and its system's certificate."""

    url: str
    headers: dict[str, str]
    transport: dict[str, Any]  # requests' verify, cert and timeout
    session: requests.Session


def _caller(stack: Stack, role: Role, session: requests.Session) -> Caller:
    files = role.certificate()
    transport = {"verify": str(files.ca), "cert": (str(files.cert), str(files.key)), "timeout": 60}
    return Caller(stack.gateway_url, {"authorization": f"Bearer {role.token(stack)}"}, transport, session)


def _fuzz(operation: schemathesis.APIOperation[Any, Any, Any, Any], mode: GenerationMode, caller: Caller) -> list[str]:
    """Send `operation` EXAMPLES generated cases; the checks each answer failed, one line per case."""
    failures: list[str] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case[Any]) -> None:
        response = case.call(base_url=caller.url, session=caller.session, headers=caller.headers, **caller.transport)
        try:
            case.validate_response(response, checks=CHECKS, headers=caller.headers, transport_kwargs=caller.transport)
        except FailureGroup as failed:  # kept, not shrunk: the run goes on and reports them all
            found = "; ".join(sorted({str(f).strip().splitlines()[0] for f in failed.exceptions}))
            failures.append(f"{mode.value} {operation.label} → {response.status_code}: {found}")

    try:
        run()
    except Unsatisfiable:  # an operation without input has no invalid input to send
        assert mode is GenerationMode.NEGATIVE, operation.label
    return failures


@pytest.mark.parametrize("role", ROLES, ids=[role.name for role in ROLES])
def test_no_input_makes_the_gateway_fail_or_answer_off_its_document(
    stack: Stack, document: dict[str, Any], role: Role
) -> None:
    schema = schemathesis.openapi.from_dict(document)
    failures: list[str] = []
    with requests.Session() as session:
        caller = _caller(stack, role, session)
        for result in schema.get_all_operations():
            assert isinstance(result, Ok), result.err()  # every operation of the document reads as OpenAPI
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                failures += _fuzz(result.ok(), mode, caller)
    assert failures == [], f"as {role.name}:\n" + "\n".join(failures[:40])
