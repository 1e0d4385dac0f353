#!/usr/bin/env bash
# Rough logical PostgreSQL benchmark: lifeboat logical backup / restore / restore test next to
# pg_dump -Fc and pg_restore, on a pgbench database (default scale 10, about 150 MB).
#
# Usage: bench/pg_logical.sh          (as root: the throwaway cluster runs as the postgres user)
# Environment: BENCH_PG_SCALE (10), BENCH_DIR (/var/tmp/lifeboat-bench-pg), LIFEBOAT_BIN
#   (<workspace>/target/release/lifeboat, else target/debug/lifeboat), LIFEBOAT_PG_BIN.
# Timings are wall-clock seconds of one run on a shared machine: rough figures, not a contract.
set -euo pipefail
export LC_ALL=C
WORKSPACE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCALE="${BENCH_PG_SCALE:-10}"
DIR="${BENCH_DIR:-/var/tmp/lifeboat-bench-pg}"
PGBIN="${LIFEBOAT_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}"
BIN="${LIFEBOAT_BIN:-$WORKSPACE/target/release/lifeboat}"
[ -x "$BIN" ] || BIN="$WORKSPACE/target/debug/lifeboat"
[ -x "$BIN" ] || { echo "build lifeboat first (cargo build --release -p lifeboat)"; exit 2; }
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

rm -rf "$DIR"; mkdir -p "$DIR"; chown postgres "$DIR"
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -c "$*"; else sh -c "$*"; fi; }
as_pg "$PGBIN/initdb -D $DIR/data -A trust >/dev/null"
as_pg "$PGBIN/pg_ctl -D $DIR/data -o '-p $PORT -k $DIR -c listen_addresses=127.0.0.1' -l $DIR/log -w start >/dev/null"
trap 'as_pg "$PGBIN/pg_ctl -D $DIR/data -m fast stop >/dev/null" || true' EXIT
URL="postgres://postgres@127.0.0.1:$PORT"
"$PGBIN/psql" -qX "$URL/postgres" -c "CREATE DATABASE app"
"$PGBIN/pgbench" -q -i -s "$SCALE" "$URL/app" 2>/dev/null
SIZE=$("$PGBIN/psql" -XAtq "$URL/app" -c "SELECT pg_size_pretty(pg_database_size('app'))")

export LIFEBOAT_REPO="$DIR/repo" LIFEBOAT_PASSWORD=lifeboat-bench LIFEBOAT_CACHE_DIR="$DIR/cache"
cat > "$DIR/lifeboat.toml" <<TOML
[sources.db]
kind = "postgres"
mode = "logical"
url = "$URL/app"
databases = ["app"]
checks = ["SELECT count(*) = $((SCALE * 100000)) FROM pgbench_accounts"]
TOML
export LIFEBOAT_CONFIG="$DIR/lifeboat.toml"
"$BIN" -q init

t() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
T_DUMP=$(t "$PGBIN/pg_dump" -Fc -f "$DIR/app.dump" "$URL/app")
T_LB1=$(t "$BIN" -q backup db)
"$PGBIN/pgbench" -n -T 5 -c 2 "$URL/app" >/dev/null 2>&1
T_LB2=$(t "$BIN" -q backup db)
ADDED2=$("$BIN" --json snapshots | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["summary"]["bytes_added"])')
"$PGBIN/psql" -qX "$URL/postgres" -c "CREATE DATABASE r1" -c "CREATE DATABASE r2"
T_PGR=$(t "$PGBIN/pg_restore" --single-transaction -d "$URL/r1" "$DIR/app.dump")
"$PGBIN/psql" -qX "$URL/postgres" -c "DROP DATABASE r2"
T_LBR=$(t "$BIN" -q restore db --to "$URL/r2")
T_VER=$(t "$BIN" -q verify restore db)

echo "pgbench scale $SCALE ($SIZE), lifeboat $BIN"
printf '%-44s %8s\n' step seconds
printf '%-44s %8.2f\n' "pg_dump -Fc (to a file)" "$T_DUMP"
printf '%-44s %8.2f\n' "lifeboat backup (logical, first)" "$T_LB1"
printf '%-44s %8.2f   (%s bytes added after 5 s of pgbench)\n' "lifeboat backup (logical, second)" "$T_LB2" "$ADDED2"
printf '%-44s %8.2f\n' "pg_restore --single-transaction" "$T_PGR"
printf '%-44s %8.2f\n' "lifeboat restore --to (incl. fingerprints)" "$T_LBR"
printf '%-44s %8.2f\n' "lifeboat verify restore (throwaway cluster)" "$T_VER"
echo "dump file $(du -h "$DIR/app.dump" | cut -f1), repository $(du -sh "$DIR/repo" | cut -f1)"
