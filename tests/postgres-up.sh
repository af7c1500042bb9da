#!/usr/bin/env bash
# Makes sure the local PostgreSQL server the tests use is up on 127.0.0.1:5432 with
# wal_level = logical (change capture), starting it or restarting it when needed.
set -euo pipefail
PSQL=(psql -h 127.0.0.1 -U postgres -d test -Atqc)
cluster() {
  local version
  version="$(ls /etc/postgresql | sort -V | tail -1)"
  pg_ctlcluster --skip-systemctl-redirect "$version" main "$1"
}
if ! "${PSQL[@]}" "SELECT 1" >/dev/null 2>&1; then
  echo "== starting PostgreSQL"
  # Ask for wal_level = logical before it starts (it also refuses to start with logical
  # replication slots and a lower level).
  version="$(ls /etc/postgresql | sort -V | tail -1)"
  auto="/var/lib/postgresql/$version/main/postgresql.auto.conf"
  if [ -w "$auto" ]; then
    sed -i '/^wal_level/d' "$auto"
    echo "wal_level = 'logical'" >> "$auto"
  fi
  cluster start || true
  for _ in $(seq 1 30); do "${PSQL[@]}" "SELECT 1" >/dev/null 2>&1 && break; sleep 1; done
fi
if [ "$("${PSQL[@]}" "SHOW wal_level")" != "logical" ]; then
  echo "== setting wal_level = logical (restarts PostgreSQL)"
  "${PSQL[@]}" "ALTER SYSTEM SET wal_level = logical"
  cluster restart
  for _ in $(seq 1 30); do "${PSQL[@]}" "SELECT 1" >/dev/null 2>&1 && break; sleep 1; done
fi
echo "== PostgreSQL $("${PSQL[@]}" "SHOW server_version") up, wal_level = $("${PSQL[@]}" "SHOW wal_level")"
