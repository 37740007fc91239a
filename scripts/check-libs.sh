#!/usr/bin/env bash
# check-libs.sh fails when a binary needs more shared libraries than
# mlserve's budget (issue 10: at most 30 lines of `ldd`, at most 60 MB of
# library files in total), and prints what it needs either way.
#
#   scripts/check-libs.sh [BINARY]          default bin/mlserve
#   MAX_LIBS=30 MAX_MB=60 scripts/check-libs.sh ...
#
# A jump here means a new cgo dependency pulled in a big library tree (for
# instance a gocv module other than core/imgproc: see third_party/gocv).
set -euo pipefail
bin="${1:-bin/mlserve}"
max_libs="${MAX_LIBS:-30}"
max_mb="${MAX_MB:-60}"
[[ -x "$bin" ]] || { echo "check-libs: $bin is not an executable (make build first)" >&2; exit 2; }

out="$(ldd "$bin")"
if grep -q "not found" <<<"$out"; then
	echo "$out" >&2
	echo "check-libs: $bin needs libraries this machine lacks" >&2
	exit 1
fi
lines="$(wc -l <<<"$out")"
bytes=0
while read -r path; do
	real="$(readlink -f "$path")"
	bytes=$((bytes + $(stat -c %s "$real")))
done < <(awk '/=>/ && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' <<<"$out" | sort -u)
mb="$(awk -v b="$bytes" 'BEGIN {printf "%.1f", b / 1e6}')"
awk '{print "  " $1}' <<<"$out"
echo "check-libs: $bin: $lines libraries, $mb MB (limits: $max_libs, $max_mb MB)"
if ((lines > max_libs)) || awk -v b="$bytes" -v m="$max_mb" 'BEGIN {exit !(b > m * 1e6)}'; then
	echo "check-libs: over the limit" >&2
	exit 1
fi
