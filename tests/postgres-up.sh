#!/usr/bin/env bash
# The PostgreSQL server the tests use: Debian's package, on 127.0.0.1:5432, trust auth for
# connections from this machine (but a password for the role wharf_password), database `test`, wal_level = logical (change capture).
#
# Installs the package when no server is installed, creates the cluster when there is none,
# configures and starts it. Idempotent: a server that already answers as required is left
# untouched, and a second run changes nothing. Runs as root, or through sudo.
set -euo pipefail

PSQL=(psql -X -h 127.0.0.1 -p 5432 -U postgres -Atq)
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
answers() { "${PSQL[@]}" -d "$1" -c "SELECT 1" >/dev/null 2>&1; }
ready() {
  answers test \
    && [ "$("${PSQL[@]}" -d test -c 'SHOW wal_level' 2>/dev/null)" = logical ] \
    && [ "$("${PSQL[@]}" -d test -c "SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'" 2>/dev/null)" = 1 ] \
    && [ "$("${PSQL[@]}" -d test -c "SELECT count(*) FROM pg_hba_file_rules WHERE 'wharf_password' = ANY(user_name)" 2>/dev/null)" = 1 ]
}
say_up() {
  echo "== PostgreSQL $("${PSQL[@]}" -d test -c 'SHOW server_version') up on 127.0.0.1:5432 (database test, wal_level = $("${PSQL[@]}" -d test -c 'SHOW wal_level'))"
}

if ready; then
  say_up
  exit 0
fi

# 1. The server binaries.
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "== installing PostgreSQL (Debian package postgresql)"
  as_root sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql' >/dev/null
fi
version="$(ls /usr/lib/postgresql | sort -V | tail -1)"

# 2. The cluster (the package creates `<version>/main`, but may have been told not to).
conf="/etc/postgresql/$version/main"
if [ ! -d "$conf" ]; then
  echo "== creating the PostgreSQL $version cluster main"
  as_root pg_createcluster "$version" main >/dev/null
fi

# 3. Configuration: trust for connections from this machine (first matching pg_hba line wins,
# so ours go first) but for the role `wharf_password`, which must give its password (the
# secrets test signs in with a wrong and a right one), and the settings the tests need in a conf.d file of our own (Debian's
# postgresql.conf includes conf.d): logical decoding, and pg_stat_statements. A wal_level left in postgresql.auto.conf by ALTER SYSTEM
# would override ours: it is removed.
changed=""
hba="$conf/pg_hba.conf"
if ! as_root grep -q '^# wharf tests 2' "$hba"; then
  tmp="$(mktemp)"
  {
    echo "# wharf tests 2: trust for connections from this machine, but wharf_password's"
    echo "host all wharf_password 127.0.0.1/32 scram-sha-256"
    echo "local all all trust"
    echo "host all all 127.0.0.1/32 trust"
    echo "host all all ::1/128 trust"
    # An older block of ours (before wharf_password) goes.
    as_root cat "$hba" | sed '/^# wharf tests/,/^host all all ::1\/128 trust$/d'
  } > "$tmp"
  as_root sh -c "cat '$tmp' > '$hba'"
  rm -f "$tmp"
  changed=1
fi
settings="listen_addresses = '127.0.0.1'
port = 5432
wal_level = logical
max_replication_slots = 20
max_wal_senders = 20
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all"
as_root mkdir -p "$conf/conf.d"
if [ "$(as_root cat "$conf/conf.d/wharf-tests.conf" 2>/dev/null)" != "$settings" ]; then
  as_root sh -c "printf '%s\n' \"$settings\" > '$conf/conf.d/wharf-tests.conf'"
  changed=1
fi
auto="/var/lib/postgresql/$version/main/postgresql.auto.conf"
if as_root grep -q '^wal_level' "$auto" 2>/dev/null; then
  as_root sed -i '/^wal_level/d' "$auto"
  changed=1
fi

# 4. Start it, or restart it when it runs with other settings.
as_root install -d -o postgres -g postgres -m 2775 /var/run/postgresql
cluster() { as_root pg_ctlcluster --skip-systemctl-redirect "$version" main "$1"; }
if as_root pg_ctlcluster --skip-systemctl-redirect "$version" main status >/dev/null 2>&1; then
  if [ -n "$changed" ] || ! answers postgres \
    || ! "${PSQL[@]}" -d postgres -c 'SHOW shared_preload_libraries' | grep -q pg_stat_statements; then
    echo "== restarting PostgreSQL $version with the tests' settings"
    cluster restart
  fi
else
  echo "== starting PostgreSQL $version"
  cluster start
fi
for _ in $(seq 1 60); do answers postgres && break; sleep 0.5; done
answers postgres || {
  echo "PostgreSQL did not come up on 127.0.0.1:5432; its log:" >&2
  as_root tail -n 30 "/var/log/postgresql/postgresql-$version-main.log" >&2 || true
  exit 1
}

# 5. The database, with pg_stat_statements (tests count the statements wharf runs).
if ! answers test; then
  "${PSQL[@]}" -d postgres -c "CREATE DATABASE test"
fi
"${PSQL[@]}" -d test -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
ready || {
  echo "PostgreSQL is up but not as the tests need it (wal_level: $("${PSQL[@]}" -d test -c 'SHOW wal_level' 2>&1))" >&2
  exit 1
}
say_up
