#!/usr/bin/env bash
# Where a pushed WAL segment's time goes, and the ceiling that follows for this machine.
#
# PostgreSQL's archiver runs archive_command once per segment through /bin/sh and waits for it,
# so segments/s pushed = cores / (CPU per segment), once every core is busy. This script
# measures the parts of that CPU on real segments (in the page cache, as the archiver finds
# them) and prints the ceiling next to the measured rate:
#
#   archiver + /bin/sh      the loop running `true %p`: what any archive_command costs per call
#   lifeboat call           a call answered by its marker (the segment is already stored)
#   storing, in process     one `wal push --batch N` storing every segment: read, BLAKE3 ids,
#                           compression, XChaCha20-Poly1305, packs, index, manifests, fsyncs
#   codecs alone            the zstd and lz4 command-line tools' own benchmark on the same bytes
#                           (one core, 1 MiB blocks as lifeboat cuts WAL)
#   the floor               lifeboat's own per-chunk steps on the same bytes, one core, nothing
#                           else (crates/lifeboat-repo/examples/segment_floor.rs): BLAKE3 id, then
#                           compression + XChaCha20-Poly1305; no archiver can beat cores / floor
#   the archiver loop       `lifeboat wal push %p` per segment, with and without --background
#
#   bench/wal_budget.sh                      # makes ~60 segments with a throwaway cluster (as root)
#   SEGMENTS_DIR=dir CONTROL=pg_control bench/wal_budget.sh   # segments you already have
#
# Environment: LIFEBOAT_BIN (<workspace>/target/release/lifeboat), PG_SCALE (20) and LOAD_SECS
# (60) for the generated WAL, LIFEBOAT_PG_BIN, KEEP=1 keeps the work dir.
set -euo pipefail
export LC_ALL=C
WS="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LB="${LIFEBOAT_BIN:-$WS/target/release/lifeboat}"
[ -x "$LB" ] || { echo "build first: cargo build --release -p lifeboat" >&2; exit 1; }
FLOOR="${FLOOR_BIN:-$WS/target/release/examples/segment_floor}"
[ -x "$FLOOR" ] || { echo "build first: cargo build --release -p lifeboat-repo --example segment_floor" >&2; exit 1; }
DIR=$(mktemp -d "${TMPDIR:-/var/tmp}/lifeboat-walbudget.XXXXXX")
chmod 755 "$DIR"
# The last background pusher may still be writing its log when the script ends: retry once.
cleanup() { [ "${KEEP:-0}" = 1 ] || rm -rf "$DIR" 2>/dev/null || { sleep 2; rm -rf "$DIR"; }; }
trap cleanup EXIT
CORES=$(nproc)

if [ -z "${SEGMENTS_DIR:-}" ]; then
  [ "$(id -u)" = 0 ] || { echo "run as root to generate WAL (the cluster runs as postgres), or set SEGMENTS_DIR and CONTROL" >&2; exit 1; }
  PGBIN="${LIFEBOAT_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)}"
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$DIR/gen/arch"; chown -R postgres:postgres "$DIR/gen"
  as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups env HOME="$DIR/gen" "$@"; }
  as_pg "$PGBIN/initdb" -D "$DIR/gen/data" -U postgres >/dev/null 2>&1
  cat >>"$DIR/gen/data/postgresql.conf" <<EOF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR/gen'
archive_mode = on
archive_command = 'cp %p $DIR/gen/arch/%f'
max_wal_size = 4GB
checkpoint_timeout = 30s
shared_buffers = 256MB
EOF
  as_pg "$PGBIN/pg_ctl" -D "$DIR/gen/data" -l "$DIR/gen/log" -w start >/dev/null
  trap 'as_pg "$PGBIN/pg_ctl" -D "$DIR/gen/data" -m immediate stop >/dev/null 2>&1 || true; cleanup' EXIT
  echo "generating WAL: pgbench -i -s ${PG_SCALE:-20}, then ${LOAD_SECS:-60} s of pgbench (checkpoints every 30 s)" >&2
  as_pg "$PGBIN/pgbench" -h 127.0.0.1 -p "$PORT" -U postgres -i -s "${PG_SCALE:-20}" postgres >/dev/null 2>&1
  as_pg "$PGBIN/pgbench" -h 127.0.0.1 -p "$PORT" -U postgres -c 4 -j 2 -T "${LOAD_SECS:-60}" postgres >/dev/null 2>&1
  as_pg "$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -qAtc 'SELECT pg_switch_wal()' postgres >/dev/null
  sleep 2
  as_pg "$PGBIN/pg_ctl" -D "$DIR/gen/data" -m fast stop >/dev/null
  SEGMENTS_DIR="$DIR/gen/arch" CONTROL="$DIR/gen/data/global/pg_control"
fi
: "${CONTROL:?set CONTROL to the global/pg_control file of the cluster}"
SEGS=$(ls "$SEGMENTS_DIR" | grep -E '^[0-9A-F]{24}$' | sort)
N=$(echo "$SEGS" | wc -l)
MB=$(du -smL "$SEGMENTS_DIR" | cut -f1)

cp "$WS/bench/archiver.py" "$DIR/archiver.py"
mkdir -p "$DIR/fake/global" "$DIR/fake/pg_wal/archive_status"
cp "$CONTROL" "$DIR/fake/global/pg_control"
for s in $SEGS; do ln -f "$SEGMENTS_DIR/$s" "$DIR/fake/pg_wal/$s" 2>/dev/null || cp "$SEGMENTS_DIR/$s" "$DIR/fake/pg_wal/$s"; done
cat "$DIR"/fake/pg_wal/0* >/dev/null
ready() { rm -f "$DIR"/fake/pg_wal/archive_status/*; for s in $SEGS; do : >"$DIR/fake/pg_wal/archive_status/$s.ready"; done; }
echo bench-passphrase >"$DIR/pass"
export LIFEBOAT_PASSWORD_FILE="$DIR/pass"
fresh() { rm -rf "$DIR/repo" "$DIR/cache"; LIFEBOAT_REPO="$DIR/repo" "$LB" init >/dev/null; }
export LIFEBOAT_REPO="$DIR/repo" LIFEBOAT_CACHE_DIR="$DIR/cache"
loop() { ready; python3 "$DIR/archiver.py" "$DIR/fake" "$1"; } # prints: n seconds cpu-seconds
ms() { awk -v a="$1" -v n="$2" 'BEGIN { printf "%.1f", a * 1000 / n }'; }
rate() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%.1f", n / t }'; }

echo "WAL budget: $N real segments ($MB MB), $CORES cores, load average $(cut -d' ' -f1 /proc/loadavg), $("$LB" --version)"
set -- $(loop "true %p"); CALL_SH=$(ms "$3" "$1")
fresh; ready; (cd "$DIR/fake" && "$LB" --quiet wal push --batch "$N" "pg_wal/$(echo "$SEGS" | head -n1)") >/dev/null
set -- $(loop "$LB --quiet wal push %p"); CALL_LB=$(ms "$3" "$1")
# One process storing everything: its CPU per segment, without any per-call cost.
fresh; ready
TIMES=$( { /usr/bin/time -f "%e %U %S" sh -c "cd '$DIR/fake' && '$LB' --quiet wal push --batch $N pg_wal/$(echo "$SEGS" | head -n1)" >/dev/null; } 2>&1 | tail -n1)
set -- $TIMES; STORE_WALL=$1; STORE_CPU=$(awk -v u="$2" -v s="$3" 'BEGIN { print u + s }')
STORE=$(ms "$STORE_CPU" "$N"); REPO_MB=$(du -sm "$DIR/repo" | cut -f1)
cat "$DIR"/fake/pg_wal/0* >"$DIR/all.bin"
ZSTD=$(zstd -b1 -i3 -B1048576 "$DIR/all.bin" 2>&1 | tr '\r' '\n' | grep -E 'MB/s' | tail -n1 | sed -E 's/.*\(x([0-9.]+)\), *([0-9.]+) MB\/s.*/\2 MB\/s, ratio \1/')
LZ4=$(lz4 -b1 -i3 -B4 "$DIR/all.bin" 2>&1 | tr '\r' '\n' | grep -E 'MB/s' | tail -n1 | sed -E 's/.*\(([0-9.]+)\), *([0-9.]+) MB\/s.*/\2 MB\/s, ratio \1/' || true)
rm -f "$DIR/all.bin"
FLOOR_OUT=$("$FLOOR" "$DIR"/fake/pg_wal/0*)
fresh; set -- $(loop "$LB --quiet wal push %p"); LOOP=$(rate "$1" "$2"); LOOP_CPU=$(ms "$3" "$1")
fresh; set -- $(loop "$LB --quiet wal push --background %p"); LOOP_BG=$(rate "$1" "$2")

PER_SEG=$(awk -v a="$STORE" -v b="$CALL_LB" 'BEGIN { print a + b }')
printf '%-58s %8s ms\n' "archiver + /bin/sh, per call (\`true %p\`)" "$CALL_SH"
printf '%-58s %8s ms\n' "a lifeboat call answered by its marker, all included" "$CALL_LB"
printf '%-58s %8s ms  (%s MB stored, %s s wall for %s)\n' "storing one segment, in one process (--batch $N)" "$STORE" "$REPO_MB" "$STORE_WALL" "$N"
printf '%-58s %8s ms\n' "=> CPU per segment pushed by an archiver" "$PER_SEG"
printf '%-58s %8s segments/s\n' "=> ceiling on $CORES cores, every core busy" "$(awk -v c="$CORES" -v p="$PER_SEG" 'BEGIN { printf "%.0f", c * 1000 / p }')"
printf '%-58s %8s segments/s (%s ms CPU per segment)\n' "measured: archiver loop, lifeboat wal push %p" "$LOOP" "$LOOP_CPU"
printf '%-58s %8s segments/s\n' "measured: archiver loop, lifeboat wal push --background %p" "$LOOP_BG"
echo "codecs alone, one core, 1 MiB blocks: zstd level 1: ${ZSTD:-n/a}; lz4 level 1: ${LZ4:-n/a}"
echo "(16 MiB at the zstd speed above is $(awk -v s="${ZSTD%% *}" 'BEGIN { if (s > 0) printf "%.1f", 16.777216 / s * 1000; else print "?" }') ms of one core per segment)"
echo "the floor, lifeboat's per-chunk steps alone on one core: $(echo "$FLOOR_OUT" | head -n1 | sed 's/.*per 16 MiB segment: //')"
echo "=> $(echo "$FLOOR_OUT" | tail -n1)"
