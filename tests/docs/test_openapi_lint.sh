#!/usr/bin/env bash
# docs/openapi.yaml linted by @redocly/cli (the version pinned in tools/redocly, installed into
# .tools/redocly by scripts/setup) with the rules of tools/redocly/redocly.yaml: errors fail.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
redocly="$root/.tools/redocly/node_modules/.bin/redocly"
if [ ! -x "$redocly" ]; then
    echo "test_openapi_lint: $redocly is missing: run scripts/setup (it needs the npm registry once)" >&2
    exit 1
fi
"$redocly" lint --format=stylish --config "$root/tools/redocly/redocly.yaml" "$root/docs/openapi.yaml"
