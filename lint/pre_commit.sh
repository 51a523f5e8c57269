#!/usr/bin/env bash
# pre-commit entry point (see .pre-commit-hooks.yaml): runs `vmfactory lint` from this checkout on
# the files pre-commit passes, relative to the caller's working directory.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# scripts/deno installs Deno when it is missing; ask it which binary it uses.
deno=$("$root/scripts/deno" eval 'console.log(Deno.execPath())')
exec "$deno" run -A --config "$root/deno.json" "$root/cmd/main.ts" lint "$@"
