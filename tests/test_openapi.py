"""The OpenAPI document declares what the gateway really answers: its error statuses as problem
details, its security (a bearer JWT over mutual TLS), and no validation error it never sends.

tests/test_api_errors.py holds every problem it provokes to its route's declared statuses,
and tests/test_api_fuzz.py (schemathesis) every answer a fuzzed request gets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devkit.environment import init_dev
from gateway.app import create_app
from gateway.openapi import operations
from gateway.settings import GatewaySettings

PROBLEM = {"$ref": "#/components/schemas/Problem"}
# No caller token (mutual TLS still), and the problems each answers: liveness and the ticket
# keys none; readiness 503 (an open alarm, no database); the log's newest checkpoint 404
# before the first; Prometheus metrics 404 when not served.
PUBLIC = {
    ("get", "/healthz"): set(),
    ("get", "/.well-known/jwks.json"): set(),
    ("get", "/readyz"): {503},
    ("get", "/checkpoint"): {404, 503},
    ("get", "/metrics"): {404},  # metrics not served (telemetry.prometheus off)
}
# Routes that decide nothing by policy: any authenticated caller may list these.
# Answered to any signed-in caller, about themselves or the catalogue: no policy decision.
UNDECIDED = {("get", "/v1/models"), ("get", "/v1/orgs"), ("get", "/v1/requests"), ("get", "/v1/me")}
# Statuses particular to a route, beyond what its shape implies.
PARTICULAR = {
    ("post", "/v1/requests"): {404, 409, 429},  # unknown model; waiting for approval; quota spent
    ("post", "/v1/requests/{request_id}/evaluations/{connector}"): {409, 422, 502},
    ("post", "/v1/requests/{request_id}/lookups"): {409},
    ("get", "/v1/requests/{request_id}/result"): {409, 410},  # not completed; deleted after retention
    ("post", "/v1/approvals/{request_id}/approve"): {409},
    ("post", "/v1/approvals/{request_id}/reject"): {409},
    ("put", "/v1/policy"): {409},  # the decision tables fail
    ("post", "/v1/orgs"): {409},
    ("delete", "/v1/orgs/{code}"): {409},
    ("post", "/v1/keys/rotate"): {409},
    ("post", "/v1/connectors/{connector}/publications"): {409},
    ("put", "/v1/connectors/{connector}/publications/{publication_id}/chunks/{number}"): {409},
    ("get", "/v1/audit/checkpoint"): {404},
}


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("openapi")
    dev = init_dev(root, connectors={}, database_url=f"sqlite:///{root / 'gateway.sqlite'}")
    served: dict[str, Any] = create_app(GatewaySettings.from_file(dev.gateway_config)).openapi()
    return served


def _each(document: dict[str, Any]) -> list[tuple[tuple[str, str], dict[str, Any]]]:
    return [((method, path), op) for path, item in document["paths"].items() for method, op in item.items()]


def test_security_schemes_are_a_bearer_jwt_over_mutual_tls(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    assert schemes["mutualTLS"]["type"] == "mutualTLS"
    for key, operation in _each(document):
        schemes_needed = ["mutualTLS"] if key in PUBLIC else ["bearerAuth", "mutualTLS"]
        assert operation["security"] == [{scheme: [] for scheme in schemes_needed}], key
        # The token is the security scheme's, not a header parameter of its own.
        assert all(p["name"].lower() != "authorization" for p in operation.get("parameters", [])), key


def test_every_route_declares_the_problems_it_can_answer(document: dict[str, Any]) -> None:
    for key, operation in _each(document):
        answers = {int(status) for status in operation["responses"] if status.isdigit() and int(status) >= 400}
        if key in PUBLIC:
            assert answers == PUBLIC[key], key
            continue
        expected = {401, 503} | ({403} if key not in UNDECIDED else set())
        if operation.get("parameters") or operation.get("requestBody"):
            expected.add(400)
        if any(p["in"] == "path" for p in operation.get("parameters", [])):
            expected.add(404)
        expected |= PARTICULAR.get(key, set())
        assert expected <= answers, (key, sorted(expected - answers))
        for status in answers:
            response = operation["responses"][str(status)]
            assert response["content"] == {"application/problem+json": {"schema": PROBLEM}}, (key, status)
        assert "Retry-After" in operation["responses"]["503"]["headers"]
        assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
    assert set(PARTICULAR) <= {key for key, _ in _each(document)}  # the table names real routes


def test_no_validation_error_the_gateway_never_sends(document: dict[str, Any]) -> None:
    """FastAPI's 422 HTTPValidationError is gone: a request that fails validation is a 400 problem."""
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    for key, operation in _each(document):
        unprocessable = operation["responses"].get("422")
        assert unprocessable is None or unprocessable["content"]["application/problem+json"]["schema"] == PROBLEM, key
    problem = schemas["Problem"]
    assert set(problem["required"]) == {"title", "status", "detail", "code"}
    assert {"type", "title", "status", "detail", "code", "limit", "resets_at"} <= set(problem["properties"])


def test_every_operation_is_seen(document: dict[str, Any]) -> None:
    assert len(operations(document)) == len(_each(document)) >= 37


def test_the_served_document_is_the_completed_one(tmp_path: Path) -> None:
    dev = init_dev(tmp_path, connectors={}, database_url=f"sqlite:///{tmp_path / 'gateway.sqlite'}")
    app = create_app(GatewaySettings.from_file(dev.gateway_config))
    assert app.openapi() is app.openapi()  # completed once, then kept
    assert "securitySchemes" in app.openapi()["components"]


def test_every_json_request_body_has_an_example_the_service_accepts(document: dict[str, Any]) -> None:
    """Each JSON body's schema carries an example, and it parses as the body it stands for."""
    from xiezhi import wire

    schemas = document["components"]["schemas"]
    bodies = {
        op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        for _, op in _each(document)
        if "application/json" in op.get("requestBody", {}).get("content", {})
    }
    assert len(bodies) >= 10
    for name in bodies:
        examples = schemas[name].get("examples")
        assert examples, name
        for example in examples:
            getattr(wire, name).model_validate(example)
