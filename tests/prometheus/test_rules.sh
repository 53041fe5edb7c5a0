#!/usr/bin/env bash
# The shipped Prometheus config and alert rules: `promtool check config` and `promtool test rules`
# (every alert fires on one input and stays silent on a healthy one: alerts_test.yml).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DIR="$ROOT/compose/prometheus"
command -v promtool >/dev/null || { echo "test_rules: promtool missing: run scripts/setup (package prometheus)" >&2; exit 1; }
promtool check config "$DIR/prometheus.yml"
promtool test rules "$DIR/alerts_test.yml"
# each alert of alerts.yml has a test in alerts_test.yml
for a in $(sed -n 's/^ *- alert: *//p' "$DIR/alerts.yml"); do
  grep -q "alertname: $a\$" "$DIR/alerts_test.yml" || { echo "test_rules: alert $a has no test" >&2; exit 1; }
done
echo "test_rules: ok"
