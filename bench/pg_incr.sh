#!/usr/bin/env bash
# Incremental physical backups side by side at pgbench scale 50 (about 750 MB): lifeboat's local
# method (physical_method = "local": pg_backup_start, the data directory read by the file
# archiver, only changed files read again) against pgBackRest full/incremental and lifeboat's
# pg_basebackup method run twice.
#
#   full          lifeboat local | lifeboat basebackup | pgbackrest --type=full
#   second        the same three after LOAD_SECS of pgbench (-c 4 -j 2): lifeboat local
#                 incremental | lifeboat basebackup re-run | pgbackrest --type=incr
#
# Each timed backup starts after a CHECKPOINT, with the WAL archive caught up and after `sync`. lifeboat's figures of
# bytes read come from its --json report. Run as root (the cluster runs as the postgres user);
# pgBackRest (Debian package) configured like bench/pg_scale.sh: aes-256-cbc, zstd, process-max=2.
#
# Environment: PG_SCALE (50), LOAD_SECS (20), LOAD (tpcb: pgbench's default transaction, which
# updates random rows of the whole 640 MB accounts table, so every large file changes; append:
# inserts into pgbench_history only, the large files stay unchanged), BENCH_DIR (a new /var/tmp/lifeboat-pgincr.XXXXXX),
# LIFEBOAT_BIN (<workspace>/target/release/lifeboat), LIFEBOAT_PG_BIN, KEEP=1 keeps the work dir.
set -euo pipefail
export LC_ALL=C
WS="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LB="${LIFEBOAT_BIN:-$WS/target/release/lifeboat}"
SCALE="${PG_SCALE:-50}"
LOAD_SECS="${LOAD_SECS:-20}"
PGBIN="${LIFEBOAT_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)}"
[ -x "$LB" ] || { echo "build first: cargo build --release -p lifeboat" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run as root (the cluster runs as the postgres user)" >&2; exit 1; }
command -v pgbackrest >/dev/null || { echo "install pgbackrest (apt-get install pgbackrest)" >&2; exit 1; }
DIR="${BENCH_DIR:-$(mktemp -d /var/tmp/lifeboat-pgincr.XXXXXX)}"
mkdir -p "$DIR"; chmod 755 "$DIR"; chown postgres:postgres "$DIR"
AS=(setpriv --reuid=postgres --regid=postgres --init-groups env HOME="$DIR")
run() { "${AS[@]}" "$@"; }
now() { date +%s.%N; }
secs() { awk -v a="$2" -v b="$1" 'BEGIN { printf "%.2f", a - b }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
URL="postgres://postgres@127.0.0.1:$PORT/postgres"
export LIFEBOAT_REPO="$DIR/repo" LIFEBOAT_PASSWORD_FILE="$DIR/pass" LIFEBOAT_CACHE_DIR="$DIR/cache"
run sh -c "umask 077; echo bench-passphrase > $DIR/pass; mkdir -p $DIR/pgbr $DIR/spool $DIR/log"
run sh -c "cat > $DIR/pgbr.conf" <<CONF
[global]
repo1-path=$DIR/pgbr
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=bench-passphrase
compress-type=zst
process-max=2
log-path=$DIR/log
lock-path=$DIR/log
spool-path=$DIR/spool
log-level-console=warn
start-fast=y

[bench]
pg1-path=$DIR/data
pg1-port=$PORT
pg1-socket-path=$DIR
pg1-user=postgres
CONF
PGBR=(pgbackrest --config="$DIR/pgbr.conf" --stanza=bench)
cleanup() {
  run "$PGBIN/pg_ctl" -D "$DIR/data" stop -m immediate >/dev/null 2>&1 || true
  [ "${KEEP:-0}" = 1 ] || rm -rf "$DIR"
}
trap cleanup EXIT
run "$PGBIN/initdb" -D "$DIR/data" -U postgres --auth=trust >/dev/null
run sh -c "cat >> $DIR/data/postgresql.conf" <<CONF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
wal_level = replica
archive_mode = on
archive_command = 'LIFEBOAT_REPO=$LIFEBOAT_REPO LIFEBOAT_PASSWORD_FILE=$LIFEBOAT_PASSWORD_FILE LIFEBOAT_CACHE_DIR=$LIFEBOAT_CACHE_DIR $LB --quiet wal push %p && pgbackrest --config=$DIR/pgbr.conf --stanza=bench archive-push %p'
max_wal_size = 1GB
CONF
run "$LB" init >/dev/null
run "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" start -w >/dev/null
run "${PGBR[@]}" stanza-create >/dev/null
sql() { run "$PGBIN/psql" -XAtq -d "$URL" -c "$1"; }
caught_up() {
  # A checkpoint first: the first backup after the load would otherwise also pay for flushing
  # the load's dirty buffers in its own (fast) checkpoint, and the next tool would not.
  sql "CHECKPOINT" >/dev/null
  sql "SELECT pg_switch_wal()" >/dev/null
  for _ in $(seq 1 1200); do
    [ -z "$(ls "$DIR/data/pg_wal/archive_status" | grep '\.ready$' || true)" ] && return 0
    sleep 0.5
  done
  echo "archiving does not catch up: see $DIR/server.log" >&2; exit 1
}
printf '[sources.db]\nkind = "postgres"\nurl = "%s"\nmode = "physical"\nphysical_method = "local"\ndata_dir = "%s"\n' "$URL" "$DIR/data" > "$DIR/local.toml"
printf '[sources.bb]\nkind = "postgres"\nurl = "%s"\nmode = "physical"\nphysical_method = "basebackup"\n' "$URL" > "$DIR/bb.toml"

run "$PGBIN/pgbench" -i -s "$SCALE" -q "$URL" >/dev/null 2>&1
echo "pgbench scale $SCALE: $(sql "SELECT pg_size_pretty(pg_database_size('postgres'))"); $("$LB" --version | head -n1), $(pgbackrest version), $("$PGBIN/postgres" --version)"
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at start"

# lifeboat backup with --json: prints "seconds bytes_read files_read files_skipped".
lb() { # config source [args]
  local cfg=$1 src=$2 t0 t1 out; shift 2
  caught_up; sync
  t0=$(now); out=$(run "$LB" --config "$cfg" --json backup "$src" "$@"); t1=$(now)
  echo "$(secs "$t0" "$t1") $(echo "$out" | python3 -c 'import json,sys; j=json.load(sys.stdin); p=j["postgres"]; print(j["summary"]["bytes_read"], p.get("files_read", j["summary"]["files_new"]), p.get("files_skipped", 0))')"
}
br() { local t0 t1; caught_up; sync; t0=$(now); run "${PGBR[@]}" backup --type="$1" >/dev/null; t1=$(now); secs "$t0" "$t1"; }

read -r L1 L1B L1R L1S < <(lb "$DIR/local.toml" db)
read -r B1 B1B _ _ < <(lb "$DIR/bb.toml" bb)
R1=$(br full)
echo "load average $(cut -d' ' -f1-3 /proc/loadavg) before the load (${LOAD:-tpcb}, $LOAD_SECS s)"
if [ "${LOAD:-tpcb}" = append ]; then
  run sh -c "printf '%s\n' '\\set aid random(1, 100000 * :scale)' 'INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, :aid, 1, now());' > $DIR/append.sql"
  run "$PGBIN/pgbench" -n -c 4 -j 2 -T "$LOAD_SECS" -f "$DIR/append.sql" "$URL" >/dev/null 2>&1
else
  run "$PGBIN/pgbench" -n -c 4 -j 2 -T "$LOAD_SECS" "$URL" >/dev/null 2>&1
fi
read -r L2 L2B L2R L2S < <(lb "$DIR/local.toml" db)
R2=$(br incr)
read -r B2 B2B _ _ < <(lb "$DIR/bb.toml" bb)
echo "load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
mb() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 1e6 }'; }
echo
printf '%-48s %8s %10s\n' "backup (seconds; MB read by lifeboat)" seconds "MB read"
printf '%-48s %8s %10s\n' "lifeboat local, full" "$L1" "$(mb "$L1B")"
printf '%-48s %8s %10s\n' "lifeboat basebackup" "$B1" "$(mb "$B1B")"
printf '%-48s %8s %10s\n' "pgbackrest full" "$R1" ""
printf '%-48s %8s %10s\n' "lifeboat local, incremental ($L2R read, $L2S skipped files)" "$L2" "$(mb "$L2B")"
printf '%-48s %8s %10s\n' "pgbackrest incr" "$R2" ""
printf '%-48s %8s %10s\n' "lifeboat basebackup again" "$B2" "$(mb "$B2B")"
echo "ratios: local full / pgbackrest full $(ratio "$L1" "$R1"), local incremental / pgbackrest incr $(ratio "$L2" "$R2"), local incremental / basebackup again $(ratio "$L2" "$B2")"
echo "sizes: lifeboat repository $(du -sh "$DIR/repo" | cut -f1) (local x2 + basebackup x2 + WAL), pgbackrest $(du -sh "$DIR/pgbr" | cut -f1) (full + incr + WAL)"
