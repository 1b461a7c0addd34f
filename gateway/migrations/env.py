"""Alembic's environment for the gateway: always online, on the connection `gateway.schema`
hands over (`config.attributes["connection"]`), inside that connection's transaction."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection


def run_migrations() -> None:
    connection = context.config.attributes["connection"]
    assert isinstance(connection, Connection), "gateway.schema passes the connection to migrate"
    context.configure(connection=connection, target_metadata=context.config.attributes.get("metadata"))
    with context.begin_transaction():
        context.run_migrations()


# Alembic runs this file with its context set up; importing it elsewhere (a test walking every
# module) does nothing.
if hasattr(context, "config"):
    run_migrations()
