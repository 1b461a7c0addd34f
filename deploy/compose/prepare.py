"""Create the compose topology's development state: PKI, keys, settings and agency data.

    python deploy/compose/prepare.py OUT [--mount /srv/xiezhi] [--debtors N]

Everything lands in OUT (which must not hold a CA yet), with every path in the settings
written as the containers see it: OUT is mounted at `--mount` in every service. Development
only: a production deployment brings its own CA, keys and settings (deploy/config/).

When `xiezhi gateway init` / `xiezhi connector init` land, the key and settings steps here
become calls to them; the PKI stays `xiezhi pki init`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from devkit.demo.generate import generate
from devkit.environment import init_dev, load_roster, witness_key
from devkit.pki import init_pki

# The gateways connect as the application role (compose.yaml's XIEZHI_APP_ROLE, created by
# initdb/10-application-role.sh); the schema job migrates as the owner (POSTGRES_USER).
# Development passwords, as in compose.yaml.
GATEWAY_DB = "postgresql+psycopg://xiezhi_app:xiezhi-app-dev-only@postgres:5432/xiezhi"
MIGRATION_DB = "postgresql+psycopg://xiezhi:xiezhi-dev-only@postgres:5432/xiezhi"
CONNECTOR_PORT = 8100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--mount", default="/srv/xiezhi", help="where the containers see OUT")
    parser.add_argument("--policies", default="/opt/xiezhi/policies", help="the image's policy folder")
    parser.add_argument("--debtors", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if (out / "pki" / "ca.pem").exists():
        parser.error(f"{out} already holds a development PKI; remove the folder to start again")

    roster = load_roster()
    names = roster.names()
    from datetime import UTC, datetime

    from devkit.environment import DEV_CLIENTS

    pki = init_pki(out / "pki", names, DEV_CLIENTS, datetime.now(UTC))
    witnesses = {c: witness_key(out / "connectors" / c / "keys", c)[1] for c in names}
    dev = init_dev(
        out,
        # The gateway pins each connector by its certificate's name (SNI), so any host name works.
        connectors={c: f"https://connector-{c.replace('_', '-')}:{CONNECTOR_PORT}" for c in names},
        database_url=GATEWAY_DB,
        witnesses=witnesses,
        pki=pki,
        telemetry={"exporter": "console"},
    )
    generate(out / "data", seed=args.seed, debtors=args.debtors, roster=roster)

    # Paths as the containers see them.
    config = dev.gateway_config
    text = config.read_text(encoding="utf-8").replace(str(out), args.mount)
    settings = yaml.safe_load(text)
    # The migration role's URL, for the schema job, beside the application role's.
    ordered: dict[str, object] = {}
    for key, value in settings.items():
        ordered[key] = value
        if key == "database_url":
            ordered["migration_database_url"] = MIGRATION_DB
    settings = ordered
    settings["policy_dir"] = args.policies
    settings["models_dir"] = f"{args.policies}/models"
    config.write_text(yaml.safe_dump(settings, allow_unicode=True, sort_keys=False), encoding="utf-8")
    print(f"prepared {out}: gateway settings {config.relative_to(out)}, connectors {', '.join(names)}")


if __name__ == "__main__":
    main()
