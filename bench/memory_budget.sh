#!/usr/bin/env bash
# bench/memory_budget.sh: fails when an idle subscribed connection costs the
# node more than its memory budget (issue 12: 2,048 bytes of RSS each at
# 10,000 connections, each on its own topic). RSS grows by whole pages and
# heaps, so this is a budget with a margin, not a benchmark: the figure has
# been 1,850-1,900 bytes since the budget was met, and a change that adds a
# few hundred bytes to every connection or topic shows up here at once.
#
# Usage: bench/memory_budget.sh FANOUT_BENCH FANOUTD [BUDGET_BYTES]
set -euo pipefail
bench="$1"
fanoutd="$2"
budget="${3:-2048}"
work="$(mktemp -d "${TMPDIR:-/tmp}/fanout-memory-budget.XXXXXX")"
trap 'rm -rf "$work"' EXIT
pin=()
if [[ "$(nproc)" -lt 2 ]]; then pin=(--server_cpu=-1 --client_cpu=-1); fi
if ! "$bench" --scenario=idle --subscribers=10000 --fanoutd="$fanoutd" --label=memory-budget \
    --results="$work/results.jsonl" --server_log="$work/fanoutd.log" --timeout=120s "${pin[@]}" \
    >"$work/idle.json" 2>"$work/idle.err"; then
  echo "memory_budget: the idle scenario failed" >&2
  cat "$work/idle.err" >&2
  exit 1
fi
/usr/bin/python3 - "$work/idle.json" "$budget" <<'PY'
import json, sys
result = None
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("{"):
        result = json.loads(line)
budget = float(sys.argv[2])
if result is None or not result.get("ok"):
    sys.exit("memory_budget: no ok result from the idle scenario")
f = result["figures"]
per = f["bytes_per_connection_at_max"]
print(f"memory_budget: {per:,.0f} B of RSS per idle subscribed connection at "
      f"{f['connections_max']:,} (slope {f['slope_bytes_per_connection']:,.0f} B); budget {budget:,.0f} B")
if f["connections_max"] < 10000:
    sys.exit("memory_budget: fewer than 10,000 connections opened")
if per > budget:
    sys.exit(f"memory_budget: OVER BUDGET by {per - budget:,.0f} B per connection "
             "(docs/performance.md, 'Memory per connection', says where the bytes go)")
PY
