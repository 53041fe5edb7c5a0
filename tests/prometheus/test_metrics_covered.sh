#!/usr/bin/env bash
# Every metric family the services can export (the name given to a metrics_* update in common/,
# writer/, readapi/, projector/) is asserted by an integration test of issue 17
# (tests/integration/test_metrics_*.c, test_observability.c, test_readapi_replica.c): a new
# family without a test fails.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
families=$(perl -0777 -ne '
    print "$1\n" while /metrics_(?:counter|gauge|histogram)_[a-z_]+\s*\(\s*"([a-z_]+)"/g;
    print "$1\n" while /# TYPE ([a-z_]+) /g;
' common/*.c writer/*.c readapi/*.c projector/*.c | sort -u)
tests=(tests/integration/test_metrics_*.c tests/integration/test_observability.c
       tests/integration/test_readapi_replica.c)
fail=0
for f in $families; do
    if ! grep -q "\"$f\|$f\"\|$f[_{ ]\|$f\$" "${tests[@]}"; then
        echo "metric family $f is not asserted by ${tests[*]}" >&2
        fail=1
    fi
done
echo "checked $(wc -w <<<"$families") metric families against the metrics tests"
exit $fail
