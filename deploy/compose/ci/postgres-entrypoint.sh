#!/bin/sh
# The stand-in's entrypoint, behaving as the official postgres image's does on first start:
# initdb with POSTGRES_USER (the superuser) and POSTGRES_PASSWORD, CREATE DATABASE
# POSTGRES_DB, then /docker-entrypoint-initdb.d/*.sql and *.sh in name order, against a
# server on its Unix socket only, so nobody connects over TCP before they are done. A
# script that fails stops the container (its data folder is then half made: remove the volume).
set -e
socket=/var/run/postgresql
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile="$(mktemp)"; printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  initdb -D "$PGDATA" -E UTF8 --locale=C.UTF-8 -U "$POSTGRES_USER" --pwfile="$pwfile" -A scram-sha-256 >/dev/null
  rm -f "$pwfile"
  echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=$socket" -w start >/dev/null
  export PGHOST="$socket" PGPASSWORD="$POSTGRES_PASSWORD"
  if [ "$POSTGRES_DB" != postgres ]; then
    psql -v ON_ERROR_STOP=1 --no-psqlrc -q -U "$POSTGRES_USER" -d postgres --set=db="$POSTGRES_DB" <<'SQL'
CREATE DATABASE :"db";
SQL
  fi
  for script in /docker-entrypoint-initdb.d/*; do
    case "$script" in
      *.sql) echo "postgres-entrypoint: running $script"
             psql -v ON_ERROR_STOP=1 --no-psqlrc -q -U "$POSTGRES_USER" -d "$POSTGRES_DB" -f "$script" ;;
      *.sh) echo "postgres-entrypoint: running $script"
            if [ -x "$script" ]; then "$script"; else . "$script"; fi ;;
      *) if [ -e "$script" ]; then echo "postgres-entrypoint: ignoring $script"; fi ;;
    esac || { echo "postgres-entrypoint: $script failed" >&2; pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null; exit 1; }
  done
  unset PGHOST PGPASSWORD
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories="$socket"
