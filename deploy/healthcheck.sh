#!/bin/bash
# The HEALTHCHECK of deploy/Dockerfile: GET /healthz on the WebSocket port,
# healthy only on 200 (a draining node answers 503). bash's /dev/tcp instead of
# curl: bash is in debian:bookworm-slim already, curl would add ~10 MB.
#
# The address comes from FANOUT_WS_LISTEN, as fanoutd's does (the image sets
# it); a wildcard host is checked on loopback. bash speaks no TLS: with
# FANOUT_TLS_CERT_FILE set the port speaks https:// only, and this checks no
# more than that it accepts a connection (and says so).
set -euo pipefail

addr=${FANOUT_WS_LISTEN:-0.0.0.0:8080}
port=${addr##*:}
host=${addr%:*}
host=${host#[}
host=${host%]}
case $host in
  "" | 0.0.0.0) host=127.0.0.1 ;;
  ::) host=::1 ;;
esac

if ! exec 3<>"/dev/tcp/${host}/${port}"; then
  echo "unhealthy: nothing accepts connections on ${host}:${port}"
  exit 1
fi
if [[ -n ${FANOUT_TLS_CERT_FILE:-} ]]; then
  echo "port ${port} accepts connections (TLS: /healthz not checked)"
  exit 0
fi
printf 'GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
status_line=""
read -r -t 2 status_line <&3 || true
status_line=${status_line%$'\r'}
read -r _ code _ <<<"$status_line" || true
if [[ ${code:-} != 200 ]]; then
  echo "unhealthy: /healthz answered '${status_line}'"
  exit 1
fi
echo "healthy: /healthz answered 200"
