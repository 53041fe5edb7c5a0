#!/usr/bin/env bash
# Docs check (unit label, no server): every error code the services can send is in README's
# error table, and no page links outside the repository (or to a file that does not exist).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
fail=0

# Codes that never reach an HTTP body: internal control reasons of libraries and threads.
#   ok (no error), poison (projector parking), retry (writer: serialisation retry loop),
#   relay_busy / bus_unavailable (the relay thread, which answers no request)
internal='^(ok|poison|retry|relay_busy|bus_unavailable)$'

# Every code the services and common/ can put in an error body: the code argument of
# http_reply_error(...) and err_setr(...), json_pack(... "error", "<code>" ...), the status table.
codes=$(perl -0777 -ne '
    # the code is the third argument of both (a literal, or a conditional between literals)
    while (/(?:http_reply_error|err_setr)\s*\(\s*[^,]+,\s*[^,]+,\s*([^,]+),/sg) {
        my $arg = $1;
        print "$1\n" while $arg =~ /"([a-z][a-z_]*)"/g;
    }
    print "$1\n" while /"error",\s*"([a-z][a-z_]*)"/g;
    print "$1\n" while /\[ST_[A-Z_]+\]\s*=\s*"([a-z][a-z_]*)"/g;
' common/*.c writer/*.c readapi/*.c | sort -u)

table=$(grep -E '^\|' README.md)
for code in $codes; do
    [[ $code =~ $internal ]] && continue
    if ! grep -q "\`$code\`" <<<"$table"; then
        echo "README error table lacks \`$code\` (sent by the code)" >&2
        fail=1
    fi
done
echo "checked $(wc -w <<<"$codes") error codes against README's table"

# Links: relative targets must exist inside the repository; nothing points outside it.
for f in README.md docs/*.md; do
    dir=$(dirname "$f")
    while IFS= read -r target; do
        target=${target%%#*}
        [[ -z $target ]] && continue
        if [[ $target =~ ^[a-z]+: ]]; then
            echo "$f: links outside the repository: $target" >&2
            fail=1
            continue
        fi
        resolved=$(realpath -m "$dir/$target")
        if [[ $resolved != "$root"/* ]]; then
            echo "$f: links outside the repository: $target" >&2
            fail=1
        elif [[ ! -e $resolved ]]; then
            echo "$f: links to a missing file: $target" >&2
            fail=1
        fi
    done < <(grep -oE '\]\([^)]+\)' "$f" | sed -E 's/^\]\(//; s/\)$//; s/ .*//')
    if grep -nE '\.\./shared/|shared/DESIGN\.md' "$f" >&2; then
        echo "$f: names a file outside the repository" >&2
        fail=1
    fi
done
echo "checked the links of README.md and docs/*.md"

if [[ $fail -ne 0 ]]; then
    echo "1 failed" >&2
    exit 1
fi
