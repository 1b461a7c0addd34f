#!/bin/sh
# Runs once, when the database is first initialised (/docker-entrypoint-initdb.d/, as the
# official postgres image and compose/ci/postgres-entrypoint.sh both do), as POSTGRES_USER on
# POSTGRES_DB while the server listens on its Unix socket only.
#
# Creates the gateways' application role: it may log in and connect to POSTGRES_DB, and owns
# nothing. POSTGRES_USER stays the owner of the tables (the migration role, used only by the
# schema job); `xiezhi gateway migrate` grants the application role its rows.
set -e
psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set=app_role="${XIEZHI_APP_ROLE:?the application role's name}" \
  --set=app_password="${XIEZHI_APP_PASSWORD:?the application role's password}" \
  --set=db="$POSTGRES_DB" <<'SQL'
CREATE ROLE :"app_role" LOGIN PASSWORD :'app_password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"db" TO :"app_role";
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
SQL
echo "initdb: application role $XIEZHI_APP_ROLE created"
