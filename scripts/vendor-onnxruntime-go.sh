#!/usr/bin/env bash
# vendor-onnxruntime-go.sh checks third_party/onnxruntime_go, the copy of
# onnxruntime_go that go.mod's replace directive points at, against the
# pinned upstream module:
#
#   scripts/vendor-onnxruntime-go.sh --check
#
# Upstream files must be unchanged, except that onnxruntime_wrapper.c and
# onnxruntime_wrapper.h carry mlserve's wrappers after a "// mlserve:"
# comment (appended to the .c; before the closing extern "C" block of the
# .h). mlserve_shared.go and README.md are mlserve's. Why the copy:
# third_party/onnxruntime_go/README.md.
#
# Needs the Go module proxy (go mod download) and python3.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/third_party/onnxruntime_go"
VERSION=v1.27.0
SUM="h1:c1YSgDNtpf0WGtxj3YeRIb8VC5LmM1J+Ve3uHdteC1U=" # go.sum's line before the replace
FILES=(LICENSE go.mod legacy_code.go onnxruntime_c_api.h onnxruntime_ep_c_api.h onnxruntime_go.go
	setup_env.go setup_env_windows.go tensor_type_constraints.go)

[[ "${1:-}" == --check ]] || { echo "usage: $0 --check" >&2; exit 2; }

info="$(cd "$ROOT" && GOFLAGS=-mod=mod go mod download -json "github.com/yalue/onnxruntime_go@$VERSION")"
got_sum="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["Sum"])' <<<"$info")"
if [[ "$got_sum" != "$SUM" ]]; then
	echo "vendor-onnxruntime-go: onnxruntime_go $VERSION has sum $got_sum, want $SUM" >&2
	exit 1
fi
src="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])' <<<"$info")"
bad=0
for f in "${FILES[@]}"; do
	if ! cmp -s "$src/$f" "$DEST/$f"; then
		echo "vendor-onnxruntime-go: $f differs from upstream $VERSION" >&2
		bad=1
	fi
done
python3 - "$src" "$DEST" <<'PY' || bad=1
import sys
src, dest = sys.argv[1], sys.argv[2]
marker = "// mlserve:"
ok = True
up = open(f"{src}/onnxruntime_wrapper.c").read()
ours = open(f"{dest}/onnxruntime_wrapper.c").read()
i = ours.find(marker)
if i < 0 or ours[:i].rstrip("\n") != up.rstrip("\n"):
    print("vendor-onnxruntime-go: onnxruntime_wrapper.c is not upstream plus an appended mlserve block", file=sys.stderr)
    ok = False
up = open(f"{src}/onnxruntime_wrapper.h").read()
ours = open(f"{dest}/onnxruntime_wrapper.h").read()
i, j = ours.find(marker), ours.find('#ifdef __cplusplus\n}  // extern "C"')
if i < 0 or j < i or ours[:i] + ours[j:] != up:
    print("vendor-onnxruntime-go: onnxruntime_wrapper.h is not upstream plus an mlserve block before its closing extern \"C\"", file=sys.stderr)
    ok = False
sys.exit(0 if ok else 1)
PY
if [[ $bad != 0 ]]; then
	exit 1
fi
echo "vendor-onnxruntime-go: third_party/onnxruntime_go is upstream $VERSION plus mlserve's wrappers"
