#!/usr/bin/env bash
# Opt-in job: lifeboat's S3 smoke test against Garage, a real distributed S3-compatible store that
# checks SigV4 signatures but IGNORES conditional writes (If-None-Match). Not part of .ci/run:
# a clean machine builds Garage from crates.io first (10-25 min on 2 cores, ~1.4 GB of memory).
# Garage is AGPL-3.0: it is only ever run, unmodified, as a separate process; nothing links it.
#
# Usage: .ci/garage-tests.sh            (GARAGE_VERSION=2.5.0 by default)
# Checks: init/backup/restore/check through Garage; the prune lease probe detects the ignored
# conditional writes (prune refused, then allowed with --assume-no-other-prune and shown by
# `locations`); replication between a Garage bucket and a folder; a wrong secret is refused
# (exit 24); then the S3 integration tests of crates/lifeboat/tests/cli/s3.rs run against this
# Garage (the Object Lock tests and the one that stops its server skip, saying why).
set -euo pipefail
cd "$(dirname "$0")/.."
GARAGE_VERSION=${GARAGE_VERSION:-2.5.0}
step() { echo; echo "=== $*"; }
fail() { echo "FAILED: $*" >&2; exit 1; }

if ! command -v garage >/dev/null 2>&1; then
  step "cargo install garage $GARAGE_VERSION (slow)"
  cargo install garage --version "$GARAGE_VERSION" --locked
fi
step "build lifeboat"
cargo build --release --locked -p lifeboat
LB="$PWD/target/release/lifeboat"

work=$(mktemp -d /tmp/lifeboat-garage.XXXXXX)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
rpc=$((port + 1))
hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

step "start a single-node Garage on 127.0.0.1:$port"
umask 077
cat >"$work/garage.toml" <<CONF
metadata_dir = "$work/meta"
data_dir = "$work/data"
db_engine = "lmdb"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(hex 32)"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$port"
root_domain = ".s3.garage.localhost"
CONF
umask 022
G=(garage -c "$work/garage.toml")
"${G[@]}" server >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 300); do "${G[@]}" status >/dev/null 2>&1 && break; sleep 0.1; done
node=$("${G[@]}" node id -q | cut -d@ -f1)
"${G[@]}" layout assign -z dc1 -c 1G "$node" >/dev/null
"${G[@]}" layout apply --version 1 >/dev/null
key_id=GK$(hex 12)
key_secret=$(hex 32)
"${G[@]}" key import --yes -n lifeboat "$key_id" "$key_secret" >/dev/null
for b in lifeboat-one lifeboat-two; do
  "${G[@]}" bucket create "$b" >/dev/null
  "${G[@]}" bucket allow --read --write --owner "$b" --key lifeboat >/dev/null
done

export AWS_ACCESS_KEY_ID=$key_id AWS_SECRET_ACCESS_KEY=$key_secret
export LIFEBOAT_PASSWORD=garage-test LIFEBOAT_CACHE_DIR="$work/cache" LIFEBOAT_LEASE_SETTLE_SECS=1
unset LIFEBOAT_REPO
mkdir -p "$work/src/sub"
head -c 20000000 /dev/urandom >"$work/src/big.bin"
echo hello >"$work/src/sub/hello.txt"
cat >"$work/lifeboat.toml" <<TOML
[repository]
locations = ["garage", "nas"]
[locations.garage]
url = "s3://lifeboat-one/repo"
region = "garage"
endpoint = "http://127.0.0.1:$port"
[locations.nas]
url = "$work/nas"
TOML
export LIFEBOAT_CONFIG="$work/lifeboat.toml"

step "init, backup, restore, check"
"$LB" init
"$LB" backup "$work/src"
"$LB" restore latest --target "$work/restore"
diff -r "$work/src" "$work/restore$work/src" || fail "restored tree differs"
"$LB" check --read-data --location garage
"$LB" check --read-data --location nas

step "prune: the probe must detect ignored conditional writes"
set +e
out=$("$LB" prune 2>&1); code=$?
set -e
[ "$code" = 2 ] || fail "prune on Garage exited $code, expected 2: $out"
grep -q "ignores conditional writes" <<<"$out" || fail "no explanation: $out"
"$LB" prune --assume-no-other-prune --grace 0s --unsafe-short-grace
"$LB" --json locations | grep -q '"conditional_writes": *"ignored"' || fail "locations does not show the mode"

step "replicate into a second bucket"
sed -i 's/locations = \["garage", "nas"\]/locations = ["garage", "nas", "second"]/' "$work/lifeboat.toml"
cat >>"$work/lifeboat.toml" <<TOML
[locations.second]
url = "s3://lifeboat-two/repo"
region = "garage"
endpoint = "http://127.0.0.1:$port"
TOML
"$LB" replicate --to second
"$LB" check --read-data --location second

step "a wrong secret is refused (Garage checks signatures)"
set +e
AWS_SECRET_ACCESS_KEY=wrong AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_REGION=garage \
  "$LB" --repo s3://lifeboat-one/repo snapshots >/dev/null 2>"$work/err"; code=$?
set -e
[ "$code" = 24 ] || fail "a wrong secret: exit $code, expected 24: $(cat "$work/err")"
echo "refused with exit $code: $(head -c 200 "$work/err")"

step "the S3 integration tests (crates/lifeboat/tests/cli/s3.rs) against this Garage"
# Tests that need what only moto has (Object Lock, a server to stop) print why they skip.
set +e
LIFEBOAT_TEST_GARAGE_ENDPOINT="http://127.0.0.1:$port" LIFEBOAT_TEST_GARAGE_CONFIG="$work/garage.toml" \
  LIFEBOAT_TEST_GARAGE_KEY=lifeboat cargo test --locked -p lifeboat --test cli s3:: -- --nocapture \
  >"$work/tests.log" 2>&1
code=$?
set -e
grep -E "^test s3::|skipped on Garage|^Garage, |test result" "$work/tests.log" || true
[ "$code" = 0 ] || { tail -60 "$work/tests.log"; fail "the S3 tests failed on Garage"; }

step "all Garage checks passed"
