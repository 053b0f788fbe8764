#!/usr/bin/env bash
# Installs the Debian 12 packages fanout needs to build, run and test.
# Idempotent and quiet when nothing is missing. Run as root or with sudo available.
set -euo pipefail

# Build and run.
PKGS_BUILD=(
  build-essential cmake ninja-build pkg-config ccache
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler grpc-proto
  libboost1.81-dev libabsl-dev libssl-dev libjwt-dev libnats-dev libspdlog-dev
)
# Tests (chromium: the browser tests; yamllint, shellcheck: the deploy files),
# benchmarks and the example publishers.
PKGS_TEST=(
  libgtest-dev libgmock-dev libbenchmark-dev
  nats-server curl haproxy prometheus valgrind chromium yamllint shellcheck
  python3-grpcio python3-protobuf python3-websockets python3-matplotlib
  golang-go golang-google-grpc-dev golang-google-protobuf-dev golang-goprotobuf-dev
  clang-14 libclang-rt-14-dev  # tests/fuzz (libFuzzer)
)

want=("${PKGS_BUILD[@]}")
if [[ "${1:-}" != "--build-only" ]]; then
  want+=("${PKGS_TEST[@]}")
fi

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
