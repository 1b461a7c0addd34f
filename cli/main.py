"""The `xiezhi` command line, assembled from one module per role.

xiezhi match, requests show|cancel   the requester (cli.requester)
xiezhi approvals …                   the department head (cli.approver)
xiezhi audit …                       the security auditor (cli.auditor)
xiezhi policy …, keys status|rotate  the security administrator (cli.security_admin)
xiezhi connector …                   an agency's connector operator (cli.connector)
xiezhi gateway …, keys init|rotate-tickets
                                     the gateway's operator (cli.gateway)
xiezhi demo, pki …, token …          development (cli.development, backed by devkit)
"""

from __future__ import annotations

import typer

from cli import approver, auditor, connector, development, gateway, requester, security_admin

app = typer.Typer(
    help="Xiezhi (獬豸): privacy-preserving data-sharing gateway for enforcement supervision.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(
    help="The gateway's keys: those sealing its stored data (init, status, rotate) and its ticket signing keys.",
    no_args_is_help=True,
)

app.command()(requester.match)
app.add_typer(requester.requests_app, name="requests")
app.command()(development.demo)
app.add_typer(gateway.gateway_app, name="gateway")
app.add_typer(connector.connector_app, name="connector")
app.add_typer(development.token_app, name="token")
app.add_typer(approver.approvals_app, name="approvals")
app.add_typer(security_admin.policy_app, name="policy")
app.add_typer(auditor.audit_app, name="audit")
app.add_typer(development.pki_app, name="pki")
app.add_typer(keys_app, name="keys")
keys_app.command("rotate-tickets")(gateway.keys_rotate_tickets)
keys_app.command("init")(gateway.keys_init)
keys_app.command("status")(security_admin.keys_status)
keys_app.command("rotate")(security_admin.keys_rotate)


if __name__ == "__main__":
    app()
