#!/usr/bin/env bash
# PostgreSQL benchmark (rough, shared machine): lifeboat physical backup vs pg_basebackup to local
# disk, lifeboat physical restore, and WAL push throughput the way PostgreSQL's archiver calls it
# (one `lifeboat wal push` process per segment, in order, .ready -> .done).
#
# Usage: bench/pg.sh
#   PG_SCALE   pgbench scale (15 MB per unit)      default 10
#   SEGMENTS   WAL segments pushed (16 MiB each)   default 100
#   BENCH_DIR  work dir                            default a new /var/tmp/lifeboat-pgbench.XXXXXX
#   LIFEBOAT_BIN  default <workspace>/target/release/lifeboat
set -euo pipefail
export LC_ALL=C
WS="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LB="${LIFEBOAT_BIN:-$WS/target/release/lifeboat}"
SCALE="${PG_SCALE:-10}"
SEGMENTS="${SEGMENTS:-100}"
DIR="${BENCH_DIR:-$(mktemp -d /var/tmp/lifeboat-pgbench.XXXXXX)}"
PGBIN="${LIFEBOAT_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)}"
[ -x "$LB" ] || { echo "build first: cargo build --release" >&2; exit 1; }
AS=(); [ "$(id -u)" = 0 ] && AS=(setpriv --reuid=postgres --regid=postgres --init-groups)
run() { "${AS[@]}" "$@"; }
now() { date +%s.%N; }
secs() { awk -v a="$2" -v b="$1" 'BEGIN { printf "%.2f", a - b }'; }

mkdir -p "$DIR"; chmod 755 "$DIR"; [ "$(id -u)" = 0 ] && chown postgres:postgres "$DIR"
export LIFEBOAT_REPO="$DIR/repo" LIFEBOAT_PASSWORD_FILE="$DIR/pass" LIFEBOAT_CACHE_DIR="$DIR/cache"
run sh -c "echo bench-passphrase > $DIR/pass; chmod 600 $DIR/pass"
PORT=$(( 20000 + RANDOM % 20000 ))
URL="postgres://postgres@127.0.0.1:$PORT/postgres"
trap 'run "$PGBIN/pg_ctl" -D "$DIR/data" stop -m immediate >/dev/null 2>&1 || true' EXIT
run "$PGBIN/initdb" -D "$DIR/data" -U postgres --auth=trust >/dev/null
cat >> "$DIR/data/postgresql.conf" <<CONF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
wal_level = replica
archive_mode = on
archive_command = 'LIFEBOAT_REPO=$LIFEBOAT_REPO LIFEBOAT_PASSWORD_FILE=$LIFEBOAT_PASSWORD_FILE LIFEBOAT_CACHE_DIR=$LIFEBOAT_CACHE_DIR $LB --quiet wal push %p'
CONF
run "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" start -w >/dev/null
run "$LB" init >/dev/null
printf '[sources.db]\nkind = "postgres"\nurl = "%s"\nmode = "physical"\n' "$URL" > "$DIR/lb.toml"
run "$PGBIN/pgbench" -i -s "$SCALE" -q "$URL" >/dev/null 2>&1
SIZE=$(run "$PGBIN/psql" -XAt -d "$URL" -c "SELECT pg_size_pretty(sum(pg_database_size(datname))) FROM pg_database")
echo "database: pgbench scale $SCALE, $SIZE"

sync; t0=$(now); run "$PGBIN/pg_basebackup" -d "$URL" -D "$DIR/pgbb" -Ft -X none --checkpoint=fast >/dev/null 2>&1; sync; t1=$(now)
BB=$(secs "$t0" "$t1")
t0=$(now); run "$LB" --config "$DIR/lb.toml" backup db >/dev/null; t1=$(now)
LB1=$(secs "$t0" "$t1")
t0=$(now); run "$LB" --config "$DIR/lb.toml" backup db >/dev/null; t1=$(now)
LB2=$(secs "$t0" "$t1")
t0=$(now); run "$LB" restore db latest --data-dir "$DIR/restored" >/dev/null; t1=$(now)
RS=$(secs "$t0" "$t1")
t0=$(now); run tar -xf "$DIR/pgbb/base.tar" -C "$(run mkdir -p "$DIR/untar" && echo "$DIR/untar")"; sync; t1=$(now)
UT=$(secs "$t0" "$t1")
echo "physical backup:   pg_basebackup -Ft to disk ${BB}s | lifeboat backup db ${LB1}s (ratio $(awk -v a="$LB1" -v b="$BB" 'BEGIN{printf "%.2f", a/b}')), unchanged re-run ${LB2}s"
echo "physical restore:  lifeboat restore db (files) ${RS}s | tar -x of the pg_basebackup tar ${UT}s"

# WAL push: SEGMENTS synthetic 16 MiB segments marked .ready in a copy of the data folder's
# layout, pushed one process per segment in order, as the archiver does (.ready -> .done).
# "dense": incompressible random bytes (bounded by compress+encrypt+write bandwidth);
# "sparse": 1 MiB random + zeros, like a segment switched early by archive_timeout (bounded by
# per-call overhead). Each with batching (default) and with --batch 1 (one key derivation per
# segment).
FAKE="$DIR/fake"; run mkdir -p "$FAKE/global" "$FAKE/pg_wal/archive_status"
run cp "$DIR/data/global/pg_control" "$FAKE/global/"
tli=10
push_run() { # kind batch
  tli=$((tli + 1))
  local prefix; prefix=$(printf '%08X' "$tli")
  for i in $(seq 1 "$SEGMENTS"); do
    n=$(printf '%s%016X' "$prefix" "$i")
    if [ "$1" = dense ]; then
      run sh -c "head -c 16777216 /dev/urandom > $FAKE/pg_wal/$n"
    else
      run sh -c "{ head -c 1048576 /dev/urandom; head -c 15728640 /dev/zero; } > $FAKE/pg_wal/$n"
    fi
    run touch "$FAKE/pg_wal/archive_status/$n.ready"
  done
  sync
  local t0 t1; t0=$(now)
  for i in $(seq 1 "$SEGMENTS"); do
    n=$(printf '%s%016X' "$prefix" "$i")
    (cd "$FAKE" && run "$LB" --quiet wal push --batch "$2" "pg_wal/$n") && run mv "$FAKE/pg_wal/archive_status/$n.ready" "$FAKE/pg_wal/archive_status/$n.done"
  done
  t1=$(now)
  local p; p=$(secs "$t0" "$t1")
  echo "wal push $1, --batch $2: $SEGMENTS segments in ${p}s = $(awk -v n="$SEGMENTS" -v t="$p" 'BEGIN{printf "%.0f", n/t}') segments/s"
  run rm -f "$FAKE"/pg_wal/"$prefix"*
}
push_run dense 64
push_run sparse 64
push_run sparse 1
echo "(work dir $DIR)"
