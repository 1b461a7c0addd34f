"""The gateway's OpenAPI document as the service really answers.

FastAPI draws each operation from its route: parameters, body, the success response, and
the error statuses the route declares (`xiezhi.problems.responses`, problem details).
`complete` then finishes the document once, when it is first asked for:

- the `Problem` schema (`xiezhi.wire.Problem`) that every error response refers to;
- no 422 "Validation Error": FastAPI assumes one for every route with input, but the
  gateway answers a request that fails validation with a 400 problem detail;
- the security schemes. Every call comes over mutual TLS (`mutualTLS`, OpenAPI 3.1), with
  a client certificate from the deployment's CA; every operation that can answer 401 also
  needs the identity provider's bearer JWT (`bearerAuth`), whose roles the certificate
  must carry (`gateway.auth.ClientChannels`).

It is a pure function of the document FastAPI generated; `gateway.app` installs it.
"""

from __future__ import annotations

from typing import Any

from xiezhi.wire import Problem

BEARER = "bearerAuth"
MUTUAL_TLS = "mutualTLS"
SECURITY_SCHEMES = {
    BEARER: {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A JWT from the identity provider (EdDSA or ES256, `kid` naming its key): "
        "subject, organisation, roles, clearance.",
    },
    MUTUAL_TLS: {
        "type": "mutualTLS",
        "description": "A client certificate from the deployment's CA, naming the calling system; "
        "each system's certificate carries only the roles the gateway's `clients` setting maps to it, "
        "a connector's only its own connector identity.",
    },
}
_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """Finish `document` in place (see the module's docstring) and return it."""
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in _VALIDATION_SCHEMAS:
        schemas.pop(name, None)
    schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components["securitySchemes"] = SECURITY_SCHEMES
    for operation in operations(document):
        answers = operation.setdefault("responses", {})
        if _is_validation_error(answers.get("422")):
            del answers["422"]
        needs_token = "401" in answers
        operation["security"] = [{BEARER: [], MUTUAL_TLS: []} if needs_token else {MUTUAL_TLS: []}]
    return document


def operations(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Every operation object of `document`, path by path."""
    return [
        operation
        for item in document.get("paths", {}).values()
        for method, operation in item.items()
        if method in _METHODS and isinstance(operation, dict)
    ]


def _is_validation_error(response: object) -> bool:
    """FastAPI's default 422, which refers to HTTPValidationError (the gateway's own 422, a
    proof that does not verify, refers to Problem)."""
    return isinstance(response, dict) and "HTTPValidationError" in str(response.get("content", ""))


__all__ = ["SECURITY_SCHEMES", "complete", "operations"]
