#!/usr/bin/env bash
# After the integration suites: every answer they got from the stack's writer and read API was
# checked against docs/openapi.yaml by tests/support/tcontract.c (tc_record); this lists the
# differences they recorded (<stack>/logs/contract-<test>.log) and fails when there is one.
set -euo pipefail
logs="$1/logs"
shopt -s nullglob
files=("$logs"/contract-*.log)
if [ "${#files[@]}" -eq 0 ]; then
    echo "contract_report: no answers were recorded under $logs (run the integration suites first)" >&2
    exit 1
fi
bad=0
for f in "${files[@]}"; do
    if [ -s "$f" ]; then
        echo "--- $(basename "$f"): $(wc -l <"$f") answers differ from docs/openapi.yaml" >&2
        sort "$f" | uniq -c | sort -rn | head -20 >&2
        bad=1
    fi
done
echo "contract_report: ${#files[@]} test programs' answers checked"
exit $bad
