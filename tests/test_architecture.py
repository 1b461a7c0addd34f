"""The layering rules of ARCHITECTURE.md, checked by walking every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("xiezhi", "gateway", "connectors", "audit_log")

# library → the only modules allowed to import it
RESTRICTED = {
    "pysodium": {"xiezhi/group.py"},
    "cryptography": {"xiezhi/crypto.py", "xiezhi/pki.py"},  # pki: X.509 certificates of the development CA
    "casbin": {"gateway/authz/engine.py", "gateway/authz/policy.py", "gateway/authz/store.py"},
    "sqlalchemy_adapter": {"gateway/authz/store.py"},
    "fastapi": {
        "gateway/api.py",
        "gateway/app.py",
        "gateway/audit_api.py",
        "gateway/review_api.py",
        "xiezhi/problems.py",
        "connectors/service.py",
    },
    "starlette": {"xiezhi/problems.py"},
    # Everything else records through xiezhi.telemetry's helpers, behind the redaction layer.
    "opentelemetry": {"xiezhi/telemetry/__init__.py", "xiezhi/telemetry/providers.py", "xiezhi/telemetry/export.py"},
    "httpx": {
        "gateway/relay.py",
        "connectors/publisher.py",
        "connectors/gateway_keys.py",  # the gateway's ticket JWKS, over mutual TLS
        "xiezhi/client/gateway_client.py",
        "xiezhi/demo/services.py",
        "gateway/witnessing.py",
        "gateway/links.py",
    },
}
# Pure protocol modules: no I/O libraries at all.
PURE = {
    "xiezhi/ids.py",
    "xiezhi/oprf.py",
    "xiezhi/group.py",
    "xiezhi/wire.py",
    "xiezhi/tickets.py",
    "connectors/reduce.py",
    "audit_log/entries.py",
}
IO_LIBRARIES = {"httpx", "fastapi", "sqlalchemy", "sqlmodel", "uvicorn", "sqlite3", "requests"}
# package → packages it must never import
FORBIDDEN = {"gateway": {"connectors"}, "connectors": {"gateway"}, "audit_log": {"gateway", "connectors"}}


def _modules() -> list[Path]:
    return [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {name.split(".")[0] for name in names}


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_layering(path: Path) -> None:
    rel = str(path.relative_to(ROOT))
    imported = _imports(path)
    for library, allowed in RESTRICTED.items():
        if library in imported:
            assert rel in allowed, f"{rel} imports {library}; only {sorted(allowed)} may"
    if rel in PURE:
        assert not imported & IO_LIBRARIES, f"{rel} is pure protocol code but imports {imported & IO_LIBRARIES}"
    package = rel.split("/")[0]
    assert not imported & FORBIDDEN.get(package, set()), f"{rel} crosses a package boundary"


def test_the_walk_sees_the_restricted_modules() -> None:
    # Guard against a walk that silently finds nothing.
    seen = {str(p.relative_to(ROOT)) for p in _modules()}
    assert {"xiezhi/group.py", "xiezhi/crypto.py", "gateway/authz/engine.py"} <= seen
    assert "pysodium" in _imports(ROOT / "xiezhi/group.py")
