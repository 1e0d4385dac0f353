#!/usr/bin/env bash
# What a second location costs `wal push` per segment: an archiver-like loop (one call per
# segment, in name order, `--batch 1`, `.ready` renamed to `.done` after each success) into one
# local folder, then into two (a [repository] locations config). Prints ms per segment for each.
#
#   bench/wal-locations.sh [SEGMENTS]        # default 40 segments of 16 MiB
#   LIFEBOAT_BIN=target/release/lifeboat bench/wal-locations.sh
#   BENCH_SECOND_DIR=/dev/shm bench/wal-locations.sh   # second location on another device
#
# Segments: 6 MiB of random bytes then zeros (a segment switched early by archive_timeout), so
# compression and the zero-chunk path both count. The key derivation is made cheap
# (LIFEBOAT_INSECURE_FAST_KDF=1) so the figure is the storage work; a real call adds the
# Argon2 derivation (the same with one or two locations).
set -euo pipefail
n=${1:-40}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${LIFEBOAT_BIN:-$here/target/debug/lifeboat}
work=$(mktemp -d "${TMPDIR:-/var/tmp}/lifeboat-walloc-XXXXXX")
trap 'rm -rf "$work"' EXIT
export LIFEBOAT_PASSWORD=bench LIFEBOAT_INSECURE_FAST_KDF=1
unset LIFEBOAT_REPO LIFEBOAT_CONFIG

mkdir -p "$work/src"
for i in $(seq 1 "$n"); do
  f=$(printf '%s/src/0000000100000000000000%02X' "$work" "$i")
  { head -c $((6 << 20)) /dev/urandom; head -c $((10 << 20)) /dev/zero; } >"$f"
done

run() { # $1 label, rest: env for lifeboat
  local label=$1; shift
  local d="$work/$label"
  mkdir -p "$d/data/global" "$d/data/pg_wal/archive_status"
  printf '\x2a\x00\x00\x00\x00\x00\x00\x63' >"$d/data/global/pg_control"
  env "$@" LIFEBOAT_CACHE_DIR="$d/cache" "$bin" --quiet init >/dev/null
  cp "$work"/src/* "$d/data/pg_wal/"
  for f in "$d"/data/pg_wal/0*; do touch "$d/data/pg_wal/archive_status/$(basename "$f").ready"; done
  sync
  local t0 t1
  t0=$(date +%s%N)
  for f in "$d"/data/pg_wal/0*; do
    name=$(basename "$f")
    env "$@" LIFEBOAT_CACHE_DIR="$d/cache" "$bin" --quiet wal push "pg_wal/$name" --data-dir "$d/data" --batch 1
    mv "$d/data/pg_wal/archive_status/$name.ready" "$d/data/pg_wal/archive_status/$name.done"
  done
  t1=$(date +%s%N)
  echo "$label: $n segments in $(( (t1 - t0) / 1000000 )) ms = $(( (t1 - t0) / 1000000 / n )) ms/segment"
}

run one LIFEBOAT_REPO="$work/one/repo"
second=$work/two/b
if [ -n "${BENCH_SECOND_DIR:-}" ]; then second=$(mktemp -d "$BENCH_SECOND_DIR/lifeboat-walloc-b-XXXXXX"); fi
trap 'rm -rf "$work" ${BENCH_SECOND_DIR:+"$second"}' EXIT
mkdir -p "$second"
cat >"$work/two.toml" <<TOML
[repository]
locations = ["a", "b"]
[locations.a]
url = "$work/two/a"
[locations.b]
url = "$second"
TOML
run two LIFEBOAT_CONFIG="$work/two.toml"
