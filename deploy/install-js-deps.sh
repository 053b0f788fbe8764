#!/usr/bin/env bash
# Installs the npm packages of the Node example publisher (clients/examples/node)
# and of the browser library's tests (clients/js: gRPC, ws, Playwright,
# TypeScript) from their committed package-lock.json files. Idempotent and
# quiet when nothing is missing: `npm ci` runs in a folder only when its
# node_modules is absent or was installed from a different lockfile (a sha256
# stamp). Runs started at the same time (parallel tests) take turns. Node and
# npm come with the machine, not from apt.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dirs=("$root/clients/examples/node" "$root/clients/js")

if ! command -v npm >/dev/null 2>&1; then
  echo "install-js-deps: npm not found; skipping ${dirs[*]#"$root/"} (their tests will fail)" >&2
  exit 0
fi

# One run at a time: two `npm ci` in one folder would delete each other's files.
exec 9<"${BASH_SOURCE[0]}"
flock 9

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for dir in "${dirs[@]}"; do
  stamp="$dir/node_modules/.fanout-lock.sha256"
  want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    continue
  fi
  echo "install-js-deps: npm ci in ${dir#"$root/"}" >&2
  if ! (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
  fi
  echo "$want" >"$stamp"
done
