#!/usr/bin/env bash
# Installs the npm packages of the Node example publisher (clients/examples/node)
# from its committed package-lock.json. Idempotent and quiet when nothing is
# missing: `npm ci` runs only when node_modules is absent or was installed from
# a different lockfile. Node and npm come with the machine, not from apt.
set -euo pipefail

dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/clients/examples/node"
lock="$dir/package-lock.json"
stamp="$dir/node_modules/.fanout-lock.sha256"

if ! command -v npm >/dev/null 2>&1; then
  echo "install-js-deps: npm not found; skipping clients/examples/node (its test will fail)" >&2
  exit 0
fi

want="$(sha256sum "$lock" | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi

echo "install-js-deps: npm ci in clients/examples/node" >&2
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) >"$log" 2>&1; then
  cat "$log" >&2
  exit 1
fi
echo "$want" >"$stamp"
