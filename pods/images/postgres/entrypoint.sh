#!/bin/sh
# On an empty PGDATA: a cluster whose superuser is POSTGRES_USER with the password in
# POSTGRES_PASSWORD_FILE, the database POSTGRES_DB, and password logins from the network; then the
# server in the foreground (it stops cleanly on SIGTERM).
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  initdb --username="$POSTGRES_USER" --pwfile="$POSTGRES_PASSWORD_FILE" \
    --auth-local=trust --auth-host=scram-sha-256 --pgdata="$PGDATA" > /dev/null
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  echo "CREATE DATABASE \"$POSTGRES_DB\";" | postgres --single -D "$PGDATA" postgres > /dev/null
  echo "postgres-entrypoint: made $PGDATA with the database $POSTGRES_DB"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*'
