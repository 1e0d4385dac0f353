#!/usr/bin/env bash
# lifeboat benchmark harness: lifeboat vs restic vs borg on ~1.6 GB of real files.
#
# Usage: bench/run.sh [--runs N] [--help]
#
# Environment (all optional):
#   BENCH_DIR          work dir (dataset, repos, logs, results)   default /var/tmp/lifeboat-bench
#   BENCH_SIZE_MB      dataset target size in MB (10^6 bytes)      default 1600
#   BENCH_RUNS         number of full comparison runs              default 1 (--runs overrides)
#   BENCH_TOOLS        tools to compare                            default "lifeboat restic borg"
#   BENCH_REFS         run the tar|zstd and cp -a references (0/1) default 1
#   BENCH_VERIFY       diff -r restored trees against the data (0/1, untimed) default 0
#   BENCH_DROP_CACHES  try to drop the page cache before every timed step (0/1) default 1
#   BENCH_BUILD        "missing" (build lifeboat only if binary missing) or "always" default missing
#   LIFEBOAT_BIN       lifeboat binary   default <workspace>/target/release/lifeboat
#   RESTIC_PASSWORD / BORG_PASSPHRASE / LIFEBOAT_PASSWORD   default "lifeboat-bench"
#
# See bench/README.md for the methodology.
set -euo pipefail
export LC_ALL=C

# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORKSPACE="$(cd "$SCRIPT_DIR/.." && pwd)"

BENCH_DIR="${BENCH_DIR:-/var/tmp/lifeboat-bench}"
BENCH_SIZE_MB="${BENCH_SIZE_MB:-1600}"
BENCH_RUNS="${BENCH_RUNS:-1}"
BENCH_TOOLS="${BENCH_TOOLS:-lifeboat restic borg}"
BENCH_REFS="${BENCH_REFS:-1}"
BENCH_VERIFY="${BENCH_VERIFY:-0}"
BENCH_DROP_CACHES="${BENCH_DROP_CACHES:-1}"
BENCH_BUILD="${BENCH_BUILD:-missing}"
LIFEBOAT_BIN="${LIFEBOAT_BIN:-$WORKSPACE/target/release/lifeboat}"

# Passwords only ever travel through the environment, never argv.
export RESTIC_PASSWORD="${RESTIC_PASSWORD:-lifeboat-bench}"
export BORG_PASSPHRASE="${BORG_PASSPHRASE:-lifeboat-bench}"
export LIFEBOAT_PASSWORD="${LIFEBOAT_PASSWORD:-lifeboat-bench}"
export BORG_DISPLAY_PASSPHRASE=n               # never prompt on borg init

DATA="$BENCH_DIR/data"                      # the dataset (pristine between runs)
DATA_MARKER="$BENCH_DIR/data.ready"         # written once the dataset is complete
MUT_LIST="$BENCH_DIR/mutation.list"         # files touched by the 1 % mutation
MUT_PRISTINE="$BENCH_DIR/mutation-pristine.tar"  # original copies of those files
MUT_BLOCK="$BENCH_DIR/mutation-block.bin"   # deterministic pseudo-random bytes
MUT_MARKER="$BENCH_DIR/MUTATED"             # present while the dataset is mutated

STEPS=(backup1 backup2 backup3 restore check)
declare -A STEP_LABEL=(
  [backup1]="1 first backup"
  [backup2]="2 unchanged re-run"
  [backup3]="3 1%-changed re-run"
  [restore]="4 restore latest"
  [check]="5 check (read all data)"
)

# Per-run measurements, keyed "tool.step" (reset for every run).
declare -A SEC=() RSS=() RC=()
declare -A REPO1=() REPOF=() CACHEF=() VERIFY=()

# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------
log()  { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die()  { log "ERROR: $*"; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

# a/b with 2 decimals, "-" if either side is missing/zero.
ratio() {
  awk -v a="${1:-}" -v b="${2:-}" 'BEGIN {
    num = "^[0-9]+([.][0-9]+)?$"
    if (a !~ num || b !~ num || b + 0 == 0) { print "-"; exit }
    printf "%.2f", a / b }'
}
# PASS if a <= f*b, FAIL otherwise, n/a if something is missing.
le_check() {
  awk -v a="${1:-}" -v f="$2" -v b="${3:-}" 'BEGIN {
    num = "^[0-9]+([.][0-9]+)?$"
    if (a !~ num || b !~ num) { print "n/a"; exit }
    print (a + 0 <= f * b) ? "PASS" : "FAIL" }'
}
mib() { awk -v b="${1:-}" 'BEGIN { if (b == "" || b == "-") print "-"; else printf "%.1f", b / 1048576 }'; }

du_bytes() { if [[ -e "$1" ]]; then du -sb "$1" | cut -f1; else echo 0; fi; }

# Flush dirty pages and (if allowed) drop the page cache so each step starts
# equally cold. Failure (e.g. unprivileged container) is ignored: then all
# tools simply run with a warm cache.
CACHE_MODE="warm"
drop_caches() {
  sync
  if [[ "$BENCH_DROP_CACHES" == 1 ]] && { echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null; then
    CACHE_MODE="cold"
  else
    CACHE_MODE="warm"
  fi
}

# timed KEY LOGFILE CMD...  -> fills SEC[KEY], RSS[KEY] (KiB), RC[KEY]
# Wall time is measured with date +%s%N around /usr/bin/time -v, which supplies
# the peak RSS (max over the process and its waited-for children).
timed() {
  local key="$1" logf="$2"; shift 2
  local tf="$logf.time" t0 t1 rc=0
  drop_caches
  t0=$(date +%s%N)
  /usr/bin/time -v -o "$tf" "$@" </dev/null >"$logf" 2>&1 || rc=$?
  t1=$(date +%s%N)
  SEC[$key]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
  RSS[$key]=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$tf")
  RC[$key]=$rc
  if [[ $rc -ne 0 ]]; then
    log "  $key FAILED (exit $rc), last lines of $logf:"
    tail -n 5 "$logf" | sed 's/^/      /' >&2
  else
    log "  $key: ${SEC[$key]} s, peak RSS $(( ${RSS[$key]:-0} / 1024 )) MiB"
  fi
  return 0
}

# --------------------------------------------------------------------------
# Setup: packages, lifeboat binary, disk space
# --------------------------------------------------------------------------
install_packages() {
  local missing=()
  have restic || missing+=(restic)
  have borg   || missing+=(borgbackup)
  have zstd   || missing+=(zstd)
  have openssl || missing+=(openssl)
  [[ -x /usr/bin/time ]] || missing+=(time)
  if ((${#missing[@]})); then
    log "installing missing packages: ${missing[*]}"
    [[ $EUID -eq 0 ]] || die "need root to apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic borgbackup zstd time openssl >/dev/null
  fi
}

# Drop tools from BENCH_TOOLS that cannot run; builds lifeboat if needed.
resolve_tools() {
  local t out=()
  for t in $BENCH_TOOLS; do
    case "$t" in
      lifeboat)
        if [[ "$BENCH_BUILD" == always || ! -x "$LIFEBOAT_BIN" ]]; then
          if have cargo; then
            log "building lifeboat: cargo build --release -p lifeboat (log: $BENCH_DIR/lifeboat-build.log)"
            if ! (cd "$WORKSPACE" && cargo build --release -p lifeboat) >"$BENCH_DIR/lifeboat-build.log" 2>&1; then
              log "SKIP lifeboat: cargo build failed, see $BENCH_DIR/lifeboat-build.log"
              tail -n 5 "$BENCH_DIR/lifeboat-build.log" | sed 's/^/      /' >&2
            fi
          else
            log "SKIP lifeboat: cargo not found"
          fi
        fi
        if [[ -x "$LIFEBOAT_BIN" ]]; then out+=(lifeboat)
        else log "SKIP lifeboat: no binary at $LIFEBOAT_BIN"; fi ;;
      restic) if have restic; then out+=(restic); else log "SKIP restic: not installed"; fi ;;
      borg)   if have borg;   then out+=(borg);   else log "SKIP borg: not installed"; fi ;;
      *) die "unknown tool '$t' in BENCH_TOOLS (allowed: lifeboat restic borg)" ;;
    esac
  done
  TOOLS=("${out[@]}")
  ((${#TOOLS[@]})) || die "no tool left to benchmark"
}

tool_version() {
  case "$1" in
    lifeboat) "$LIFEBOAT_BIN" --version 2>/dev/null | head -n1 || echo "lifeboat (unknown version)" ;;
    restic)   restic version | head -n1 ;;
    borg)     borg --version ;;
  esac
}

check_disk() {
  # dataset + 3 repos (<= dataset) + one restore/cp copy at a time, with slack.
  local need_mb=$(( BENCH_SIZE_MB * 4 + 1024 )) avail_mb
  [[ -f "$DATA_MARKER" ]] && need_mb=$(( BENCH_SIZE_MB * 3 + 1024 ))
  avail_mb=$(df -Pm "$BENCH_DIR" | awk 'NR == 2 { print $4 }')
  log "disk: ${avail_mb} MB free in $BENCH_DIR, need about ${need_mb} MB"
  (( avail_mb >= need_mb )) || die "not enough free disk space in $BENCH_DIR"
}

# --------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------
# Deterministic selection: all regular files of /usr/share, then /usr/lib, each
# in byte-wise sorted path order; take files until the total reaches
# BENCH_SIZE_MB * 10^6 bytes. Hard links are copied as independent files.
generate_dataset() {
  if [[ -f "$DATA_MARKER" ]] && grep -qx "size_mb=$BENCH_SIZE_MB" "$DATA_MARKER"; then
    log "reusing dataset $DATA ($(grep '^files=' "$DATA_MARKER"))"
    return
  fi
  log "generating dataset of >= $BENCH_SIZE_MB MB in $DATA"
  rm -rf "$DATA" "$DATA_MARKER" "$MUT_LIST" "$MUT_PRISTINE" "$MUT_MARKER"
  mkdir -p "$DATA"
  local target=$(( BENCH_SIZE_MB * 1000000 )) list="$BENCH_DIR/dataset.list" src
  for src in /usr/share /usr/lib; do
    find "$src" -xdev -type f -printf '%s\t%P\n' | sort -t $'\t' -k2 \
      | awk -F '\t' -v p="${src#/}/" '{ print $1 "\t" p $2 }'
  done | awk -F '\t' -v target="$target" '
      $2 ~ /[\\]/ { next }                       # skip exotic names
      total >= target { next }                  # (no exit: avoid SIGPIPE upstream)
      { total += $1; print $2 }
      END { if (total < target) print "WARNING: only " total " bytes available" > "/dev/stderr" }
    ' > "$list"
  tar -C / --no-recursion --hard-dereference --verbatim-files-from -cf - -T "$list" \
    | tar -C "$DATA" -xpf -

  # Mutation set: every 100th regular file of the dataset (sorted), saved
  # pristine so the mutation can be undone byte- and mtime-exactly.
  (cd "$DATA" && find . -type f | sed 's|^\./||' | sort | awk 'NR % 100 == 0') > "$MUT_LIST"
  tar -C "$DATA" --verbatim-files-from -cf "$MUT_PRISTINE" -T "$MUT_LIST"
  # 1 MiB of deterministic, incompressible bytes (AES-CTR keystream of a fixed key).
  openssl enc -aes-128-ctr -nosalt -K 000102030405060708090a0b0c0d0e0f \
    -iv 00000000000000000000000000000000 -in <(head -c 1048576 /dev/zero) -out "$MUT_BLOCK"

  local files bytes
  files=$(find "$DATA" -type f | wc -l)
  bytes=$(du -sb "$DATA" | cut -f1)
  printf 'size_mb=%s\nfiles=%s\nbytes=%s\nmutated_files=%s\n' \
    "$BENCH_SIZE_MB" "$files" "$bytes" "$(wc -l < "$MUT_LIST")" > "$DATA_MARKER"
  log "dataset ready: $files files, $bytes bytes"
}

# Overwrite a 4 KiB block in the middle of every file in MUT_LIST (files
# smaller than 8 KiB grow to size/2 + 4 KiB). Block k of MUT_BLOCK is used for
# the k-th file, so the change is deterministic and not deduplicable.
mutate_dataset() {
  log "mutating $(wc -l < "$MUT_LIST") files (every 100th file, 4 KiB in the middle)"
  touch "$MUT_MARKER"
  local k=0 f size
  while IFS= read -r f; do
    size=$(stat -c %s "$DATA/$f")
    dd if="$MUT_BLOCK" of="$DATA/$f" bs=4096 count=1 skip=$(( k % 256 )) \
       seek=$(( size / 2 )) oflag=seek_bytes conv=notrunc status=none
    k=$(( k + 1 ))
  done < "$MUT_LIST"
}

# Put the original bytes and mtimes back (no-op if not mutated).
restore_pristine() {
  [[ -e "$MUT_MARKER" ]] || return 0
  log "restoring pristine copies of the mutated files"
  tar -C "$DATA" -xpf "$MUT_PRISTINE"
  rm -f "$MUT_MARKER"
}

# --------------------------------------------------------------------------
# Tool adapters: init (untimed), backup, restore, check
# --------------------------------------------------------------------------
# Per-run state directories keep caches fresh and separate for every tool.
setup_tool_env() {
  local run_dir="$1"
  export RESTIC_REPOSITORY="$run_dir/repo-restic"
  export RESTIC_CACHE_DIR="$run_dir/cache-restic"
  export BORG_REPO="$run_dir/repo-borg"
  export BORG_BASE_DIR="$run_dir/cache-borg"      # borg cache, config and security dirs
  export LIFEBOAT_REPO="$run_dir/repo-lifeboat"
  LIFEBOAT_CACHE="$run_dir/cache-lifeboat"
}

tool_repo() {
  case "$1" in
    lifeboat) echo "$LIFEBOAT_REPO" ;;
    restic)   echo "$RESTIC_REPOSITORY" ;;
    borg)     echo "$BORG_REPO" ;;
  esac
}
tool_cache() {
  case "$1" in
    lifeboat) echo "$LIFEBOAT_CACHE" ;;
    restic)   echo "$RESTIC_CACHE_DIR" ;;
    borg)     echo "$BORG_BASE_DIR" ;;
  esac
}

lifeboat() { env XDG_CACHE_HOME="$LIFEBOAT_CACHE" "$LIFEBOAT_BIN" "$@"; }

tool_init() {   # $1 tool, $2 logfile
  case "$1" in
    lifeboat) lifeboat init ;;
    # restic 0.14 defaults to repo format 1 (no compression); v2 gives
    # compression "auto", which is the default of every newer restic.
    restic)   restic init --repository-version 2 ;;
    borg)     borg init --encryption repokey-blake2 ;;
  esac </dev/null >"$2" 2>&1
}

# Commands are printed as argv arrays so `timed` can wrap them with /usr/bin/time.
backup_cmd() {  # $1 tool, $2 step name (archive name for borg)
  case "$1" in
    lifeboat) CMD=(env XDG_CACHE_HOME="$LIFEBOAT_CACHE" "$LIFEBOAT_BIN" backup "$DATA") ;;
    restic)   CMD=(restic backup --compression auto "$DATA") ;;
    borg)     CMD=(borg create --stats --compression zstd,3 "::$2" "$DATA") ;;
  esac
}
restore_cmd() { # $1 tool, $2 target dir
  case "$1" in
    lifeboat) CMD=(env XDG_CACHE_HOME="$LIFEBOAT_CACHE" "$LIFEBOAT_BIN" restore latest --target "$2") ;;
    restic)   CMD=(restic restore latest --target "$2") ;;
    borg)     CMD=(env -C "$2" borg extract ::backup3) ;;   # borg extracts into cwd
  esac
}
check_cmd() {
  case "$1" in
    lifeboat) CMD=(env XDG_CACHE_HOME="$LIFEBOAT_CACHE" "$LIFEBOAT_BIN" check --read-data) ;;
    restic)   CMD=(restic check --read-data) ;;
    borg)     CMD=(borg check --verify-data) ;;
  esac
}
# Where the data ends up below a restore target.
restored_data_path() {
  case "$1" in
    borg) echo "$2/${DATA#/}" ;;       # borg strips the leading slash
    *)    echo "$2$DATA" ;;            # restic/lifeboat: target/abs/path
  esac
}

# --------------------------------------------------------------------------
# One full comparison run
# --------------------------------------------------------------------------
run_references() {
  local run_dir="$1" parent base
  parent=$(dirname "$DATA"); base=$(basename "$DATA")
  log "reference: tar | zstd -1 -T2"
  timed ref.tarzstd "$run_dir/log/ref-tarzstd.log" \
    bash -c 'set -o pipefail; tar -C "$1" -cf - "$2" | zstd -q -1 -T2 > /dev/null' _ "$parent" "$base"
  log "reference: cp -a"
  rm -rf "$run_dir/cp-copy"
  timed ref.cp "$run_dir/log/ref-cp.log" cp -a "$DATA" "$run_dir/cp-copy"
  drop_caches   # include the write-back of the copy before deleting it
  rm -rf "$run_dir/cp-copy"
}

run_once() {
  local run="$1" run_dir="$BENCH_DIR/run-$1" t step target
  log "=== run $run of $BENCH_RUNS ==="
  SEC=() RSS=() RC=() REPO1=() REPOF=() CACHEF=() VERIFY=()
  restore_pristine
  rm -rf "$run_dir"; mkdir -p "$run_dir/log"
  setup_tool_env "$run_dir"

  # Warm-up pass so the very first timed step isn't special if caches can't be dropped.
  tar -C "$(dirname "$DATA")" -cf - "$(basename "$DATA")" > /dev/null

  if [[ "$BENCH_REFS" == 1 ]]; then run_references "$run_dir"; fi

  for t in "${TOOLS[@]}"; do
    mkdir -p "$(tool_cache "$t")"
    tool_init "$t" "$run_dir/log/$t-init.log" || die "$t init failed, see $run_dir/log/$t-init.log"
  done

  # Steps are interleaved per step (all tools do step 1, then step 2, ...)
  # so the mutation between step 2 and 3 happens exactly once.
  for step in backup1 backup2 backup3; do
    if [[ $step == backup3 ]]; then mutate_dataset; fi
    log "step $step"
    for t in "${TOOLS[@]}"; do
      backup_cmd "$t" "$step"
      timed "$t.$step" "$run_dir/log/$t-$step.log" "${CMD[@]}"
      if [[ $step == backup1 ]]; then REPO1[$t]=$(du_bytes "$(tool_repo "$t")"); fi
    done
  done
  for t in "${TOOLS[@]}"; do
    REPOF[$t]=$(du_bytes "$(tool_repo "$t")")
    CACHEF[$t]=$(du_bytes "$(tool_cache "$t")")
  done

  log "step restore"
  for t in "${TOOLS[@]}"; do
    target="$run_dir/restore-$t"
    rm -rf "$target"; mkdir -p "$target"           # fresh, empty target
    restore_cmd "$t" "$target"
    timed "$t.restore" "$run_dir/log/$t-restore.log" "${CMD[@]}"
    if [[ "$BENCH_VERIFY" == 1 ]]; then
      if diff -r --no-dereference "$DATA" "$(restored_data_path "$t" "$target")" \
           > "$run_dir/log/$t-verify.log" 2>&1; then VERIFY[$t]=ok
      else VERIFY[$t]=DIFF; log "  $t restore differs from data, see $run_dir/log/$t-verify.log"; fi
    fi
    drop_caches                                    # flush its write-back before the next tool
    rm -rf "$target"
  done

  log "step check"
  for t in "${TOOLS[@]}"; do
    check_cmd "$t"
    timed "$t.check" "$run_dir/log/$t-check.log" "${CMD[@]}"
  done

  restore_pristine
  report_run "$run"
  json_run "$run" > "$JSON_PARTS/run-$run.json"
}

# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------
in_tools() { local x; for x in "${TOOLS[@]}"; do [[ $x == "$1" ]] && return 0; done; return 1; }

# Value for a tool/step: seconds, "ERR" on failure, "-" if tool not run.
val() {
  local k="$1.$2"
  in_tools "$1" || { echo "-"; return; }
  [[ -n "${RC[$k]:-}" ]] || { echo "-"; return; }
  [[ "${RC[$k]}" == 0 ]] || { echo "ERR"; return; }
  echo "${SEC[$k]}"
}
peak_rss_kib() {  # max over the five steps
  local s m=0
  in_tools "$1" || { echo "-"; return; }
  for s in "${STEPS[@]}"; do (( ${RSS[$1.$s]:-0} > m )) && m=${RSS[$1.$s]}; done
  echo "$m"
}
kib_to_mib() { awk -v k="$1" 'BEGIN { if (k == "-") print "-"; else printf "%.1f", k / 1024 }'; }
repo_val() {     # $1 tool, $2 name of the assoc array (REPO1/REPOF/CACHEF)
  local -n arr="$2"
  if in_tools "$1"; then echo "${arr[$1]:-}"; else echo "-"; fi
}

row() { printf '%-28s %10s %10s %9s %10s %9s\n' "$@"; }

report_run() {
  local run="$1" s l r b files
  files=$(sed -n 's/^files=//p' "$DATA_MARKER")
  echo
  echo "=== lifeboat benchmark, run $run/$BENCH_RUNS: $(sed -n 's/^bytes=//p' "$DATA_MARKER") bytes, $files files, $(nproc) cores, page cache: $CACHE_MODE ==="
  row "step (seconds)" lifeboat restic "lb/restic" borg "lb/borg"
  row "----------------------------" ---------- ---------- --------- ---------- ---------
  for s in "${STEPS[@]}"; do
    l=$(val lifeboat "$s"); r=$(val restic "$s"); b=$(val borg "$s")
    row "${STEP_LABEL[$s]}" "$l" "$r" "$(ratio "$l" "$r")" "$b" "$(ratio "$l" "$b")"
  done
  for s in "${STEPS[@]}"; do
    l=$(in_tools lifeboat && kib_to_mib "${RSS[lifeboat.$s]:--}" || echo -)
    r=$(in_tools restic && kib_to_mib "${RSS[restic.$s]:--}" || echo -)
    b=$(in_tools borg && kib_to_mib "${RSS[borg.$s]:--}" || echo -)
    row "RSS MiB: $s" "$l" "$r" "$(ratio "$l" "$r")" "$b" "$(ratio "$l" "$b")"
  done
  l=$(kib_to_mib "$(peak_rss_kib lifeboat)"); r=$(kib_to_mib "$(peak_rss_kib restic)"); b=$(kib_to_mib "$(peak_rss_kib borg)")
  row "peak RSS MiB (all steps)" "$l" "$r" "$(ratio "$l" "$r")" "$b" "$(ratio "$l" "$b")"
  l=$(mib "$(repo_val lifeboat REPO1)"); r=$(mib "$(repo_val restic REPO1)"); b=$(mib "$(repo_val borg REPO1)")
  row "repo MiB after backup 1" "$l" "$r" "$(ratio "$l" "$r")" "$b" "$(ratio "$l" "$b")"
  l=$(mib "$(repo_val lifeboat REPOF)"); r=$(mib "$(repo_val restic REPOF)"); b=$(mib "$(repo_val borg REPOF)")
  row "repo MiB after backup 3" "$l" "$r" "$(ratio "$l" "$r")" "$b" "$(ratio "$l" "$b")"
  l=$(mib "$(repo_val lifeboat CACHEF)"); r=$(mib "$(repo_val restic CACHEF)"); b=$(mib "$(repo_val borg CACHEF)")
  row "local cache MiB" "$l" "$r" "$(ratio "$l" "$r")" "$b" "$(ratio "$l" "$b")"
  if [[ "$BENCH_VERIFY" == 1 ]]; then
    row "restore verified (diff -r)" "${VERIFY[lifeboat]:--}" "${VERIFY[restic]:--}" "" "${VERIFY[borg]:--}" ""
  fi
  if [[ "$BENCH_REFS" == 1 ]]; then
    echo
    printf '%-28s %10s s  (peak RSS %s MiB)\n' "ref: tar | zstd -1 -T2" "${SEC[ref.tarzstd]}" "$(kib_to_mib "${RSS[ref.tarzstd]}")"
    printf '%-28s %10s s  (peak RSS %s MiB)\n' "ref: cp -a" "${SEC[ref.cp]}" "$(kib_to_mib "${RSS[ref.cp]}")"
  fi
  echo
  echo "Targets (lifeboat):"
  compute_targets "$files"
  local i
  for i in "${!TARGET_NAMES[@]}"; do
    printf '  %-6s %s\n' "${TARGET_RESULTS[$i]}" "${TARGET_NAMES[$i]}"
  done
  echo
}

# Fills TARGET_NAMES / TARGET_RESULTS for the current run.
compute_targets() {
  local files="$1" lb1 lb2 lim2
  lb1=$(val lifeboat backup1); lb2=$(val lifeboat backup2)
  lim2=$(awk -v n="$files" 'BEGIN { printf "%.2f", n / 100000 }')
  TARGET_NAMES=(
    "first backup <= 0.5 x restic ($lb1 vs $(val restic backup1) s)"
    "first backup <= 1.25 x tar|zstd ($lb1 vs ${SEC[ref.tarzstd]:--} s)"
    "unchanged re-run <= 1 s per 100k files ($lb2 s for $files files, limit $lim2 s)"
    "restore <= 0.5 x restic ($(val lifeboat restore) vs $(val restic restore) s)"
    "full check <= 0.5 x restic ($(val lifeboat check) vs $(val restic check) s)"
    "peak RSS <= 0.25 x restic ($(kib_to_mib "$(peak_rss_kib lifeboat)") vs $(kib_to_mib "$(peak_rss_kib restic)") MiB)"
    "repo size <= 1.05 x restic ($(mib "$(repo_val lifeboat REPOF)") vs $(mib "$(repo_val restic REPOF)") MiB)"
  )
  local lbpk rspk
  lbpk=$(peak_rss_kib lifeboat); rspk=$(peak_rss_kib restic)
  TARGET_RESULTS=(
    "$(le_check "$lb1" 0.5 "$(val restic backup1)")"
    "$(le_check "$lb1" 1.25 "${SEC[ref.tarzstd]:--}")"
    "$(le_check "$lb2" 1 "$lim2")"
    "$(le_check "$(val lifeboat restore)" 0.5 "$(val restic restore)")"
    "$(le_check "$(val lifeboat check)" 0.5 "$(val restic check)")"
    "$(le_check "$lbpk" 0.25 "$rspk")"
    "$(le_check "$(repo_val lifeboat REPOF)" 1.05 "$(repo_val restic REPOF)")"
  )
  # A failed lifeboat step is a failed target, not "n/a".
  local i
  for i in "${!TARGET_RESULTS[@]}"; do
    [[ "${TARGET_NAMES[$i]}" == *ERR* ]] && TARGET_RESULTS[$i]=FAIL
  done
  return 0
}

# --------------------------------------------------------------------------
# JSON output (hand-rolled; all values are numbers or simple strings)
# --------------------------------------------------------------------------
jnum() { [[ "${1:-}" =~ ^-?[0-9]+(\.[0-9]+)?$ ]] && echo "$1" || echo null; }
jstr() { local s="${1//\\/\\\\}"; s="${s//\"/\\\"}"; printf '"%s"' "$s"; }

json_run() {
  local run="$1" t s sep1="" sep2 i
  printf '    {"run": %s, "page_cache": %s,\n' "$run" "$(jstr "$CACHE_MODE")"
  printf '     "reference": {"tar_zstd_seconds": %s, "tar_zstd_max_rss_kib": %s, "cp_a_seconds": %s, "cp_a_max_rss_kib": %s},\n' \
    "$(jnum "${SEC[ref.tarzstd]:-}")" "$(jnum "${RSS[ref.tarzstd]:-}")" "$(jnum "${SEC[ref.cp]:-}")" "$(jnum "${RSS[ref.cp]:-}")"
  printf '     "tools": {'
  for t in "${TOOLS[@]}"; do
    printf '%s\n       %s: {' "$sep1" "$(jstr "$t")"; sep1=","; sep2=""
    for s in "${STEPS[@]}"; do
      printf '%s%s: {"seconds": %s, "max_rss_kib": %s, "exit": %s}' "$sep2" "$(jstr "$s")" \
        "$(jnum "${SEC[$t.$s]:-}")" "$(jnum "${RSS[$t.$s]:-}")" "$(jnum "${RC[$t.$s]:-}")"
      sep2=", "
    done
    printf ', "peak_rss_kib": %s, "repo_bytes_after_backup1": %s, "repo_bytes": %s, "cache_bytes": %s, "restore_verified": %s}' \
      "$(jnum "$(peak_rss_kib "$t")")" "$(jnum "${REPO1[$t]:-}")" "$(jnum "${REPOF[$t]:-}")" "$(jnum "${CACHEF[$t]:-}")" \
      "$(if [[ -n "${VERIFY[$t]:-}" ]]; then jstr "${VERIFY[$t]}"; else echo null; fi)"
  done
  printf '},\n     "targets": ['
  sep1=""
  for i in "${!TARGET_NAMES[@]}"; do
    printf '%s\n       {"target": %s, "result": %s}' "$sep1" "$(jstr "${TARGET_NAMES[$i]}")" "$(jstr "${TARGET_RESULTS[$i]}")"
    sep1=","
  done
  printf ']}'
}

write_json() {
  local out="$1" t sep=""
  {
    printf '{\n  "timestamp": %s,\n' "$(jstr "$TS")"
    printf '  "machine": {"cores": %s, "mem_kib": %s, "cpu": %s, "kernel": %s, "os": %s},\n' \
      "$(nproc)" "$(awk '/MemTotal/ { print $2 }' /proc/meminfo)" \
      "$(jstr "$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n1)")" \
      "$(jstr "$(uname -r)")" "$(jstr "$(. /etc/os-release && echo "$PRETTY_NAME")")"
    printf '  "dataset": {"path": %s, "size_mb_target": %s, "bytes": %s, "files": %s, "mutated_files": %s},\n' \
      "$(jstr "$DATA")" "$BENCH_SIZE_MB" "$(sed -n 's/^bytes=//p' "$DATA_MARKER")" \
      "$(sed -n 's/^files=//p' "$DATA_MARKER")" "$(sed -n 's/^mutated_files=//p' "$DATA_MARKER")"
    printf '  "versions": {'
    for t in "${TOOLS[@]}"; do printf '%s%s: %s' "$sep" "$(jstr "$t")" "$(jstr "$(tool_version "$t")")"; sep=", "; done
    printf '},\n  "settings": {"restic": "repo v2, --compression auto", "borg": "repokey-blake2, --compression zstd,3", "drop_caches": %s},\n' \
      "$(jnum "$BENCH_DROP_CACHES")"
    printf '  "runs": [\n'
    local f first=1
    for (( f = 1; f <= BENCH_RUNS; f++ )); do
      (( first )) || printf ',\n'
      cat "$JSON_PARTS/run-$f.json"; first=0
    done
    printf '\n  ]\n}\n'
  } > "$out"
}

# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------
main() {
  while (($#)); do
    case "$1" in
      --runs) BENCH_RUNS="${2:?--runs needs a number}"; shift 2 ;;
      --runs=*) BENCH_RUNS="${1#--runs=}"; shift ;;
      -h|--help) usage; exit 0 ;;
      *) die "unknown argument '$1' (try --help)" ;;
    esac
  done
  [[ "$BENCH_RUNS" =~ ^[1-9][0-9]*$ ]] || die "--runs / BENCH_RUNS must be a positive integer"
  [[ "$BENCH_SIZE_MB" =~ ^[1-9][0-9]*$ ]] || die "BENCH_SIZE_MB must be a positive integer"

  mkdir -p "$BENCH_DIR"
  exec 9>"$BENCH_DIR/.lock"
  flock -n 9 || die "another bench run holds $BENCH_DIR/.lock"

  install_packages
  resolve_tools
  check_disk
  generate_dataset

  TS=$(date +%Y%m%d-%H%M%S)
  JSON_PARTS="$BENCH_DIR/.json-$TS"
  mkdir -p "$JSON_PARTS"
  log "tools: ${TOOLS[*]}; runs: $BENCH_RUNS"
  for t in "${TOOLS[@]}"; do log "  $(tool_version "$t")"; done

  rm -rf "$BENCH_DIR"/run-*          # repos/logs of a previous invocation
  local run
  for (( run = 1; run <= BENCH_RUNS; run++ )); do
    run_once "$run"
  done

  local out="$BENCH_DIR/results-$TS.json"
  write_json "$out"
  rm -rf "$JSON_PARTS"
  log "results written to $out (repos/logs of the last run kept in $BENCH_DIR/run-*)"
}

main "$@"
