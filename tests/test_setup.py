"""Set-up of a gateway and a connector (`gateway/setup.py`, `connectors/setup.py`): what they write
loads, key files are the owner's alone, nothing is overwritten, and settings with placeholders
or (in production) missing key files are refused naming the field."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from cli import common
from cli.main import app
from connectors.keys import KeyStore
from connectors.setup import ConnectorFile, init_connector
from devkit.pki import DevPki, init_pki
from gateway.settings import GatewaySettings
from gateway.setup import GatewayKeys, GatewaySetup, add_witness, init_gateway
from xiezhi.errors import Conflict, InvalidInput, NotFound

NOW = datetime(2026, 1, 5, tzinfo=UTC)
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return init_pki(tmp_path_factory.mktemp("pki"), ["court", "tax"], ["requester"], NOW)


def _setup(folder: Path, pki: DevPki, **changes: object) -> GatewaySetup:
    values: dict[str, object] = {
        "config": folder / "gateway.yaml",
        "keys": GatewayKeys(folder / "keys"),
        "database_url": "sqlite:///{here}/gateway.sqlite",
        "connectors": {"court": "https://127.0.0.1:8101", "tax": "https://127.0.0.1:8102"},
        "tls": pki.gateway(),
        "issuer": "https://idp.example",
        "audience": "xiezhi-gateway",
        "policy_dir": REPO / "policies",
        "models_dir": REPO / "policies" / "models",
        "clients": {"requester": ("prosecutor", "dept_head")},
        "environment": "development",
    }
    return GatewaySetup(**{**values, **changes})  # type: ignore[arg-type]


def _private(path: Path) -> bool:
    return path.stat().st_mode & 0o077 == 0


def test_gateway_init_writes_settings_that_load_and_keys_only_the_owner_reads(tmp_path: Path, pki: DevPki) -> None:
    settings = init_gateway(_setup(tmp_path, pki), NOW)

    assert settings == GatewaySettings.from_file(tmp_path / "gateway.yaml")
    assert settings.environment == "development" and set(settings.connectors) == {"court", "tax"}
    assert settings.clients == {"requester": frozenset({"prosecutor", "dept_head"})}
    assert settings.audit.witnesses == {}
    keys = GatewayKeys(tmp_path / "keys")
    assert all(_private(p) for p in (keys.keyring, keys.audit_key, keys.idp_key))
    assert "ticket_keys" not in (tmp_path / "gateway.yaml").read_text()  # the gateway keeps them in its database
    assert settings.identity_keys["dev-idp-1"].read_text().startswith("-----BEGIN PUBLIC KEY-----")


def test_gateway_init_in_production_takes_the_given_identity_key(tmp_path: Path, pki: DevPki) -> None:
    idp = tmp_path / "idp.pub"
    idp.write_text("-----BEGIN PUBLIC KEY-----\n")
    settings = init_gateway(_setup(tmp_path, pki, environment="production", identity_keys={"k1": idp}), NOW)
    assert settings.environment == "production" and settings.identity_keys == {"k1": idp.resolve()}
    assert not GatewayKeys(tmp_path / "keys").idp_key.exists()  # production brings its own identity provider


def test_gateway_init_in_production_needs_an_identity_key(tmp_path: Path, pki: DevPki) -> None:
    with pytest.raises(InvalidInput, match="identity provider"):
        init_gateway(_setup(tmp_path, pki, environment="production"), NOW)
    assert not (tmp_path / "keys").exists()


def test_gateway_init_refuses_to_overwrite_and_writes_nothing(tmp_path: Path, pki: DevPki) -> None:
    keys = GatewayKeys(tmp_path / "keys")
    keys.folder.mkdir()
    keys.audit_key.write_text("an operator's key\n")
    with pytest.raises(Conflict, match=re.escape(str(keys.audit_key))):
        init_gateway(_setup(tmp_path, pki), NOW)
    assert keys.audit_key.read_text() == "an operator's key\n"
    assert not keys.keyring.exists() and not (tmp_path / "gateway.yaml").exists()

    keys.audit_key.unlink()
    init_gateway(_setup(tmp_path, pki), NOW)
    before = (tmp_path / "gateway.yaml").read_bytes()
    with pytest.raises(Conflict, match=r"gateway\.yaml"):
        init_gateway(_setup(tmp_path, pki, database_url="sqlite:///other.sqlite"), NOW)
    assert (tmp_path / "gateway.yaml").read_bytes() == before


def _connector(tmp_path: Path, pki: DevPki, name: str = "court") -> tuple[Path, str]:
    config = tmp_path / name / "connector.yaml"
    vkey = init_connector(
        config,
        connector=name,
        key_dir=tmp_path / f"{name}-keys",
        ticket_jwks_url="https://127.0.0.1:8000/.well-known/jwks.json",
        log_key=str(GatewayKeys(tmp_path / "keys").audit_vkey),
        tls=pki.connector(name),
        port=8101,
    )
    return config, vkey


def test_connector_init_writes_keys_and_settings_that_load(tmp_path: Path, pki: DevPki) -> None:
    gateway = init_gateway(_setup(tmp_path, pki), NOW)
    config, vkey = _connector(tmp_path, pki)

    loaded = ConnectorFile.load(config)
    assert loaded.connector == "court" and loaded.port == 8101 and loaded.tls is not None
    assert KeyStore(tmp_path / "court-keys").epochs() == [1]
    assert _private(tmp_path / "court-keys" / "epoch-0001.key") and _private(tmp_path / "court-keys" / "witness.key")
    assert vkey.startswith("xiezhi.internal/witness/court+")
    # The witness witnesses this gateway's log, by the log's own verifier key.
    assert loaded.log_key == GatewayKeys(tmp_path / "keys").audit_vkey.read_text().strip()
    settings = loaded.settings()
    assert settings.witness_key == (tmp_path / "court-keys" / "witness.key").resolve()
    assert gateway.connectors["court"]


def test_connector_init_refuses_to_overwrite(tmp_path: Path, pki: DevPki) -> None:
    init_gateway(_setup(tmp_path, pki), NOW)
    config, _ = _connector(tmp_path, pki)
    key = (tmp_path / "court-keys" / "epoch-0001.key").read_bytes()
    with pytest.raises(Conflict, match=r"connector\.yaml"):
        _connector(tmp_path, pki)
    config.unlink()
    with pytest.raises(Conflict, match=r"epoch-0001\.key"):
        _connector(tmp_path, pki)
    assert (tmp_path / "court-keys" / "epoch-0001.key").read_bytes() == key


def test_add_witness_trusts_a_connectors_cosignature_key(tmp_path: Path, pki: DevPki) -> None:
    init_gateway(_setup(tmp_path, pki), NOW)
    _, vkey = _connector(tmp_path, pki)
    settings = add_witness(tmp_path / "gateway.yaml", "court", str(tmp_path / "court-keys" / "witness.vkey"))
    assert settings.audit.witnesses == {"court": vkey}
    assert GatewaySettings.from_file(tmp_path / "gateway.yaml").audit.witnesses == {"court": vkey}


def test_add_witness_refuses_an_unknown_connector_and_a_key_of_another_kind(tmp_path: Path, pki: DevPki) -> None:
    init_gateway(_setup(tmp_path, pki), NOW)
    _, vkey = _connector(tmp_path, pki)
    before = (tmp_path / "gateway.yaml").read_bytes()
    with pytest.raises(NotFound, match="pension"):
        add_witness(tmp_path / "gateway.yaml", "pension", vkey)
    log_vkey = GatewayKeys(tmp_path / "keys").audit_vkey  # an Ed25519 note key, not a cosignature key
    with pytest.raises(InvalidInput, match="cosignature/v1"):
        add_witness(tmp_path / "gateway.yaml", "court", str(log_vkey))
    with pytest.raises(InvalidInput, match="--vkey"):
        add_witness(tmp_path / "gateway.yaml", "court", "not a key")
    assert (tmp_path / "gateway.yaml").read_bytes() == before


def _raw(tmp_path: Path, pki: DevPki) -> dict[str, object]:
    init_gateway(_setup(tmp_path, pki), NOW)
    raw = yaml.safe_load((tmp_path / "gateway.yaml").read_text())
    assert isinstance(raw, dict)
    return raw


@pytest.mark.parametrize(
    ("field", "value"),
    [("database_url", "postgresql+psycopg://xiezhi:CHANGE-ME@db/xiezhi"), ("issuer", "<your identity provider>")],
)
def test_placeholders_are_refused_naming_the_field_not_the_value(
    tmp_path: Path, pki: DevPki, field: str, value: str
) -> None:
    raw = _raw(tmp_path, pki)
    raw[field] = value
    with pytest.raises(ValidationError) as refused:
        GatewaySettings.model_validate(raw)
    assert f"placeholder left in {field}" in str(refused.value)
    assert value not in str(refused.value).replace(f"input_value={value!r}", "")


def test_a_placeholder_deep_in_the_settings_is_named_by_its_path(tmp_path: Path, pki: DevPki) -> None:
    raw = _raw(tmp_path, pki)
    raw["keys"] = {"provider": "local", "keyring": "/etc/xiezhi/<keyring>"}
    raw["identity_keys"] = {"k1": "CHANGE-ME"}
    with pytest.raises(ValidationError, match=r"identity_keys\.k1, keys\.keyring"):
        GatewaySettings.model_validate(raw)


def test_production_refuses_missing_key_files_naming_the_field(tmp_path: Path, pki: DevPki) -> None:
    raw = _raw(tmp_path, pki)
    raw["environment"] = "production"
    GatewaySettings.model_validate(raw)  # every key file is there
    raw["keys"] = {"provider": "local", "keyring": str(tmp_path / "nowhere.json")}
    with pytest.raises(ValidationError, match=r"no key file for keys\.keyring"):
        GatewaySettings.model_validate(raw)
    raw["environment"] = "development"
    GatewaySettings.model_validate(raw)  # development starts without (its keyring is made by hand)


def _init_args(tmp_path: Path, pki: DevPki) -> list[str]:
    gateway = pki.gateway()
    return [
        "gateway", "init", "--config", str(tmp_path / "gateway.yaml"), "--keys", str(tmp_path / "keys"),
        "--environment", "development", "--connector", "court=https://127.0.0.1:8101",
        "--tls-cert", str(gateway.cert), "--tls-key", str(gateway.key), "--tls-ca", str(gateway.ca),
        "--issuer", "https://idp.example", "--audience", "xiezhi-gateway", "--policy-dir", str(REPO / "policies"),
    ]  # fmt: skip


def test_gateway_init_without_a_terminal_names_the_missing_flag(tmp_path: Path, pki: DevPki) -> None:
    result = CliRunner().invoke(app, _init_args(tmp_path, pki))
    assert result.exit_code == 2 and "--database-url is required" in result.output
    assert not (tmp_path / "keys").exists()


def test_gateway_init_asks_on_a_terminal_for_what_is_missing(
    tmp_path: Path, pki: DevPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(common, "interactive", lambda: True)
    result = CliRunner().invoke(app, _init_args(tmp_path, pki), input="sqlite:///{here}/asked.sqlite\n")
    assert result.exit_code == 0, result.output
    assert GatewaySettings.from_file(tmp_path / "gateway.yaml").database_url.endswith("/asked.sqlite")
    again = CliRunner().invoke(app, _init_args(tmp_path, pki), input="sqlite:///{here}/asked.sqlite\n")
    assert again.exit_code == 2 and "gateway.yaml exists" in again.output


def test_pki_add_issues_one_more_certificate_and_never_overwrites(tmp_path: Path) -> None:
    init_pki(tmp_path, ["court"], ["requester"], NOW)
    added = CliRunner().invoke(app, ["pki", "add", "--pki", str(tmp_path), "--connector", "pension"])
    assert added.exit_code == 0, added.output
    assert "pension.connector.xiezhi.internal" in added.output
    assert _private(tmp_path / "connectors" / "pension.key")
    certificate = (tmp_path / "connectors" / "pension.pem").read_bytes()
    again = CliRunner().invoke(app, ["pki", "add", "--pki", str(tmp_path), "--connector", "pension"])
    assert again.exit_code == 2 and "exists" in again.output
    assert (tmp_path / "connectors" / "pension.pem").read_bytes() == certificate
    client = CliRunner().invoke(app, ["pki", "add", "--pki", str(tmp_path), "--client", "auditor"])
    assert client.exit_code == 0 and (tmp_path / "clients" / "auditor.pem").is_file()
    none = CliRunner().invoke(app, ["pki", "add", "--pki", str(tmp_path / "nothing"), "--client", "x"])
    assert none.exit_code == 2 and "no development CA" in none.output


def test_connector_serve_takes_its_file_or_its_flags_not_both(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["connector", "serve", "--config", str(tmp_path / "c.yaml"), "--connector", "court"]
    )
    assert result.exit_code == 2 and "not both" in result.output


def test_a_connector_file_with_a_placeholder_is_refused_naming_the_field(tmp_path: Path, pki: DevPki) -> None:
    init_gateway(_setup(tmp_path, pki), NOW)
    config, _ = _connector(tmp_path, pki)
    raw = yaml.safe_load(config.read_text())
    raw["ticket_jwks_url"] = "https://<gateway>/.well-known/jwks.json"
    config.write_text(yaml.safe_dump(raw))
    with pytest.raises(InvalidInput, match="placeholder left in ticket_jwks_url") as refused:
        ConnectorFile.load(config)
    assert "<gateway>" not in refused.value.public_message
