"""The example production settings (deploy/config/) explain every option, and a production
gateway refuses to start while one of their CHANGE-ME placeholders is left."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from devkit.environment import REPO_ROOT, init_dev
from gateway.settings import GatewaySettings
from xiezhi.placeholders import placeholder_fields

EXAMPLE = REPO_ROOT / "deploy" / "config" / "gateway.example.yaml"


def _fields(model: type[BaseModel], where: str = "") -> set[str]:
    """Every option's dotted path, nested settings models included."""
    names: set[str] = set()
    for name, info in model.model_fields.items():
        path = f"{where}.{name}" if where else name
        names.add(path)
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= _fields(annotation, path)
        for arg in getattr(annotation, "__args__", ()):  # X | None
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                names |= _fields(arg, path)
    return names


def _written(value: Any, where: str = "") -> set[str]:
    names: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            names.add(path)
            names |= _written(item, path)
    return names


def test_the_example_lists_every_option() -> None:
    written = _written(yaml.safe_load(EXAMPLE.read_text(encoding="utf-8")))
    # Free-form maps (connector ids, clients, witnesses, kids) hold examples, not options.
    missing = sorted(_fields(GatewaySettings) - written - {"telemetry.path", "ticket_keys"})
    assert not missing, f"{EXAMPLE.name} does not explain {missing}"
    text = EXAMPLE.read_text(encoding="utf-8")
    assert "# path:" in text  # telemetry.path: shown commented (file exporter only)
    assert "# ticket_keys:" in text  # shown commented (an upgrade from a release that kept a key folder)


def test_production_refuses_the_example_while_a_placeholder_is_left() -> None:
    with pytest.raises(ValidationError, match="placeholder left in") as refused:
        GatewaySettings.from_file(EXAMPLE)
    message = str(refused.value)
    for field in ("database_url", "issuer", "identity_keys.CHANGE-ME-kid", "audit.witnesses.court"):
        assert field in message


def test_placeholders_are_found_in_keys_values_and_lists_in_any_case() -> None:
    found = placeholder_fields({"a": "x", "b": {"change-me": 1, "c": ["ok", "url/Change-Me/"]}, "d": 3})
    assert found == ["b.c[1]", "b.change-me"]


def test_development_settings_refuse_a_placeholder_too(tmp_path: Path) -> None:
    """An example value left in is refused in every environment, naming the field only."""
    dev = init_dev(tmp_path, connectors={}, database_url=f"sqlite:///{tmp_path / 'g.sqlite'}")
    raw = yaml.safe_load(dev.gateway_config.read_text(encoding="utf-8"))
    GatewaySettings.model_validate(raw)
    for environment in ("development", "production"):
        with pytest.raises(ValidationError, match="placeholder left in issuer;") as refused:
            GatewaySettings.model_validate({**raw, "issuer": "https://CHANGE-ME.example", "environment": environment})
        assert "CHANGE-ME.example" not in str(refused.value).split("[type=")[0]


def test_the_kubernetes_config_maps_carry_every_policy_file() -> None:
    """deploy/k8s generates the policy ConfigMaps file by file (a ConfigMap holds no folders), and
    the gateway's projected volume lays out tests/ and models/: a new policy file must be added there."""
    policies = REPO_ROOT / "policies"
    kustomization = yaml.safe_load((REPO_ROOT / "deploy/k8s/base/kustomization.yaml").read_text(encoding="utf-8"))
    generated = {
        str((REPO_ROOT / "deploy/k8s/base" / f).resolve().relative_to(policies.resolve()))
        for generator in kustomization["configMapGenerator"]
        for f in generator["files"]
    }
    on_disk = {str(p.relative_to(policies)) for p in policies.rglob("*") if p.is_file()}
    assert generated == on_disk
    gateway = next(yaml.safe_load_all((REPO_ROOT / "deploy/k8s/base/gateway.yaml").read_text(encoding="utf-8")))
    volume = next(v for v in gateway["spec"]["template"]["spec"]["volumes"] if v["name"] == "policies")
    sources = volume["projected"]["sources"]
    laid_out = {item["path"] for source in sources for item in source["configMap"].get("items", [])}
    assert laid_out == {p for p in on_disk if "/" in p}


def test_the_connector_example_names_every_flag_of_serve_and_publish() -> None:
    """deploy/config/connector.example.yaml explains each flag (commented ones included)."""
    import inspect

    from cli.connector import connector_publish, connector_serve

    text = (REPO_ROOT / "deploy/config/connector.example.yaml").read_text(encoding="utf-8")
    for command in (connector_serve, connector_publish):
        for name in inspect.signature(command).parameters:
            assert f"{name.replace('_', '-')}:" in text, f"{command.__name__}: --{name.replace('_', '-')} not explained"
