"""The gateway's Alembic migrations: `env.py` and one module per revision under `versions/`.

Shipped inside the package so an installed gateway can migrate its database
(`xiezhi gateway migrate`); `gateway.schema` runs them.
"""
