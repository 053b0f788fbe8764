#!/usr/bin/env bash
# bench/smoke.sh: a tiny run of every fanout-bench scenario, seconds each, so
# the tool never rots. No thresholds: it fails only when the tool fails (which
# includes a scenario that delivered nothing or opened no connection).
#
# Usage: bench/smoke.sh [FANOUT_BENCH [FANOUTD]]
#   defaults: the first of build/{ci,release,dev}/bench/fanout-bench and the
#   fanoutd next to it. ctest (bench.smoke) passes both.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
bench="${1:-}"
if [[ -z "$bench" ]]; then
  for dir in ci release dev; do
    if [[ -x "$root/build/$dir/bench/fanout-bench" ]]; then bench="$root/build/$dir/bench/fanout-bench"; break; fi
  done
fi
[[ -x "$bench" ]] || { echo "smoke.sh: fanout-bench not found; pass its path" >&2; exit 2; }
fanoutd="${2:-$(dirname "$bench")/../service/fanoutd}"
[[ -x "$fanoutd" ]] || { echo "smoke.sh: fanoutd not found at $fanoutd; pass its path" >&2; exit 2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/fanout-bench-smoke.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# Pin only where there are two cores to pin to.
pin=()
if [[ "$(nproc)" -lt 2 ]]; then pin=(--server_cpu=-1 --client_cpu=-1); fi
common=(--fanoutd="$fanoutd" --results="$work/results.jsonl" --label=smoke
        --duration=1s --warmup=200ms --drain_timeout=5s --timeout=120s "${pin[@]}")

run() {
  local name="$1"; shift
  local start=$SECONDS
  if ! "$bench" --scenario="$name" "${common[@]}" --server_log="$work/$name.log" "$@" \
      >"$work/$name.json" 2>"$work/$name.err"; then
    echo "smoke: $name FAILED" >&2
    cat "$work/$name.err" >&2
    [[ -s "$work/$name.log" ]] && { echo "--- fanoutd log:" >&2; tail -20 "$work/$name.log" >&2; }
    exit 1
  fi
  grep -q '"ok":true' "$work/$name.json" || { echo "smoke: $name printed no ok result" >&2; exit 1; }
  # The last line of the tool's summary block.
  echo "smoke: $name ok ($((SECONDS - start)) s): $(grep '^  ' "$work/$name.err" | tail -1 | cut -c3-200)"
}

run fanout      --subscribers=50
run many-topics --subscribers=100 --rate=200
run idle        --subscribers=200 --idle_step=100
run connect     --subscribers=500
run publish     --publish_concurrency=8
run slow        --subscribers=100
run large       --subscribers=20 --rate=10
run recovery    --subscribers=200 --missed=20
run echo        --subscribers=50
# Everything an outside party can do at once, checking nothing accepted is
# lost (docs/reliability.md has the 10-minute run).
run soak        --subscribers=100 --duration=20s --timeout=240s
echo "smoke: all scenarios ran"
