#!/usr/bin/env bash
# lifeboat quickstart: build, then back up the example service (env file, TLS certificate and
# key, compose file) into a fresh local repository, restore it to a scratch folder, prove the
# restored files are identical, and verify every byte of the repository. Then, when the
# PostgreSQL server programs are installed, the database-loss scenario (examples/database-loss.sh):
# physical backup + WAL archiving, data folder destroyed, restore, measured RPO and RTO.
#
#   ./quickstart.sh                 # work folder: a new /tmp/lifeboat-demo.XXXXXX
#   LIFEBOAT_DEMO_DIR=/path ./quickstart.sh
set -euo pipefail
cd "$(dirname "$0")"

echo "==> building lifeboat (cargo build --release; the first build takes 2-4 minutes)"
cargo build --release --locked
LB="$PWD/target/release/lifeboat"

WORK="${LIFEBOAT_DEMO_DIR:-$(mktemp -d /tmp/lifeboat-demo.XXXXXX)}"
mkdir -p "$WORK"
SOURCE="$PWD/examples/service"

# A random passphrase in a private file: it never appears on a command line.
umask 077
head -c 24 /dev/urandom | base64 > "$WORK/passphrase"
export LIFEBOAT_REPO="$WORK/repository"
export LIFEBOAT_PASSWORD_FILE="$WORK/passphrase"
export LIFEBOAT_CACHE_DIR="$WORK/cache"

echo "==> lifeboat init   (repository: $LIFEBOAT_REPO)"
"$LB" init
echo "==> lifeboat backup $SOURCE --tag config"
"$LB" backup "$SOURCE" --tag config
echo "==> lifeboat backup again: unchanged files are not re-read"
"$LB" backup "$SOURCE" --tag config
echo "==> lifeboat snapshots"
"$LB" snapshots
echo "==> lifeboat restore latest --target $WORK/restore --verify"
"$LB" restore latest --target "$WORK/restore" --verify
echo "==> comparing the restored tree with the source (diff -r)"
diff -r "$SOURCE" "$WORK/restore$SOURCE"
echo "    identical"
echo "==> lifeboat check --read-data"
"$LB" check --read-data
echo
"$PWD/examples/database-loss.sh" "$LB" "$WORK"
echo
echo "All done. Repository, passphrase file and restored copy are in $WORK"
echo "Try: LIFEBOAT_REPO=$LIFEBOAT_REPO LIFEBOAT_PASSWORD_FILE=$LIFEBOAT_PASSWORD_FILE $LB ls latest -l"
