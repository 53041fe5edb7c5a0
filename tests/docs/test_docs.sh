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
# http_reply_error(...) and err_setr(...) and of every wrapper that passes one of its own
# parameters on as that code (ra_reply_unavailable(resp, "<code>", ...), found by reading the
# wrappers' definitions, so a new wrapper is scanned without being listed here), the literals of
# json_pack(... "error", "<code>" ...) and the status table. An argument is split at top-level
# commas, so a conditional between literals or a call inside it yields every literal.
scan='
    sub args {    # the top-level arguments of the call whose "(" is at pos($_[0]) - 1
        my ($s, $p) = @_;
        my ($depth, $cur, @a) = (0, "");
        for (my $i = $p; $i < length $s; $i++) {
            my $c = substr($s, $i, 1);
            if ($c eq "\"") {    # a string literal, escapes included
                substr($s, $i) =~ /^("(?:[^"\\]|\\.)*")/s;
                $cur .= $1; $i += length($1) - 1; next;
            }
            if ($c eq "(") { $depth++ }
            elsif ($c eq ")") { if ($depth == 0) { push @a, $cur; return @a } $depth-- }
            elsif ($c eq "," && $depth == 0) { push @a, $cur; $cur = ""; next }
            $cur .= $c;
        }
        return @a;
    }
    my %fn = (http_reply_error => 2, err_setr => 2);    # function => index of the code argument
    my @src = map { local $/; open my $h, "<", $_ or die "$_: $!"; scalar <$h> } @ARGV;
    # wrappers: a definition whose body passes one of its parameters as a known code argument
    for my $round (1 .. 3) {
        for my $text (@src) {
            while ($text =~ /^[a-z][\w \*]*?\b(\w+)\s*\(([^)]*)\)\s*\{(.*?)^\}/msg) {
                my ($name, $params, $body) = ($1, $2, $3);
                next if exists $fn{$name};
                my @p = map { /(\w+)\s*(?:\[\w*\])?\s*$/ ? $1 : "" } split /,/, $params;
                for my $callee (keys %fn) {
                    while ($body =~ /\b\Q$callee\E\s*\(/g) {
                        my @a = args($body, pos $body);
                        my $arg = $a[$fn{$callee}] // "";
                        $arg =~ s/^\s+|\s+$//g;
                        for my $k (0 .. $#p) { $fn{$name} = $k if $p[$k] ne "" && $arg eq $p[$k] }
                    }
                }
            }
        }
    }
    for my $text (@src) {
        for my $f (keys %fn) {
            while ($text =~ /\b\Q$f\E\s*\(/g) {
                my @a = args($text, pos $text);
                my $arg = $a[$fn{$f}] // "";
                print "$1\n" while $arg =~ /"([a-z][a-z_]*)"/g;
            }
        }
        print "$1\n" while $text =~ /"error",\s*"([a-z][a-z_]*)"/g;
        print "$1\n" while $text =~ /\[ST_[A-Z_]+\]\s*=\s*"([a-z][a-z_]*)"/g;
    }
    print STDERR "code arguments scanned: ", join(" ", map { "$_#" . ($fn{$_} + 1) } sort keys %fn), "\n";
'
codes=$(perl -e "$scan" common/*.c writer/*.c readapi/*.c projector/*.c | sort -u)
# the scan must see the codes only a wrapper passes (ra_reply_unavailable's), or it is broken
for c in too_many_waiters not_yet_projected; do
    grep -qx "$c" <<<"$codes" || { echo "the code scan misses \`$c\` (passed through a wrapper)" >&2; fail=1; }
done

table=$(grep -E '^\|' README.md)
for code in $codes; do
    [[ $code =~ $internal ]] && continue
    if ! grep -q "\`$code\`" <<<"$table"; then
        echo "README error table lacks \`$code\` (sent by the code)" >&2
        fail=1
    fi
done
echo "checked $(wc -w <<<"$codes") error codes against README's table"

# Every code of README's error table is in the OpenAPI document (docs/openapi.yaml), which
# names the codes each status of each route can carry.
for code in $(grep -E '^\| [0-9]{3}(, [0-9]{3})* \| `' README.md | cut -d'|' -f3 | grep -oE '`[a-z_]+`' | tr -d '`' | sort -u); do
    if ! grep -qE "(^|[^a-z_])$code([^a-z_]|\$)" docs/openapi.yaml; then
        echo "docs/openapi.yaml lacks the error code \`$code\` of README's table" >&2
        fail=1
    fi
done

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
