#!/usr/bin/env bash
# vendor-gocv.sh rebuilds third_party/gocv, the trimmed copy of gocv that
# go.mod's replace directive points at, from the pinned upstream module:
#
#   scripts/vendor-gocv.sh           rewrite the upstream files
#   scripts/vendor-gocv.sh --check   fail if they differ from what it would write
#
# Why a copy: gocv's own cgo.go links every OpenCV module through
# `pkg-config opencv4` (and with it Qt5, GStreamer, ffmpeg, GDAL: 264
# libraries, ~300 MB). Its `customenv` build tag would let us choose the
# libraries, but a tag cannot be set from go.mod, so plain `go build` and
# `go test ./...` would still link everything. The copy keeps gocv's core
# and imgproc wrappers (the only ones mlserve uses) and links
# libopencv_core and libopencv_imgproc by name (third_party/gocv/cgo.go,
# ours). Upstream files are copied unchanged except one deletion: gocv's
# imgproc wraps calib3d's findHomography, which would need libopencv_calib3d.
#
# Needs the Go module proxy (go mod download) and python3.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/third_party/gocv"
VERSION=v0.31.0
SUM="h1:BHDtK8v+YPvoSPQTTiZB2fM/7BLg6511JqkruY2z6LQ=" # go.sum's line before the replace
FILES=(LICENSE.txt gocv.go core.go core.cpp core.h core_string.go imgproc.go imgproc.cpp imgproc.h
	imgproc_colorcodes.go imgproc_colorcodes_string.go imgproc_string.go mat_noprofile.go
	mat_profile.go version.go version.cpp version.h)

check=0
[[ "${1:-}" == --check ]] && check=1

info="$(cd "$ROOT" && GOFLAGS=-mod=mod go mod download -json "gocv.io/x/gocv@$VERSION")"
got_sum="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["Sum"])' <<<"$info")"
if [[ "$got_sum" != "$SUM" ]]; then
	echo "vendor-gocv: gocv $VERSION has sum $got_sum, want $SUM" >&2
	exit 1
fi
src="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])' <<<"$info")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for f in "${FILES[@]}"; do
	cp "$src/$f" "$tmp/$f"
	chmod u+w "$tmp/$f"
done

# Drop FindHomography (calib3d) from the Go, C header and C++ files.
python3 - "$tmp" <<'EOF'
import re, sys
d = sys.argv[1]
def cut(name, pattern):
    p = f"{d}/{name}"
    s = open(p).read()
    t, n = re.subn(pattern, "", s, flags=re.S)
    if n != 1:
        sys.exit(f"vendor-gocv: {name}: pattern matched {n} times")
    open(p, "w").write(t)
cut("imgproc.go", r"type HomographyMethod int\n\nconst \(.*?\n\)\n\n// FindHomography .*?\n}\n\n")
cut("imgproc.h", r"Mat FindHomography\([^;]*\) ;\n")
cut("imgproc.cpp", r"Mat FindHomography\(.*?\n}\n\n")
EOF

if [[ $check == 1 ]]; then
	status=0
	for f in "${FILES[@]}"; do
		cmp -s "$tmp/$f" "$DEST/$f" || { echo "vendor-gocv: $f differs from upstream $VERSION (trimmed)"; status=1; }
	done
	exit $status
fi
for f in "${FILES[@]}"; do
	cp "$tmp/$f" "$DEST/$f"
done
echo "vendor-gocv: third_party/gocv holds gocv $VERSION core+imgproc (cgo.go, include/, go.mod and README.md are ours)"
