#!/usr/bin/env bash
# Coverage-guided fuzzing of every target in crates/fuzz with libFuzzer, on the stable toolchain
# (no nightly): the libFuzzer binary is built with rustc's stable sanitizer-coverage flags into
# its own target dir, then each target runs for a set time, one after another.
#
#   bash scripts/fuzz.sh [seconds-per-target] [target ...]     # default 600 s, every target
#   FUZZ_SANITIZER=address bash scripts/fuzz.sh 60 pfx         # with AddressSanitizer
#
# Per target it prints executions, time and crashes; logs and crash inputs go to
# target/fuzz-logs/<target>/ (crash-*, timeout-*, oom-* files, replayable with
# `FUZZ_TARGET=<target> target/fuzz-build/<triple>/release/fuzz <file>`), the growing corpus to
# target/fuzz-corpus/<target>/ (kept between runs; the committed seeds are crates/fuzz/corpus/).
# A crash stops a target's run; it is restarted with the time left, at most three times.
# Nothing is left running: every fuzzer runs under `timeout` and is killed on exit or Ctrl-C.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

secs=${1:-600}
shift || true
# name:max_len, in the order of crates/fuzz/src/lib.rs TARGETS.
all=(params:4096 volume_context:4096 pfx:8192 keyvault_json:8192 entra_json:4096 csi_publish:4096 emulator_http:8192)
selected=()
if [ $# -eq 0 ]; then
  selected=("${all[@]}")
else
  for want in "$@"; do
    found=
    for t in "${all[@]}"; do [ "${t%%:*}" = "$want" ] && selected+=("$t") && found=1; done
    [ -n "$found" ] || { echo "error: unknown target $want (targets: ${all[*]%%:*})" >&2; exit 2; }
  done
fi

triple=$(rustc -vV | sed -n 's/^host: //p')
build_dir="$root/target/fuzz-build"
logs="$root/target/fuzz-logs"
mkdir -p "$logs"

# Sanitizer coverage (what libFuzzer's cargo-fuzz passes, without -Zsanitizer): all stable flags.
# `--target` keeps them off build scripts and proc macros.
flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table"
flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
case "${FUZZ_SANITIZER:-none}" in
  none) ;;
  address)
    # -Zsanitizer is unstable: RUSTC_BOOTSTRAP lets the stable compiler accept it.
    export RUSTC_BOOTSTRAP=1
    flags+=" -Zsanitizer=address"
    build_dir+="-asan"
    ;;
  *) echo "error: FUZZ_SANITIZER must be none or address" >&2; exit 2 ;;
esac

echo "==> building the libFuzzer binary (target/$(basename "$build_dir"), $triple)"
RUSTFLAGS="$flags" nice -n 10 cargo build --release -p fuzz --features libfuzzer --bin fuzz \
  --target "$triple" --target-dir "$build_dir"
bin="$build_dir/$triple/release/fuzz"

child=
cleanup() {
  if [ -n "$child" ]; then
    kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

summary="$logs/summary.txt"
printf '%-16s %14s %9s %10s %8s  %s\n' target executions seconds exec/s crashes "crash inputs" | tee "$summary"
for entry in "${selected[@]}"; do
  t=${entry%%:*}
  max_len=${entry##*:}
  corpus="$root/target/fuzz-corpus/$t"
  seeds="$root/crates/fuzz/corpus/$t"
  out="$logs/$t"
  rm -rf "$out"
  mkdir -p "$corpus" "$out/tmp"
  execs=0
  start=$(date +%s)
  restarts=0
  while :; do
    left=$((secs - ($(date +%s) - start)))
    [ "$left" -ge 5 ] || break
    log="$out/run-$restarts.log"
    # TMPDIR: the csi_publish target's temp dirs, removed below.
    FUZZ_TARGET=$t TMPDIR="$out/tmp" timeout --kill-after=30 $((left + 120)) \
      nice -n 10 "$bin" -max_total_time="$left" -max_len="$max_len" -timeout=30 \
      -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$out/" \
      "$corpus" "$seeds" >"$log" 2>&1 &
    child=$!
    status=0
    wait "$child" || status=$?
    child=
    n=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    execs=$((execs + ${n:-0}))
    # 0: time used up; anything else: a crash, timeout or OOM (an artifact) or a failure.
    [ "$status" -eq 0 ] && break
    restarts=$((restarts + 1))
    if [ "$restarts" -gt 3 ]; then
      echo "   $t: stopped after $restarts failed runs (see $out/run-*.log)" >&2
      break
    fi
  done
  rm -rf "$out/tmp"
  elapsed=$(($(date +%s) - start))
  crashes=$(find "$out" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | wc -l)
  rate=$((execs / (elapsed > 0 ? elapsed : 1)))
  where=-
  [ "$crashes" -gt 0 ] && where="$out/"
  printf '%-16s %14s %9s %10s %8s  %s\n' "$t" "$execs" "$elapsed" "$rate" "$crashes" "$where" | tee -a "$summary"
done
echo "summary: $summary"
