#!/usr/bin/env bash
# S3 benchmark: backup and restore through a local S3-compatible server (moto on loopback),
# lifeboat against restic on the same server and data, with `aws s3 cp --recursive` (upload and
# download of the raw files) as the transfer reference. Prints seconds and ratios.
#
# Usage: bench/s3.sh
# Environment (all optional):
#   BENCH_S3_DIR      work dir                       default /var/tmp/lifeboat-bench-s3
#   BENCH_S3_SIZE_MB  dataset size in MB (real files copied from /usr)   default 200
#   LIFEBOAT_BIN      lifeboat binary                default target/release/lifeboat, else target/debug/lifeboat
#
# moto keeps everything in one Python process in memory: it measures the client and protocol
# path, not a storage engine (see docs/s3.md; use .ci/garage-tests.sh's Garage for that).
# Numbers from a shared, loaded machine are rough.
set -euo pipefail
export LC_ALL=C
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${BENCH_S3_DIR:-/var/tmp/lifeboat-bench-s3}"
SIZE_MB="${BENCH_S3_SIZE_MB:-200}"
LB="${LIFEBOAT_BIN:-}"
if [ -z "$LB" ]; then
  if [ -x "$ROOT/target/release/lifeboat" ]; then LB="$ROOT/target/release/lifeboat"; else LB="$ROOT/target/debug/lifeboat"; fi
fi
[ -x "$LB" ] || { echo "no lifeboat binary at $LB (cargo build --release -p lifeboat)" >&2; exit 1; }
command -v moto_server >/dev/null || { echo "moto_server missing: python3 -m pip install \"moto[s3]\" flask flask-cors" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

rm -rf "$DIR"; mkdir -p "$DIR"
moto_pid=""
trap '[ -n "$moto_pid" ] && kill "$moto_pid" 2>/dev/null; true' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
moto_server -H 127.0.0.1 -p "$port" >"$DIR/moto.log" 2>&1 &
moto_pid=$!
for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
for b in lifeboat-bench restic-bench aws-bench; do curl -fs -o /dev/null -X PUT "http://127.0.0.1:$port/$b"; done
endpoint="http://127.0.0.1:$port"

echo "dataset: ${SIZE_MB} MB of real files from /usr"
python3 - "$DIR/data" "$SIZE_MB" <<'PY'
import os, shutil, sys
dst, limit = sys.argv[1], int(sys.argv[2]) * 10**6
total = 0
for top in ("/usr/share", "/usr/lib"):
    for root, dirs, files in os.walk(top):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(root, f)
            if not os.path.isfile(p) or os.path.islink(p):
                continue
            size = os.path.getsize(p)
            if total + size > limit:
                continue
            t = os.path.join(dst, p.lstrip("/"))
            os.makedirs(os.path.dirname(t), exist_ok=True)
            try:
                shutil.copyfile(p, t)
            except OSError:
                continue
            total += size
            if total >= limit * 0.99:
                print(f"{total/1e6:.0f} MB copied"); sys.exit(0)
print(f"{total/1e6:.0f} MB copied")
PY

export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export LIFEBOAT_PASSWORD=bench RESTIC_PASSWORD=bench
declare -A T=()
timed() { local k=$1; shift; local s e; s=$(date +%s.%N); "$@" >"$DIR/$k.log" 2>&1 || { echo "$k failed:"; tail -5 "$DIR/$k.log"; exit 1; }; e=$(date +%s.%N); T[$k]=$(echo "$e - $s" | bc); echo "  $k: ${T[$k]} s"; }

echo "lifeboat ($LB)"
export LIFEBOAT_REPO="s3://lifeboat-bench/repo" AWS_ENDPOINT_URL="$endpoint" LIFEBOAT_CACHE_DIR="$DIR/lb-cache"
"$LB" init >/dev/null
timed lb.backup "$LB" backup "$DIR/data"
timed lb.backup2 "$LB" backup "$DIR/data"
timed lb.restore "$LB" restore latest --target "$DIR/lb-restore"
diff -r "$DIR/data" "$DIR/lb-restore$DIR/data" >/dev/null || { echo "lifeboat restore differs"; exit 1; }
unset LIFEBOAT_REPO AWS_ENDPOINT_URL

if have restic; then
  echo "restic ($(restic version | head -1))"
  export RESTIC_REPOSITORY="s3:$endpoint/restic-bench/repo" RESTIC_CACHE_DIR="$DIR/restic-cache"
  restic init --repository-version 2 >/dev/null
  timed restic.backup restic backup --compression auto "$DIR/data"
  timed restic.backup2 restic backup --compression auto "$DIR/data"
  timed restic.restore restic restore latest --target "$DIR/restic-restore"
fi
if have aws && aws --version >/dev/null 2>&1; then
  echo "aws s3 cp --recursive (transfer reference, no dedup/compression/encryption)"
  timed aws.backup aws --endpoint-url "$endpoint" s3 cp --recursive --only-show-errors "$DIR/data" s3://aws-bench/data
  timed aws.restore aws --endpoint-url "$endpoint" s3 cp --recursive --only-show-errors s3://aws-bench/data "$DIR/aws-restore"
fi

ratio() { if [ -n "${T[$2]:-}" ]; then echo "scale=2; ${T[$1]} / ${T[$2]}" | bc; else echo "-"; fi; }
echo
printf '%-22s %10s %10s %10s %10s %10s\n' "step (seconds)" lifeboat restic lb/restic aws lb/aws
for s in backup backup2 restore; do
  printf '%-22s %10s %10s %10s %10s %10s\n' "$s" "${T[lb.$s]}" "${T[restic.$s]:--}" "$(ratio lb.$s restic.$s)" "${T[aws.$s]:--}" "$(ratio lb.$s aws.$s)"
done
echo "(backup2 = unchanged re-run; moto on loopback; rough figures)"
