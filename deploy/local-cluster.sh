#!/usr/bin/env bash
# A three-node fanout cluster on this machine: three nats-server with
# JetStream, routed into one NATS cluster, and three fanoutd joined through
# it (docs/operations.md, "Cluster"). Runs in the foreground; Ctrl-C (or
# SIGTERM) stops everything it started and removes its state.
#
#   deploy/local-cluster.sh [FANOUTD]       (make cluster runs it)
#
# Ports, for node i = 1..3 (add FANOUT_PORT_OFFSET to every one):
#   fanoutd gRPC 5005i, WebSocket/HTTP 808(i-1); nats-server client 422(i+1),
#   routes 622(i+1), monitoring 822(i+1).
set -euo pipefail

fanoutd=${1:-build/release/service/fanoutd}
offset=${FANOUT_PORT_OFFSET:-0}
dir=$(mktemp -d "${TMPDIR:-/tmp}/fanout-cluster.XXXXXX")
pids=()

stop() {
  trap - INT TERM EXIT
  # fanoutd first, so that the nodes drain while NATS is still there.
  for pid in "${pids[@]:3}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]:3}"; do wait "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]:0:3}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
  echo "local-cluster: stopped" >&2
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

command -v nats-server >/dev/null || { echo "local-cluster: nats-server is missing (deploy/install-deps.sh installs it)" >&2; exit 1; }
[[ -x $fanoutd ]] || { echo "local-cluster: no fanoutd at $fanoutd (make build)" >&2; exit 1; }

routes=""
for i in 1 2 3; do routes+="nats-route://127.0.0.1:$((6221 + i + offset)),"; done
urls=()
for i in 1 2 3; do
  urls+=("nats://127.0.0.1:$((4221 + i + offset))")
  cat > "$dir/n$i.conf" <<EOF
server_name: n$i
listen: 127.0.0.1:$((4221 + i + offset))
http: 127.0.0.1:$((8221 + i + offset))
jetstream { store_dir: "$dir/js$i", max_memory_store: 256MB, max_file_store: 1GB }
cluster { name: fanout-local, listen: 127.0.0.1:$((6221 + i + offset)), routes: [ ${routes%,} ] }
EOF
  nats-server -c "$dir/n$i.conf" -l "$dir/n$i.log" &
  pids+=($!)
done

# Ready when every server knows the JetStream meta leader.
for _ in $(seq 1 300); do
  ready=0
  for i in 1 2 3; do
    if curl -fsS "http://127.0.0.1:$((8221 + i + offset))/jsz" 2>/dev/null | grep -q '"leader": *"[^"]'; then
      ready=$((ready + 1))
    fi
  done
  [[ $ready -eq 3 ]] && break
  sleep 0.1
done
[[ $ready -eq 3 ]] || { echo "local-cluster: the NATS cluster did not elect a JetStream leader; see $dir/n*.log" >&2; exit 1; }

for i in 1 2 3; do
  # Each node names its own NATS server first.
  servers="${urls[$((i - 1))]},${urls[$((i % 3))]},${urls[$(((i + 1) % 3))]}"
  "$fanoutd" --node_id="node$i" --nats="$servers" --nats_replicas=3 \
    --grpc_listen="127.0.0.1:$((50050 + i + offset))" --ws_listen="127.0.0.1:$((8079 + i + offset))" \
    --io_threads=1 --anonymous_publish='chat.>' > "$dir/node$i.ready" 2> "$dir/node$i.log" &
  pids+=($!)
done
for i in 1 2 3; do
  for _ in $(seq 1 100); do [[ -s $dir/node$i.ready ]] && break; sleep 0.1; done
  [[ -s $dir/node$i.ready ]] || { echo "local-cluster: node$i did not start:" >&2; cat "$dir/node$i.log" >&2; exit 1; }
done

echo "local-cluster: ready"
for i in 1 2 3; do
  echo "  node$i  gRPC 127.0.0.1:$((50050 + i + offset))  WebSocket ws://127.0.0.1:$((8079 + i + offset))/ws  NATS ${urls[$((i - 1))]} (monitoring http://127.0.0.1:$((8221 + i + offset)))  pid ${pids[$((i + 2))]}"
done
echo "  logs in $dir; Ctrl-C stops the cluster"
# Until a signal, or until any process of the cluster exits.
wait -n "${pids[@]}" || true
echo "local-cluster: a process of the cluster exited; stopping" >&2
