#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ (nightly; not part of scripts/test.sh), one at a time and
# one process each, then prints one line per target: seconds, CPU seconds, executions, executions
# per second, corpus size, crashes and slow units. Exits non-zero if any target crashed (the input lands in
# fuzz/artifacts/TARGET/).
#
#   scripts/fuzz.sh [--seconds N | --cpu-minutes M] [--sanitizer none|address] [TARGET...]
#
# Defaults: 60 seconds per target, every target, no sanitizer (the code under test forbids
# `unsafe`; `--sanitizer address` also checks the dependencies' unsafe code, at half the speed).
# Each run starts from the committed seeds (fuzz/corpus/TARGET) and the minimized crash inputs
# of fixed bugs (fuzz/regressions/TARGET), which are replayed first; what it finds is kept in the
# git-ignored fuzz/work/TARGET for the next run. `scripts/fuzz.sh --seconds 5` is the quick
# replay a CI job could run on a runner with nightly.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

SECONDS_EACH=60
CPU_SECONDS_EACH=0
SANITIZER=none
TARGETS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_EACH=$2; shift 2 ;;
    --cpu-minutes) CPU_SECONDS_EACH=$(( $2 * 60 )); SECONDS_EACH=$CPU_SECONDS_EACH; shift 2 ;;
    --sanitizer) SANITIZER=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1 (see --help)" >&2; exit 64 ;;
    *) TARGETS+=("$1"); shift ;;
  esac
done

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
if [ ${#TARGETS[@]} -eq 0 ]; then
  mapfile -t TARGETS < <(cargo +nightly fuzz list)
fi

cargo +nightly fuzz build -s "$SANITIZER"
BINARIES=$ROOT/fuzz/target/$(rustc +nightly -vV | sed -n 's/^host: //p')/release

SUMMARY=fuzz/work/summary.tsv
mkdir -p fuzz/work
printf 'target\tseconds\tcpu_seconds\texecutions\texecs_per_s\tcorpus\tcrashes\tslow_units\n' >"$SUMMARY"
failed=0
for target in "${TARGETS[@]}"; do
  work=fuzz/work/$target
  log=fuzz/work/$target.log
  mkdir -p "$work" "fuzz/artifacts/$target"
  dirs=("$work" "fuzz/corpus/$target")
  [ -d "fuzz/regressions/$target" ] && dirs+=("fuzz/regressions/$target")
  # Crashes, timeouts, out-of-memory and leaks are failures; libFuzzer also saves "slow units"
  # (over 10 s of wall time, which a busy machine can cause), counted apart.
  failures() { find "fuzz/artifacts/$target" -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | wc -l; }
  slow_units() { find "fuzz/artifacts/$target" -type f -name 'slow-unit-*' | wc -l; }
  before=$(failures)
  slow_before=$(slow_units)
  started=$(date +%s)
  # One libFuzzer run of SECONDS_EACH wall seconds; with --cpu-minutes, more runs (resuming from
  # the corpus in fuzz/work) until the processes' own CPU time (user + system, from
  # /usr/bin/time) reaches the budget, so a busy machine does not shorten the figures.
  cpu_total=0
  took=0
  execs=0
  : >"$log"
  while :; do
    set +e
    # The built target itself, not `cargo fuzz run`: cargo's freshness check (or a rebuild, when
    # a source changed since the build above) would count as fuzzing time.
    /usr/bin/time -f 'cpu_seconds %U %S' -o "$log.cpu" \
      "$BINARIES/$target" -artifact_prefix="$ROOT/fuzz/artifacts/$target/" \
      -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      "${dirs[@]}" >"$log.part" 2>&1
    status=$?
    set -e
    cat "$log.part" >>"$log"
    # libFuzzer's own count of the seconds it fuzzed (without the build); the wall clock if it
    # stopped before saying.
    part_took=$(grep -oE 'Done [0-9]+ runs in [0-9]+ second' "$log.part" | tail -1 | awk '{print $5}' || true)
    took=$(( took + ${part_took:-$(( $(date +%s) - started ))} ))
    part_execs=$(awk '$1 == "stat::number_of_executed_units:" { v = $2 } END { print v + 0 }' "$log.part")
    execs=$(( execs + part_execs ))
    cpu_total=$(awk -v t="$cpu_total" '$1 == "cpu_seconds" { t += $2 + $3 } END { printf "%d", t }' "$log.cpu")
    remaining=$(( CPU_SECONDS_EACH - cpu_total ))
    if [ "$status" -ne 0 ] || [ "$remaining" -lt 10 ]; then break; fi
    SECONDS_EACH=$remaining
  done
  if [ "$CPU_SECONDS_EACH" -gt 0 ]; then SECONDS_EACH=$CPU_SECONDS_EACH; fi
  crashes=$(( $(failures) - before ))
  slow=$(( $(slow_units) - slow_before ))
  if [ "$status" -ne 0 ] && [ "$crashes" -eq 0 ]; then
    crashes="?"  # it failed without leaving an input: the build, or libFuzzer's options
  fi
  rate=$(( execs / (took > 0 ? took : 1) ))
  corpus=$(grep -oE 'corp: [0-9]+' "$log" | tail -1 | awk '{print $2}' || true)
  printf '%-15s %5ss  cpu %5ss  %12s executions  %8s exec/s  corpus %5s  crashes %s  slow %s\n' \
    "$target" "$took" "$cpu_total" "$execs" "$rate" "${corpus:-0}" "$crashes" "$slow"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$took" "$cpu_total" "$execs" "$rate" "${corpus:-0}" "$crashes" "$slow" >>"$SUMMARY"
  if [ "$crashes" != 0 ]; then
    failed=1
    grep -m1 -A3 -E '^(==[0-9]+==|thread .* panicked)' "$log" | sed 's/^/    /' || true
    echo "    log: $log; input: fuzz/artifacts/$target/" >&2
  fi
done
exit "$failed"
