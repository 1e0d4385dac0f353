#!/usr/bin/env bash
# PostgreSQL side by side at pgbench scale 50 (about 750 MB): lifeboat against pg_basebackup,
# pg_dump -Fc and pgBackRest, on one throwaway cluster, printing seconds and ratios.
#
#   physical backup   lifeboat backup db (physical) | pg_basebackup -Ft to disk | pgbackrest full
#                     (physical_method = "basebackup"; the "local method" row: physical_method =
#                     "local", data_dir set, into a repository of its own)
#   incremental       lifeboat backup db again      | pgbackrest incr            (after a pgbench load)
#   logical backup    lifeboat backup (logical)     | pg_dump -Fc to a file
#   restore (files)   lifeboat restore db latest    | pgbackrest restore         (+ sync)
#   restore (RTO)     restore db latest --start      | pgbackrest restore + pg_ctl start, each until
#                     SELECT NOT pg_is_in_recovery() answers true (same WAL replayed by both)
#   WAL push          lifeboat wal push | pgbackrest archive-push, sync and async, on the same
#                     real segments (the cluster's own WAL: bulk load, then pgbench with
#                     checkpoints), driven like PostgreSQL's archiver: one archive_command per
#                     segment through /bin/sh, in name order, .ready renamed to .done after it.
#   RPO               under pgbench writes plus a ticker (a row with its commit time every 20 ms),
#                     the server is lost (pg_ctl stop -m immediate), restored from the repository
#                     with WAL replay (restore db latest --start); RPO = time of the loss - newest
#                     tick restored. Once with archive_command alone (archive_timeout = 1), once
#                     with `lifeboat wal stream --interval 500ms` (archive_timeout = 0).
#
# Runs unattended as root (the cluster and every PostgreSQL/pgBackRest program run as the
# postgres user); installs the Debian package pgbackrest with apt-get when it is missing.
# pgBackRest is configured like lifeboat: encrypted (aes-256-cbc), zstd, both cores
# (process-max=2). lifeboat's archive_command, pgBackRest's and a plain cp run one after the
# other as the cluster's archive_command, and every timed backup starts with the archive caught up.
#
# Environment: PG_SCALE (50), LOAD_SECS (20, pgbench before the incremental), BENCH_DIR (a new
# /var/tmp/lifeboat-pgscale.XXXXXX, or under /dev/shm when /var/tmp has less than 12 GB free:
# then fsync costs nothing and the figures measure CPU, not the disk), LIFEBOAT_BIN
# (<workspace>/target/release/lifeboat), RPO_LOAD_SECS (10, writes before each loss), RTO_LOAD_SECS
# (10, pgbench after the backups: the WAL both restores replay), COMPARE_BIN (another lifeboat build whose wal push is
# also timed on the same segments, e.g. an older release), LIFEBOAT_PG_BIN, KEEP=1 keeps the
# work dir. ONLY=rto runs the two backups each side needs and then only the RTO comparison,
# RTO_RUNS times (1), alternating which side goes first; the servers' logs of every run are kept
# in <work dir>/rto-logs.
set -euo pipefail
export LC_ALL=C
WS="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LB="${LIFEBOAT_BIN:-$WS/target/release/lifeboat}"
SCALE="${PG_SCALE:-50}"
LOAD_SECS="${LOAD_SECS:-20}"
PGBIN="${LIFEBOAT_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)}"
[ -x "$LB" ] || { echo "build first: cargo build --release -p lifeboat" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run as root (the cluster runs as the postgres user)" >&2; exit 1; }
if ! command -v pgbackrest >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbackrest >/dev/null || {
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbackrest >/dev/null; }
fi
if [ -z "${BENCH_DIR:-}" ]; then
  if [ "$(df -Pk /var/tmp | awk 'NR==2 {print $4}')" -ge $((12 << 20)) ]; then
    BENCH_DIR=$(mktemp -d /var/tmp/lifeboat-pgscale.XXXXXX)
  else
    BENCH_DIR=$(mktemp -d /dev/shm/lifeboat-pgscale.XXXXXX)
  fi
fi
DIR="$BENCH_DIR"
mkdir -p "$DIR"; chmod 755 "$DIR"; chown postgres:postgres "$DIR"
AS=(setpriv --reuid=postgres --regid=postgres --init-groups env HOME="$DIR")
run() { "${AS[@]}" "$@"; }
now() { date +%s.%N; }
secs() { awk -v a="$2" -v b="$1" 'BEGIN { printf "%.2f", a - b }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
timed() { local t0 t1; t0=$(now); "$@" >/dev/null 2>"$DIR/last.err" || { cat "$DIR/last.err" >&2; return 1; }; t1=$(now); secs "$t0" "$t1"; }

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
URL="postgres://postgres@127.0.0.1:$PORT/postgres"
export LIFEBOAT_REPO="$DIR/repo" LIFEBOAT_PASSWORD_FILE="$DIR/pass" LIFEBOAT_CACHE_DIR="$DIR/cache"
run sh -c "umask 077; echo bench-passphrase > $DIR/pass; mkdir -p $DIR/stash $DIR/pgbr $DIR/pgbr-push $DIR/spool $DIR/log"
pgbr_conf() { # file repo-path [extra lines]
  local f=$1 repo=$2; shift 2
  run sh -c "cat > $f" <<CONF
[global]
repo1-path=$repo
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=bench-passphrase
compress-type=zst
process-max=2
log-path=$DIR/log
lock-path=$DIR/log
spool-path=$DIR/spool
log-level-console=warn
start-fast=y
$(printf '%s\n' "$@")

[bench]
pg1-path=$DIR/data
pg1-port=$PORT
pg1-socket-path=$DIR
pg1-user=postgres
CONF
}
pgbr_conf "$DIR/pgbr.conf" "$DIR/pgbr"
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
archive_command = 'cp %p $DIR/stash/%f'
max_wal_size = 1GB
CONF
run "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" start -w >/dev/null
sql() { run "$PGBIN/psql" -XAtq -d "$URL" -c "$1"; }
run "$LB" init >/dev/null
run "${PGBR[@]}" stanza-create >/dev/null
# From now on every archived segment goes to the stash (for the push comparison), lifeboat and pgBackRest.
sql "ALTER SYSTEM SET archive_command = 'cp %p $DIR/stash/%f && LIFEBOAT_REPO=$LIFEBOAT_REPO LIFEBOAT_PASSWORD_FILE=$LIFEBOAT_PASSWORD_FILE LIFEBOAT_CACHE_DIR=$LIFEBOAT_CACHE_DIR $LB --quiet wal push %p && pgbackrest --config=$DIR/pgbr.conf --stanza=bench archive-push %p'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
# Waits until the archiver has nothing left (so a timed backup does not wait for a backlog).
caught_up() {
  sql "SELECT pg_switch_wal()" >/dev/null
  for _ in $(seq 1 1200); do
    [ -z "$(ls "$DIR/data/pg_wal/archive_status" | grep '\.ready$' || true)" ] && return 0
    sleep 0.5
  done
  echo "archiving does not catch up: see $DIR/server.log" >&2; exit 1
}
printf '[sources.db]\nkind = "postgres"\nurl = "%s"\nmode = "physical"\n' "$URL" > "$DIR/phys.toml"
printf '[sources.db]\nkind = "postgres"\nurl = "%s"\nmode = "logical"\ndatabases = ["postgres"]\n' "$URL" > "$DIR/logi.toml"

t0=$(now); run "$PGBIN/pgbench" -i -s "$SCALE" -q "$URL" >/dev/null 2>&1; t1=$(now)
SIZE=$(sql "SELECT pg_size_pretty(pg_database_size('postgres'))")
echo "pgbench scale $SCALE: $SIZE, loaded in $(secs "$t0" "$t1")s; lifeboat $("$LB" --version 2>/dev/null | head -n1), $(pgbackrest version), $("$PGBIN/postgres" --version)"
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at start (shared with other builds: rough figures)"

ONLY="${ONLY:-}"
caught_up
BB=- BB_SIZE=- DUMP=- LB_LOGI=- LB_REST=- BR_REST=- LB_LOCAL=-
if [ "$ONLY" != rto ]; then
sync; t0=$(now); run "$PGBIN/pg_basebackup" -d "$URL" -D "$DIR/pgbb" -Ft -X none --checkpoint=fast >/dev/null 2>&1; sync; t1=$(now)
BB=$(secs "$t0" "$t1"); BB_SIZE=$(du -sh "$DIR/pgbb" | cut -f1); rm -rf "$DIR/pgbb"
# The local method (lifeboat on the database host reads the data folder itself; what
# physical_method = "auto" picks when data_dir is set), into a repository of its own so that
# every row below still measures the basebackup method. Its WAL is archived like any other.
printf '[sources.db]\nkind = "postgres"\nurl = "%s"\nmode = "physical"\ndata_dir = "%s"\nphysical_method = "local"\n' "$URL" "$DIR/data" > "$DIR/local.toml"
run env LIFEBOAT_REPO="$DIR/repo-local" "$LB" init >/dev/null
caught_up; sync
LB_LOCAL=$(timed run env LIFEBOAT_REPO="$DIR/repo-local" "$LB" --config "$DIR/local.toml" --quiet backup db)
rm -rf "$DIR/repo-local"
fi
caught_up; sync
LB_FULL=$(timed run "$LB" --config "$DIR/phys.toml" --quiet backup db)
caught_up; sync
BR_FULL=$(timed run "${PGBR[@]}" backup --type=full)

run "$PGBIN/pgbench" -n -c 4 -j 2 -T "$LOAD_SECS" "$URL" >/dev/null 2>&1
caught_up; sync
LB_INCR=$(timed run "$LB" --config "$DIR/phys.toml" --quiet backup db)
caught_up; sync
BR_INCR=$(timed run "${PGBR[@]}" backup --type=incr)

if [ "$ONLY" != rto ]; then
sync; t0=$(now); run "$PGBIN/pg_dump" -Fc -f "$DIR/dump.fc" "$URL"; sync; t1=$(now)
DUMP=$(secs "$t0" "$t1")
LB_LOGI=$(timed run "$LB" --config "$DIR/logi.toml" --quiet backup db)

# Each from the disk, like the RTO runs below (the first restore after the backups otherwise
# paid up to 0.7 s more than the second, whichever tool it was).
cold() { sync; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
cold
LB_REST=$(timed run sh -c "'$LB' --config '$DIR/phys.toml' --quiet restore db latest --data-dir '$DIR/r-lifeboat' && sync")
cold
BR_REST=$(timed run sh -c "pgbackrest --config=$DIR/pgbr.conf --stanza=bench --pg1-path=$DIR/r-pgbr restore && sync")

rm -rf "$DIR/r-lifeboat" "$DIR/r-pgbr"
fi

# RTO: restore to a database that answers queries. Both restore their newest backup (lifeboat's
# second physical backup, pgBackRest's incremental) and replay the same archived WAL: every
# segment written since, including RTO_LOAD_SECS of pgbench, archived by both tools. Timed from
# the restore command until `SELECT NOT pg_is_in_recovery()` answers true through psql (recovery
# done, promoted, accepting writes), on a second port. lifeboat: `restore db latest --start`
# (restore_command = lifeboat wal fetch, 8 segments prefetched); pgBackRest: `pgbackrest
# restore` (restore_command = pgbackrest archive-get, as configured above: synchronous) then
# `pg_ctl start`. Archiving is off in both restored copies.
RTO_WAL_FROM=$(sql "SELECT pg_walfile_name(pg_current_wal_lsn())")
run "$PGBIN/pgbench" -n -c 4 -j 2 -T "${RTO_LOAD_SECS:-10}" "$URL" >/dev/null 2>&1
caught_up
RTO_SEGS=$(ls "$DIR/stash" | grep -E '^[0-9A-F]{24}$' | awk -v f="$RTO_WAL_FROM" '$0 >= substr(f, 1, 24)' | wc -l)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
until_queryable() { # port
  for _ in $(seq 1 6000); do
    [ "$(run "$PGBIN/psql" -XAtq -d "postgres://postgres@127.0.0.1:$1/postgres" -c "SELECT NOT pg_is_in_recovery()" 2>/dev/null)" = t ] && return 0
    sleep 0.05
  done
  echo "restored server on port $1 never became queryable" >&2; return 1
}
# Each timed restore starts with the source cluster's dirty pages written and synced: the first
# run found the writeback of pgbench's load in its way (PostgreSQL fsyncs every file of a data
# directory it starts after a crash or a restore), 2.8 s of its 5.8 s at scale 5.
# The source cluster is stopped meanwhile (its autovacuum, woken by the load, must not run into
# a timed restore), and the page cache is dropped before each restore: both tools read their
# repository from the disk, as a restore after a disaster does. (Without it, the first restore of
# a series ran up to 0.7 s slower than the next ones, whichever tool went first.)
settle() { sync; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
run "$PGBIN/pg_ctl" -D "$DIR/data" stop -m fast -w >/dev/null
run mkdir -p "$DIR/rto-logs"
rto_lifeboat() { # run number; prints seconds
  local rp; rp=$(free_port)
  settle; t0=$(now)
  run "$LB" --config "$DIR/phys.toml" --quiet restore db latest --data-dir "$DIR/rto-lifeboat" --start --no-archive \
    --port "$rp" --socket-dir "$DIR" --start-timeout 600s >/dev/null 2>"$DIR/last.err" || { cat "$DIR/last.err" >&2; exit 1; }
  until_queryable "$rp"; t1=$(now)
  secs "$t0" "$t1"
  run "$PGBIN/pg_ctl" -D "$DIR/rto-lifeboat" stop -m fast >/dev/null
  run cp "$DIR/.lifeboat-rto-lifeboat.spool/recovery.log" "$DIR/rto-logs/lifeboat-$1.log"
  rm -rf "$DIR/rto-lifeboat" "$DIR/.lifeboat-rto-lifeboat.spool"
}
rto_pgbr() { # run number; prints seconds
  local rp; rp=$(free_port)
  settle; t0=$(now)
  run "${PGBR[@]}" --pg1-path="$DIR/rto-pgbr" --archive-mode=off restore >/dev/null 2>"$DIR/last.err" || { cat "$DIR/last.err" >&2; exit 1; }
  run "$PGBIN/pg_ctl" -D "$DIR/rto-pgbr" -l "$DIR/rto-logs/pgbackrest-$1.log" -o "-p $rp -k $DIR" start >/dev/null
  until_queryable "$rp"; t1=$(now)
  secs "$t0" "$t1"
  run "$PGBIN/pg_ctl" -D "$DIR/rto-pgbr" stop -m fast >/dev/null; rm -rf "$DIR/rto-pgbr"
}
LB_RTOS=() BR_RTOS=()
for i in $(seq 1 "${RTO_RUNS:-1}"); do
  if [ $((i % 2)) = 1 ]; then
    LB_RTOS+=("$(rto_lifeboat "$i")"); BR_RTOS+=("$(rto_pgbr "$i")")
  else
    BR_RTOS+=("$(rto_pgbr "$i")"); LB_RTOS+=("$(rto_lifeboat "$i")")
  fi
  echo "RTO run $i: lifeboat ${LB_RTOS[-1]} s, pgbackrest ${BR_RTOS[-1]} s, ratio $(ratio "${LB_RTOS[-1]}" "${BR_RTOS[-1]}")" >&2
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
LB_RTO=$(median "${LB_RTOS[@]}") BR_RTO=$(median "${BR_RTOS[@]}")
run "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" start -w >/dev/null

REPO_SIZE=$(du -sh "$DIR/repo" | cut -f1); BR_SIZE=$(du -sh "$DIR/pgbr" | cut -f1)
echo
printf '%-34s %10s %10s %10s %8s\n' "step (seconds)" lifeboat other "" ratio
printf '%-34s %10s %10s %10s %8s\n' "physical backup vs pg_basebackup" "$LB_FULL" "$BB" "" "$(ratio "$LB_FULL" "$BB")"
printf '%-34s %10s %10s %10s %8s\n' "  local method vs pg_basebackup" "$LB_LOCAL" "$BB" "" "$(ratio "$LB_LOCAL" "$BB")"
printf '%-34s %10s %10s %10s %8s\n' "physical backup vs pgbackrest full" "$LB_FULL" "$BR_FULL" "" "$(ratio "$LB_FULL" "$BR_FULL")"
printf '%-34s %10s %10s %10s %8s\n' "incremental vs pgbackrest incr" "$LB_INCR" "$BR_INCR" "" "$(ratio "$LB_INCR" "$BR_INCR")"
printf '%-34s %10s %10s %10s %8s\n' "logical backup vs pg_dump -Fc" "$LB_LOGI" "$DUMP" "" "$(ratio "$LB_LOGI" "$DUMP")"
printf '%-34s %10s %10s %10s %8s\n' "restore (files) vs pgbackrest" "$LB_REST" "$BR_REST" "" "$(ratio "$LB_REST" "$BR_REST")"
printf '%-34s %10s %10s %10s %8s\n' "restore to queryable (RTO)" "$LB_RTO" "$BR_RTO" "" "$(ratio "$LB_RTO" "$BR_RTO")"
echo "(RTO: newest backup + at least ${RTO_SEGS} WAL segment(s) to replay, ${RTO_LOAD_SECS:-10} s of pgbench after the backups; files-only restore ratio $(ratio "$LB_REST" "$BR_REST"), to queryable $(ratio "$LB_RTO" "$BR_RTO"))"
[ "${RTO_RUNS:-1}" = 1 ] || echo "(RTO: median of ${RTO_RUNS} runs; each run's figures above)"
if [ "$ONLY" = rto ]; then echo "(work dir $DIR)"; exit 0; fi
echo "(ratio < 1: lifeboat faster) repository $REPO_SIZE (physical x2 + logical + WAL), pgBackRest $BR_SIZE (full + incr + WAL), pg_basebackup tar $BB_SIZE, pg_dump file $(du -sh "$DIR/dump.fc" | cut -f1)"

# WAL push: the stashed segments, copied into a fake data folder (pg_control of the cluster, so
# both tools accept them), pushed into fresh repositories.
caught_up
SEGS=$(ls "$DIR/stash" | grep -E '^[0-9A-F]{24}$' | sort)
NSEG=$(echo "$SEGS" | wc -l)
STASH_MB=$(du -sm "$DIR/stash" | cut -f1)
run sh -c "cat > $DIR/archiver.py" < "$WS/bench/archiver.py"
fake() { # fresh fake data folder with every stashed segment ready
  run rm -rf "$DIR/fake"
  run mkdir -p "$DIR/fake/global" "$DIR/fake/pg_wal/archive_status"
  run cp "$DIR/data/global/pg_control" "$DIR/fake/global/"
  run cp "$DIR/data/PG_VERSION" "$DIR/fake/"
  # Hard links: neither tool writes to a segment it archives.
  for s in $SEGS; do run ln "$DIR/stash/$s" "$DIR/fake/pg_wal/$s"; run touch "$DIR/fake/pg_wal/archive_status/$s.ready"; done
  sync
  # In the page cache, as a segment the archiver is handed has just been written (the VM's
  # reclaim evicts the stash meanwhile, which made the first pusher timed read from the disk).
  cat "$DIR"/fake/pg_wal/0* >/dev/null
}
push_rate() { # label command
  fake
  local out; out=$(run python3 "$DIR/archiver.py" "$DIR/fake" "$2")
  local n t; read -r n t _ <<<"$out"
  printf '%-44s %4s segments in %6ss = %6s segments/s\n' "$1" "$n" "$t" "$(awk -v n="$n" -v t="$t" 'BEGIN{printf "%.1f", n/t}')" >&2
  awk -v n="$n" -v t="$t" 'BEGIN{printf "%.1f", n/t}'
}
echo
echo "WAL push: $NSEG real segments ($STASH_MB MB: bulk load, then pgbench with checkpoints)"
run "$LB" --repo "$DIR/repo-push" init >/dev/null
LBP=$(push_rate "lifeboat wal push" "LIFEBOAT_REPO=$DIR/repo-push LIFEBOAT_CACHE_DIR=$DIR/cache-push $LB --quiet wal push %p")
# The same with the other codecs (the default is zstd; auto uses LZ4 for a backlog like this one).
for codec in auto lz4; do
  run "$LB" --repo "$DIR/repo-$codec" init >/dev/null
  push_rate "lifeboat wal push --compression $codec" "LIFEBOAT_REPO=$DIR/repo-$codec LIFEBOAT_CACHE_DIR=$DIR/cache-$codec $LB --quiet wal push --compression $codec %p" >/dev/null
  echo "  repository: $(du -sm "$DIR/repo-$codec" | cut -f1) MB for $STASH_MB MB of WAL" >&2
  rm -rf "$DIR/repo-$codec" "$DIR/cache-$codec"
done
if [ -n "${COMPARE_BIN:-}" ]; then
  run "$COMPARE_BIN" --repo "$DIR/repo-cmp" init >/dev/null
  CMP=$(push_rate "COMPARE_BIN wal push" "LIFEBOAT_REPO=$DIR/repo-cmp LIFEBOAT_CACHE_DIR=$DIR/cache-cmp $COMPARE_BIN --quiet wal push %p")
  echo "lifeboat / COMPARE_BIN ($COMPARE_BIN): $(ratio "$LBP" "$CMP") x"
  rm -rf "$DIR/repo-cmp"
fi
pgbr_conf "$DIR/pgbr-push.conf" "$DIR/pgbr-push"
pgbr_conf "$DIR/pgbr-async.conf" "$DIR/pgbr-async" "archive-async=y"
run pgbackrest --config="$DIR/pgbr-push.conf" --stanza=bench stanza-create >/dev/null
run pgbackrest --config="$DIR/pgbr-async.conf" --stanza=bench stanza-create >/dev/null
BRS=$(push_rate "pgbackrest archive-push (sync)" "pgbackrest --config=$DIR/pgbr-push.conf --stanza=bench --pg1-path=$DIR/fake archive-push %p")
BRA=$(push_rate "pgbackrest archive-push (async, process-max 2)" "pgbackrest --config=$DIR/pgbr-async.conf --stanza=bench --pg1-path=$DIR/fake archive-push %p")
echo "lifeboat / pgbackrest sync: $(ratio "$LBP" "$BRS") x, lifeboat / pgbackrest async: $(ratio "$LBP" "$BRA") x (segments/s, higher is better for lifeboat)"
echo "push repositories: lifeboat (zstd) $(du -sh "$DIR/repo-push" | cut -f1), pgbackrest sync $(du -sh "$DIR/pgbr-push" | cut -f1)"

# RPO: archive_command alone, then wal stream. The cluster archives into lifeboat only from now.
RPO_SECS="${RPO_LOAD_SECS:-10}"
run sh -c "cat > $DIR/tick.sql" <<'SQL'
INSERT INTO ticks DEFAULT VALUES;
SQL
sql "CREATE TABLE ticks (at timestamptz DEFAULT clock_timestamp())" >/dev/null
sql "ALTER SYSTEM SET archive_command = 'LIFEBOAT_REPO=$LIFEBOAT_REPO LIFEBOAT_PASSWORD_FILE=$LIFEBOAT_PASSWORD_FILE LIFEBOAT_CACHE_DIR=$LIFEBOAT_CACHE_DIR $LB --quiet wal push %p'" >/dev/null
rpo_run() { # label archive_timeout [stream]
  local label=$1 timeout=$2 stream=${3:-} pids=() loss last rport rdir="$DIR/rpo-restored"
  sql "ALTER SYSTEM SET archive_timeout = $timeout" >/dev/null; sql "SELECT pg_reload_conf()" >/dev/null
  caught_up
  if [ -n "$stream" ]; then
    run "$LB" --config "$DIR/phys.toml" --quiet wal stream --interval 500ms >"$DIR/stream.log" 2>&1 & pids+=($!)
    for _ in $(seq 1 100); do
      [ "$(sql "SELECT count(*) FROM pg_stat_replication")" = 1 ] && break; sleep 0.2
    done
  fi
  run "$PGBIN/pgbench" -n -c 2 -j 1 -T $((RPO_SECS + 30)) "$URL" >/dev/null 2>&1 & pids+=($!)
  run "$PGBIN/pgbench" -n -c 1 -R 50 -T $((RPO_SECS + 30)) -f "$DIR/tick.sql" "$URL" >/dev/null 2>&1 & pids+=($!)
  sleep "$RPO_SECS"
  run "$PGBIN/pg_ctl" -D "$DIR/data" stop -m immediate >/dev/null
  loss=$(now)
  sleep 1 # what a stream host would still store after the server is gone
  kill "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true
  rport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  run "$LB" --config "$DIR/phys.toml" --quiet restore db latest --data-dir "$rdir" --start --no-archive \
    --port "$rport" --socket-dir "$DIR" --start-timeout 300s >/dev/null 2>"$DIR/last.err" || { cat "$DIR/last.err" >&2; exit 1; }
  last=$(run "$PGBIN/psql" -XAtq -d "postgres://postgres@127.0.0.1:$rport/postgres" -c "SELECT extract(epoch FROM max(at)) FROM ticks")
  run "$PGBIN/pg_ctl" -D "$rdir" stop -m fast >/dev/null; rm -rf "$rdir"
  run "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" start -w >/dev/null # crash recovery
  secs "$last" "$loss"
}
RPO_ARCH=$(rpo_run "archive_command" 1)
RPO_STREAM=$(rpo_run "wal stream" 0 stream)
echo
echo "RPO under pgbench writes (${RPO_SECS}s of load, then the server is lost): archive_command with archive_timeout = 1: ${RPO_ARCH}s; wal stream --interval 500ms: ${RPO_STREAM}s"
echo "(work dir $DIR on $(df -P "$DIR" | awk 'NR==2 {print $1}'))"
