#!/usr/bin/env bash
# The database-loss scenario, run by quickstart.sh when the PostgreSQL server programs are
# installed: a throwaway cluster with sample data and a pgbench write load, a physical backup
# with continuous WAL archiving (archive_command = 'lifeboat wal push %p'), the data folder
# destroyed, `lifeboat restore db latest --start`, rows compared, and the measured RPO (seconds
# of committed data lost) and RTO (seconds until the restored database answers) printed against
# the plan's objectives (RPO 1 h, RTO 4 h).
#
#   examples/database-loss.sh LIFEBOAT_BINARY WORK_DIR
set -euo pipefail
LB="$1"
WORK="$2/database"

PGBIN="${LIFEBOAT_PG_BIN:-}"
if [ -z "$PGBIN" ]; then
  PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)"
fi
if [ -z "$PGBIN" ] || [ ! -x "$PGBIN/pg_ctl" ]; then
  echo "==> database-loss scenario skipped: no PostgreSQL server programs (install postgresql, or set LIFEBOAT_PG_BIN)"
  exit 0
fi

# initdb and postgres refuse root: as root, everything database-side runs as the postgres user
# (lifeboat too, as archive_command does in production).
AS=()
if [ "$(id -u)" = 0 ]; then
  AS=(setpriv --reuid=postgres --regid=postgres --init-groups)
fi
run() { "${AS[@]}" "$@"; }

mkdir -p "$WORK"
umask 077
head -c 24 /dev/urandom | base64 > "$WORK/passphrase"
[ "$(id -u)" = 0 ] && chown -R postgres:postgres "$WORK"
chmod 755 "$2" "$WORK"
export LIFEBOAT_REPO="$WORK/repository"
export LIFEBOAT_PASSWORD_FILE="$WORK/passphrase"
export LIFEBOAT_CACHE_DIR="$WORK/cache"
export LIFEBOAT_PG_BIN="$PGBIN"
unset LIFEBOAT_PASSWORD PGPASSWORD

PORT=$(( 20000 + RANDOM % 20000 ))
while (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null; do PORT=$(( PORT + 1 )); done
DATA="$WORK/data"
URL="postgres://postgres@127.0.0.1:$PORT/postgres"
stop_server() { run "$PGBIN/pg_ctl" -D "$DATA" stop -m immediate >/dev/null 2>&1 || true; }
trap stop_server EXIT
psql_() { run "$PGBIN/psql" -X -q -At -d "$URL" -c "$1"; }

echo "==> database: throwaway PostgreSQL cluster on 127.0.0.1:$PORT with WAL archiving into lifeboat"
run "$PGBIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
cat >> "$DATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$WORK'
wal_level = replica
archive_mode = on
archive_command = 'LIFEBOAT_REPO=$LIFEBOAT_REPO LIFEBOAT_PASSWORD_FILE=$LIFEBOAT_PASSWORD_FILE LIFEBOAT_CACHE_DIR=$LIFEBOAT_CACHE_DIR $LB --quiet wal push %p'
archive_timeout = 1
CONF
run "$PGBIN/pg_ctl" -D "$DATA" -l "$WORK/server.log" start -w >/dev/null
cat > "$WORK/lifeboat.toml" <<CONF
[sources.db]
kind = "postgres"
url = "$URL"
mode = "physical"
CONF
[ "$(id -u)" = 0 ] && chown postgres:postgres "$WORK/lifeboat.toml"

run "$LB" init >/dev/null
echo "==> sample data: pgbench scale 5 (500 000 accounts)"
run "$PGBIN/pgbench" -i -s 5 -q "$URL" >/dev/null 2>&1
echo "==> lifeboat backup db   (pg_basebackup streamed into the repository, WAL archived continuously)"
run "$LB" --config "$WORK/lifeboat.toml" backup db
echo "==> write load: pgbench for 8 s (2 clients) while WAL is archived"
run "$PGBIN/pgbench" -n -T 8 -c 2 "$URL" >/dev/null 2>&1
BEFORE=$(psql_ "SELECT count(*) FROM pgbench_history")
ACCOUNTS=$(psql_ "SELECT count(*) FROM pgbench_accounts")
LOSS=$(psql_ "SELECT extract(epoch FROM clock_timestamp())")
echo "==> disaster: server killed, data folder deleted ($BEFORE transactions committed before the loss)"
stop_server
rm -rf "$DATA"

echo "==> lifeboat restore db latest --data-dir $DATA --start"
T0=$(date +%s.%N)
run "$LB" --config "$WORK/lifeboat.toml" restore db latest --data-dir "$DATA" --start --port "$PORT" --socket-dir "$WORK"
until psql_ "SELECT 1" >/dev/null 2>&1; do sleep 0.1; done
T1=$(date +%s.%N)
AFTER=$(psql_ "SELECT count(*) FROM pgbench_history")
ACCOUNTS_AFTER=$(psql_ "SELECT count(*) FROM pgbench_accounts")
LAST=$(psql_ "SELECT extract(epoch FROM max(mtime)) FROM pgbench_history")
echo "==> lifeboat wal check"
run "$LB" wal check

RPO=$(awk -v a="$LOSS" -v b="$LAST" 'BEGIN { printf "%.1f", a - b }')
RTO=$(awk -v a="$T1" -v b="$T0" 'BEGIN { printf "%.1f", a - b }')
echo
echo "    accounts:      $ACCOUNTS_AFTER of $ACCOUNTS rows"
echo "    transactions:  $AFTER of $BEFORE committed before the loss were restored"
echo "    RPO (data lost):               ${RPO} s   (plan: 3600 s)"
echo "    RTO (to a database answering): ${RTO} s   (plan: 14400 s)"
[ "$ACCOUNTS_AFTER" = "$ACCOUNTS" ] || { echo "account rows differ" >&2; exit 1; }
awk -v r="$RPO" -v t="$RTO" 'BEGIN { exit !(r <= 3600 && t <= 14400) }' || { echo "objectives missed" >&2; exit 1; }
echo "    both objectives met"
