"""Authorization is a type: only gateway.authz mints an AuthorizedRequest, and the code that
relays to connectors and looks tokens up accepts nothing else, so the type checker shows
authorization ran before any data moved."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import typing
from collections.abc import Callable

import pytest

from devkit.environment import REPO_ROOT
from gateway import indexes, lookups
from gateway.auth import Principal
from gateway.authz import AuthorizedRequest, Authorizer, load_policy_dir, permit
from gateway.evaluation import BlindEvaluation
from gateway.relay import ConnectorRelay

PROSECUTOR = Principal("prosecutor-330803-01", "330803", frozenset({"prosecutor"}), clearance=3)
AUTHORIZER = Authorizer(load_policy_dir(REPO_ROOT / "policies"))

# Every function through which data reaches a connector or an index, and its permit parameter.
GUARDED: list[Callable[..., object]] = [
    ConnectorRelay.evaluate,  # the one call that sends blinded elements to a connector
    indexes.present,  # the one lookup of tokens in a published index
    BlindEvaluation.relay,
    lookups.find,
]


@pytest.mark.parametrize("function", GUARDED, ids=lambda f: f.__qualname__)
def test_relay_and_lookup_take_a_permit(function: Callable[..., object]) -> None:
    hints = typing.get_type_hints(function)
    assert hints["permit"] is AuthorizedRequest
    # The request and the caller come from the permit, never beside it as bare values.
    names = set(inspect.signature(function).parameters)
    assert not names & {"request_id", "principal"}, names


def _permit() -> AuthorizedRequest:
    return permit(PROSECUTOR, "r-1", "run", AUTHORIZER.decide(PROSECUTOR, "model:asset_sweep", "run"))


def test_a_permit_cannot_be_made_or_copied_outside_authz() -> None:
    allowed = _permit()
    assert (allowed.request_id, allowed.action, allowed.principal) == ("r-1", "run", PROSECUTOR)
    with pytest.raises(TypeError):
        AuthorizedRequest(PROSECUTOR, "r-1", "run", allowed.decision, object())
    with pytest.raises(TypeError):
        AuthorizedRequest(PROSECUTOR, "r-1", "run", allowed.decision)  # type: ignore[call-arg]
    with pytest.raises(ValueError):  # the token is not stored, so replace() has none to copy
        dataclasses.replace(allowed, request_id="someone-elses")  # type: ignore[call-arg]
    with pytest.raises(dataclasses.FrozenInstanceError):
        allowed.request_id = "someone-elses"  # type: ignore[misc]


def test_no_module_outside_authz_constructs_a_permit() -> None:
    """Only gateway/authz names the class in a call; everyone else receives permits."""
    makers = []
    for package in ("xiezhi", "audit_log", "gateway", "connectors", "requester", "devkit", "cli"):
        for path in (REPO_ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and _called(node) == "AuthorizedRequest":
                    makers.append(str(path.relative_to(REPO_ROOT)))
    assert makers == ["gateway/authz/__init__.py"]


def _called(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def test_the_scan_sees_a_planted_maker() -> None:
    planted = ast.parse("from gateway.authz import AuthorizedRequest\nAuthorizedRequest(1, 2, 3, 4, 5)\n")
    calls = [n for n in ast.walk(planted) if isinstance(n, ast.Call)]
    assert [_called(c) for c in calls] == ["AuthorizedRequest"]
