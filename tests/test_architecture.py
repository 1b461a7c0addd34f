"""The layering rules of ARCHITECTURE.md, checked by walking every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The layers, bottom up: each package may import only itself and the packages listed for it.
# ARCHITECTURE.md draws the same table; test_the_table_is_the_documented_one holds them together.
LAYERS: dict[str, set[str]] = {
    "xiezhi": set(),  # the core every party shares
    "audit_log": {"xiezhi"},
    "gateway": {"xiezhi", "audit_log"},
    "connectors": {"xiezhi", "audit_log"},  # audit_log: the witness a connector runs
    "requester": {"xiezhi"},
    "devkit": {"xiezhi", "audit_log", "gateway", "connectors", "requester"},
    "cli": {"xiezhi", "audit_log", "gateway", "connectors", "requester", "devkit"},
}
PACKAGES = tuple(LAYERS)

# library → the only modules allowed to import it
RESTRICTED = {
    "pysodium": {"xiezhi/group.py"},
    "cryptography": {"xiezhi/crypto.py", "devkit/pki.py"},  # pki: X.509 certificates of the development CA
    "casbin": {"gateway/authz/engine.py", "gateway/authz/policy.py", "gateway/authz/store.py"},
    "sqlalchemy_adapter": {"gateway/authz/store.py"},
    "fastapi": {
        "gateway/api.py",
        "gateway/app.py",
        "gateway/audit_api.py",
        "gateway/review_api.py",
        "gateway/system_api.py",
        "xiezhi/problems.py",
        "xiezhi/apidocs.py",  # /docs with Swagger UI served from the installation
        "connectors/service.py",
    },
    "starlette": {"xiezhi/problems.py", "xiezhi/apidocs.py"},
    "swagger_ui_bundle": {"xiezhi/apidocs.py"},
    # Everything else records through xiezhi.telemetry's helpers, behind the redaction layer.
    "opentelemetry": {"xiezhi/telemetry/__init__.py", "xiezhi/telemetry/providers.py", "xiezhi/telemetry/export.py"},
    "httpx": {
        "gateway/relay.py",
        "connectors/publisher.py",
        "connectors/gateway_keys.py",  # the gateway's ticket JWKS, over mutual TLS
        "requester/gateway_client.py",
        "requester/witness_reader.py",  # an auditor reading a witness's cosigned checkpoint
        "devkit/demo/services.py",
        "gateway/witnessing.py",
        "gateway/links.py",
    },
    "typer": {str(p.relative_to(ROOT)) for p in (ROOT / "cli").glob("*.py")},  # the command line only
    "ray": {"connectors/engines.py"},  # an optional extra, imported only when a Ray address is configured
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
    "gateway/slots.py",
}
IO_LIBRARIES = {"httpx", "fastapi", "sqlalchemy", "sqlmodel", "uvicorn", "sqlite3", "requests"}


def _modules() -> list[Path]:
    return [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]


def _dotted_imports(path: Path) -> set[str]:
    """Every dotted name `path` imports, wherever the import stands: `a.b` for `import a.b`,
    and `a.b` and `a.b.c` for `from a.b import c`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _imports(path: Path) -> set[str]:
    """Top-level names of every module `path` imports."""
    return {name.split(".")[0] for name in _dotted_imports(path)}


def _module_names(path: Path) -> set[str]:
    """Dotted names of the project's modules `path` imports."""
    return {name for name in _dotted_imports(path) if name.split(".")[0] in LAYERS}


def _module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


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
    reached = (imported & set(LAYERS)) - {package}
    assert reached <= LAYERS[package], f"{rel} imports {sorted(reached - LAYERS[package])}, above its layer"


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle in `graph` (module → modules it imports), or None."""
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> list[str] | None:
        if name in trail:
            return [*trail[trail.index(name) :], name]
        if name in done:
            return None
        for target in sorted(graph.get(name, ())):
            found = visit(target, [*trail, name])
            if found:
                return found
        done.add(name)
        return None

    for name in sorted(graph):
        found = visit(name, [])
        if found:
            return found
    return None


def test_no_import_circle_between_modules() -> None:
    """No two modules import each other, directly or around a loop (imports inside functions count)."""
    modules = {_module_of(p): p for p in _modules()}
    graph = {name: {m for m in _module_names(path) if m in modules and m != name} for name, path in modules.items()}
    # A package's __init__ importing its own modules is how a package presents itself.
    graph = {name: {m for m in targets if not m.startswith(name + ".")} for name, targets in graph.items()}
    circle = _circle(graph)
    assert circle is None, "import circle: " + " → ".join(circle or [])


def test_the_circle_check_finds_a_planted_circle() -> None:
    # The shape the command line once had: cli imported audit_cli, which imported cli back.
    assert _circle({"cli.main": {"cli.auditor"}, "cli.auditor": {"cli.common", "cli.main"}, "cli.common": set()}) == [
        "cli.auditor",
        "cli.main",
        "cli.auditor",
    ]
    assert _circle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_table_is_the_documented_one() -> None:
    """ARCHITECTURE.md's package table names, for each package, exactly the layers allowed here."""
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    documented: dict[str, set[str]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`") and cells[0].endswith("/`"):
            imports = cells[2]
            documented[cells[0].strip("`/")] = {
                name for name in PACKAGES if f"`{name}`" in imports.split("never")[0].split("—")[0]
            }
    assert documented == LAYERS


def test_the_walk_sees_every_package_and_the_restricted_modules() -> None:
    # Guard against a walk that silently finds nothing.
    seen = {str(p.relative_to(ROOT)) for p in _modules()}
    assert {"xiezhi/group.py", "xiezhi/crypto.py", "gateway/authz/engine.py", "cli/main.py"} <= seen
    assert {rel.split("/")[0] for rel in seen} == set(PACKAGES)
    assert "pysodium" in _imports(ROOT / "xiezhi/group.py")


@pytest.mark.parametrize(
    ("package", "source", "allowed"),
    [
        ("xiezhi", "from gateway.vault import Vault", False),
        ("requester", "import gateway.settings", False),
        ("requester", "from connectors.keys import KeyStore", False),
        ("gateway", "from connectors import roster", False),
        ("connectors", "from gateway import db", False),
        ("audit_log", "from requester import job", False),
        ("cli", "from devkit.environment import issue_token", True),
        ("gateway", "from audit_log import AuditLog", True),
    ],
)
def test_the_rule_catches_an_import_running_up(
    tmp_path: Path, package: str, source: str, allowed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The layering check, run on a planted module, fails exactly for an import above its layer."""
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    (tmp_path / package).mkdir()
    planted = tmp_path / package / "planted.py"
    planted.write_text(f"def f() -> None:\n    {source}\n", encoding="utf-8")
    if allowed:
        test_layering(planted)
    else:
        with pytest.raises(AssertionError, match="above its layer"):
            test_layering(planted)
