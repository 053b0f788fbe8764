#!/usr/bin/env bash
# Builds the `fuzz` preset and runs every libFuzzer target for SECONDS each,
# two at a time (CI has 2 cores), each on a fresh copy of its seed corpus in
# build/fuzz/corpus/<target> (the committed corpus is never written to).
# Fails when any target finds a crash, a leak, a timeout or runs out of
# memory, and prints the path of the input that did it.
#
#   tests/fuzz/run.sh 60          every target, a minute each
#   tests/fuzz/run.sh 10 jwt      one target
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds="${1:?usage: tests/fuzz/run.sh SECONDS [TARGET...]}"
shift
# Target and -max_len: room for what each input can be, a little past every
# limit it must enforce.
declare -A max_len=(
  [control_message]=4096  # a control message of a few fields and a payload
  [upgrade_request]=20000 # past Beast's 16 KiB header limit
  [jwt]=4096              # tokens and JWKS documents of a few keys
  [topic_pattern]=300     # three parts of up to 64 bytes, and more
  [frame_parser]=9000     # past the fuzzer's 4 KiB message limit
)
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  targets=(control_message upgrade_request jwt topic_pattern frame_parser)
fi

cmake --preset fuzz >/dev/null
cmake --build --preset fuzz

out=build/fuzz
rm -rf "$out/corpus" "$out/artifacts" "$out/logs"
mkdir -p "$out/corpus" "$out/artifacts" "$out/logs"

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"

run_one() {
  local t="$1"
  cp -r "tests/fuzz/corpus/$t" "$out/corpus/$t"
  mkdir -p "$out/artifacts/$t"
  local rc=0
  "$out/tests/fuzz/${t}_fuzz" "$out/corpus/$t" -max_total_time="$seconds" \
    -max_len="${max_len[$t]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$out/artifacts/$t/" >"$out/logs/$t.log" 2>&1 || rc=$?
  echo "$rc" >"$out/logs/$t.rc"
}

running=0
for t in "${targets[@]}"; do
  [[ -n "${max_len[$t]:-}" ]] || { echo "run.sh: no target '$t'" >&2; exit 2; }
  if (( running == 2 )); then
    wait -n || true
    running=$((running - 1))
  fi
  echo "fuzz: $t for ${seconds}s"
  run_one "$t" &
  running=$((running + 1))
done
wait || true

failed=0
printf '%-16s %10s %8s %8s %8s\n' target runs exec/s cov corpus
for t in "${targets[@]}"; do
  log="$out/logs/$t.log"
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  cov=$(sed -n 's/.* cov: \([0-9]*\) .*/\1/p' <<<"$done_line")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9A-Za-z]*\) .*/\1/p' <<<"$done_line")
  printf '%-16s %10s %8s %8s %8s\n' "$t" "${runs:-?}" "${rate:-?}" "${cov:-?}" "${corp:-?}"
  rc=$(cat "$out/logs/$t.rc" 2>/dev/null || echo 1)
  if [[ "$rc" != 0 ]]; then
    failed=1
    echo "fuzz: $t FAILED (exit $rc); log: $log" >&2
    grep -E 'ERROR: |invariant broken|SUMMARY: ' "$log" | head -5 >&2 || true
    for a in "$out/artifacts/$t"/*; do
      [[ -e "$a" ]] && echo "fuzz: $t input: $a (rerun: $out/tests/fuzz/${t}_fuzz $a)" >&2
    done
  fi
done
exit "$failed"
