#!/usr/bin/env bash
# bench/cluster.sh: the cluster scenario. Starts three nats-server and three
# fanoutd on this machine (deploy/local-cluster.sh) and, in one run, measures
# deliveries per second on one node (node3) with fanout-bench's fanout load:
#   cross:      published on node1, delivered by node3 (through NATS)
#   same-node:  published on node3, delivered by node3 (through NATS)
#   standalone: a fanoutd without --nats, started by fanout-bench, same load
# so the three compare as ratios on this machine. Nothing is pinned: six
# servers and the client share the cores.
#
# Usage: bench/cluster.sh [FANOUT-BENCH FLAGS...]
#   default load: --subscribers=2000 --rate=200 (one topic: 400,000 deliveries/s offered)
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
bench="$root/build/release/bench/fanout-bench"
fanoutd="$root/build/release/service/fanoutd"
[[ -x $bench && -x $fanoutd ]] || { echo "cluster.sh: build first (make build)" >&2; exit 2; }
load=(--subscribers=2000 --rate=200 "$@")
common=(--scenario=fanout --server_cpu=-1 --client_cpu=-1 --timeout=300s)

out=$(mktemp "${TMPDIR:-/tmp}/fanout-bench-cluster.XXXXXX")
FANOUT_PORT_OFFSET=${FANOUT_PORT_OFFSET:-0} bash "$root/deploy/local-cluster.sh" "$fanoutd" > "$out" &
cluster=$!
trap 'kill -INT $cluster 2>/dev/null; wait $cluster 2>/dev/null; rm -f "$out"' EXIT
for _ in $(seq 1 600); do grep -q "logs in" "$out" && break; sleep 0.1; done
grep -q "logs in" "$out" || { echo "cluster.sh: the cluster did not start" >&2; cat "$out" >&2; exit 1; }
cat "$out" >&2

field() { grep "^  node$1 " "$out" | sed -E "s/.*$2 ([^ ]+).*/\1/"; }
grpc1=$(field 1 gRPC); grpc3=$(field 3 gRPC); pid3=$(field 3 pid)
ws3=$(field 3 WebSocket | sed -E 's#ws://([^/]+)/ws#\1#')

"$bench" "${common[@]}" --label=cluster-cross --grpc="$grpc1" --ws="$ws3" --server_pid="$pid3" "${load[@]}"
"$bench" "${common[@]}" --label=cluster-same-node --grpc="$grpc3" --ws="$ws3" --server_pid="$pid3" "${load[@]}"
"$bench" "${common[@]}" --label=standalone --fanoutd="$fanoutd" "${load[@]}"
