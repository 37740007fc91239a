#!/usr/bin/env bash
# fuzz.sh runs every Go fuzz target of the module for a short time each
# (default 10s), so that CI exercises every parser with generated inputs on
# top of the seed corpora that plain `go test` already runs.
#
#   scripts/fuzz.sh [DURATION]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
t="${1:-10s}"
export MLSERVE_ORT_LIBRARY="${MLSERVE_ORT_LIBRARY:-$PWD/.deps/onnxruntime/libonnxruntime.so.1}"
export MLSERVE_TESTDATA="${MLSERVE_TESTDATA:-$PWD/.deps/testdata}"
fail=0
n=0
while IFS=: read -r file name; do
	pkg="./$(dirname "$file")"
	n=$((n + 1))
	echo "[fuzz] $pkg $name ($t)"
	if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$t" "$pkg" >/tmp/fuzz.$$.log 2>&1; then
		cat /tmp/fuzz.$$.log
		echo "[fuzz] FAILED: $pkg $name (the failing input is in $pkg/testdata/fuzz/$name/)"
		fail=1
	fi
done < <(grep -rEo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]+' . | grep -v node_modules | sed -E 's#^\./##; s/:func /:/' | sort -u)
rm -f /tmp/fuzz.$$.log
echo "[fuzz] $n targets run"
exit $fail
