#!/usr/bin/env bash
# Starts the machine's PostgreSQL cluster (creating one if there is none)
# and a role that may create test databases; prints its URL on stdout.
set -euo pipefail
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
cluster=$(pg_lsclusters --no-header 2>/dev/null | head -n1 || true)
if [ -z "$cluster" ]; then
  version=$(ls /usr/lib/postgresql | sort -V | tail -n1)
  $sudo pg_createcluster "$version" main >&2
  cluster=$(pg_lsclusters --no-header | head -n1)
fi
read -r version name port status _ <<<"$cluster"
if [ "$status" != "online" ]; then
  $sudo pg_ctlcluster "$version" "$name" start >&2
fi
for _ in $(seq 1 30); do
  $sudo runuser -u postgres -- pg_isready -q -p "$port" && break
  sleep 0.5
done
$sudo runuser -u postgres -- psql -q -p "$port" -v ON_ERROR_STOP=1 >&2 <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'warden_test') THEN
    CREATE ROLE warden_test LOGIN CREATEDB PASSWORD 'warden_test';
  END IF;
END $$;
-- A test's DROP DATABASE ... WITH (FORCE) may meet an autovacuum worker on it,
-- which a plain role may not terminate ("must be a member of the role whose
-- process is being terminated or member of pg_signal_backend").
GRANT pg_signal_backend TO warden_test;
SQL
echo "postgresql://warden_test:warden_test@127.0.0.1:${port}/postgres"
