"""The gateway's state is one typed GatewayServices, built in the lifespan; routes reach it
only through typed dependencies, never an attribute of `app.state` looked up by name."""

from __future__ import annotations

import ast
import dataclasses
import typing

import pytest
from fastapi import FastAPI

from devkit.environment import REPO_ROOT
from gateway.admission import Admission
from gateway.api import gateway_services
from gateway.pipeline import Pipeline
from gateway.services import GatewayServices
from tests.stack import Stack


def test_the_lifespan_keeps_one_typed_container(fresh_stack: Stack) -> None:
    app = fresh_stack.servers[-1].app  # the gateway
    services = gateway_services(app)
    assert isinstance(services.admission, Admission) and isinstance(services.pipeline, Pipeline)
    # Nothing else beside it: the telemetry is the app's from construction, before any lifespan.
    assert sorted(vars(app.state)["_state"]) == ["services", "telemetry"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        services.pipeline = services.pipeline  # type: ignore[misc]
    for field in dataclasses.fields(GatewayServices):
        hint = typing.get_type_hints(GatewayServices)[field.name]
        assert hint is not typing.Any, field.name
        assert isinstance(getattr(services, field.name), typing.get_args(hint) or hint), field.name


def test_the_services_exist_only_while_the_gateway_runs() -> None:
    with pytest.raises(RuntimeError):
        gateway_services(FastAPI())


def test_routes_reach_no_state_by_name() -> None:
    """Only gateway_services (gateway/api.py) and the lifespan (gateway/app.py) touch app.state."""
    touches = []
    for path in (REPO_ROOT / "gateway").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "state" and _is_app(node.value):
                touches.append((path.name, node.lineno))
    assert {name for name, _ in touches} <= {"api.py", "app.py"}
    assert len([1 for name, _ in touches if name == "api.py"]) == 1  # inside gateway_services


def _is_app(node: ast.expr) -> bool:
    """`app` or `….app`: the application whose `.state` is meant (a row's `state` is not)."""
    return (isinstance(node, ast.Name) and node.id == "app") or (isinstance(node, ast.Attribute) and node.attr == "app")
