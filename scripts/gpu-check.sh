#!/usr/bin/env bash
# gpu-check.sh: the prepared check of mlserve on a GPU machine
# (docs/remote-gpu.md, "The GPU check"). Run from the repository root.
#
#   scripts/gpu-check.sh --dry-run [--ort-parts]
#       Here, on CPU. Builds the bundle into .gpucheck/ (git-ignored): the
#       stripped binary, the shared libraries it needs beyond glibc, the
#       check program (scripts/gpucheck) and the CLIP tokenizer files;
#       checks the binary's libraries (scripts/check-libs.sh) and that the
#       bundle is under 64 MiB; then runs the whole check on CPU with small
#       graphs (CPU against CPU) to prove the bundle and the check work, and
#       prints the paths to carry to the GPU machine. --ort-parts also cuts
#       the CUDA build of ONNX Runtime (scripts/setup.sh --gpu) into three
#       parts under .gpucheck-ort/, for a machine whose Python has no CUDA
#       ONNX Runtime (one part per run, then the check).
#
#   scripts/gpu-check.sh
#       On the GPU machine, with .gpucheck/ carried. Finds the CUDA and
#       cuDNN libraries (find / -name 'libcudnn.so*' ...), an ONNX Runtime
#       with CUDA (the Python venv's onnxruntime if it lists
#       CUDAExecutionProvider, else the joined .gpucheck-ort parts), runs the
#       check with the real architectures (ViT-B/32, IResNet-50) and writes
#       gpu-check.json and the servers' logs to $OUT (or .gpucheck/results).
#       Meant to finish in under 5 minutes.
#
# Environment: PYTHON (default python3: the venv with onnxruntime and
# PyTorch), OUT, GPUCHECK_BENCH (seconds per bench run, default 10),
# GPUCHECK_SMALL=1 (small graphs instead of the real architectures: for a
# rehearsal of the GPU part without a GPU, with stand-ins for nvidia-smi
# and python3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
B="$ROOT/.gpucheck"
PARTS="$ROOT/.gpucheck-ort"
LIMIT=$((64 << 20))
log() { printf '[gpu-check] %s\n' "$*" >&2; }
die() { printf '[gpu-check] ERROR: %s\n' "$*" >&2; exit 1; }

dry_run() {
	local ort_parts="$1"
	local merges="${MLSERVE_TESTDATA:-$ROOT/.deps/testdata}/clip/bpe_simple_vocab_16e6.txt"
	local ort="${MLSERVE_ORT_LIBRARY:-$ROOT/.deps/onnxruntime/libonnxruntime.so.1}"
	[[ -f "$merges" && -f "$ort" ]] || die "missing $merges or $ort: run scripts/setup.sh first"
	rm -rf "$B"
	mkdir -p "$B/bin" "$B/lib"
	local version
	version="$(git describe --tags --always --dirty 2>/dev/null || echo dev)"
	log "building bin/mlserve and the check program"
	go build -trimpath -ldflags "-s -w -X github.com/mlserve/mlserve/config.Version=$version" -o "$B/bin/mlserve" ./cmd/mlserve
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$B/bin/gpucheck" ./scripts/gpucheck
	scripts/check-libs.sh "$B/bin/mlserve" >&2

	# Every library the binary needs except glibc's and the C++ runtime,
	# which the GPU machine has (glibc 2.34 or newer and GCC 12's libstdc++
	# or newer are needed). A bundled libstdc++ would come first in
	# LD_LIBRARY_PATH and could be older than what ONNX Runtime and the
	# CUDA libraries there need.
	local lib real
	while read -r lib real; do
		cp -L "$real" "$B/lib/$lib"
	done < <(ldd "$B/bin/mlserve" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' |
		grep -vE '^(libc|libm|libdl|libpthread|librt|libresolv|libstdc\+\+|libgcc_s|ld-linux[^ ]*)\.so')
	"$B/bin/gpucheck" tokenizer -merges "$merges" -out "$B/tokenizer"
	cat >"$B/README" <<-EOF
		mlserve GPU-check bundle, $version, built $(date -u +%FT%TZ) by scripts/gpu-check.sh --dry-run.
		bin/mlserve: the binary; lib/: its libraries beyond glibc; bin/gpucheck: the check;
		tokenizer/: CLIP tokenizer files. Run scripts/gpu-check.sh on the GPU machine.
	EOF

	local size
	size="$(du -sb "$B" | cut -f1)"
	log "bundle: $(du -sh "$B" | cut -f1) in $(find "$B" -type f | wc -l) files ($size bytes, limit $LIMIT)"
	((size <= LIMIT)) || die "the bundle is over 64 MiB"

	# The whole check on CPU, with the bundle's libraries first.
	local work
	work="$(mktemp -d)"
	trap 'rm -rf "$work"' RETURN
	log "running the check on CPU (small graphs, CPU against CPU)"
	LD_LIBRARY_PATH="$B/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" MLSERVE_ORT_LIBRARY="$ort" \
		"$B/bin/gpucheck" run -mlserve "$B/bin/mlserve" -models "$work/models" -tokenizer "$B/tokenizer" \
		-out "$work/summary.json" -logs "$work" -bench-duration "${GPUCHECK_BENCH:-1}s" -port "${GPUCHECK_PORT:-3931}" ||
		{ tail -n 30 "$work"/mlserve-*.log >&2 || true; die "the check failed on CPU: $(cat "$work/summary.json" 2>/dev/null)"; }
	python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print("[gpu-check] dry run: passed=%s in %.0fs, cosine %s, clip-visual req/s %s" % (s["passed"], s["seconds"], {k: round(v["min"], 6) for k, v in s["cosine"].items()}, [b["req_per_s"] for b in s["bench"].get("clip-visual", [])]))' "$work/summary.json" >&2

	if [[ $ort_parts == 1 ]]; then
		local gpu="$ROOT/.deps/onnxruntime-gpu"
		[[ -f "$gpu/libonnxruntime_providers_cuda.so" ]] || die "no $gpu: run scripts/setup.sh --gpu first"
		rm -rf "$PARTS"
		mkdir -p "$PARTS"
		log "packing the CUDA build of ONNX Runtime (1.29) into three parts"
		tar -C "$gpu" -cf - libonnxruntime.so libonnxruntime_providers_shared.so libonnxruntime_providers_cuda.so |
			xz -6 -T0 >"$PARTS/ort-gpu.tar.xz"
		(cd "$PARTS" && sha256sum ort-gpu.tar.xz >ort-gpu.tar.xz.sha256 &&
			split -n 3 -d ort-gpu.tar.xz part- && rm ort-gpu.tar.xz)
		for p in "$PARTS"/part-*; do
			mkdir "$p.d" && mv "$p" "$p.d/" && cp "$PARTS/ort-gpu.tar.xz.sha256" "$p.d/"
			(($(stat -c %s "$p.d/$(basename "$p")") <= LIMIT)) || die "$p is over 64 MiB"
		done
	fi

	echo "carry to the GPU machine: .gpucheck"
	if [[ $ort_parts == 1 ]]; then
		echo "ONNX Runtime parts, one run each before the check (the machine must stay warm):"
		for d in "$PARTS"/part-*.d; do echo "  carry ${d#"$ROOT"/} (command: true)"; done
	fi
	echo "then run: scripts/gpu-check.sh   (results in \$OUT)"
}

gpu_run() {
	[[ -x "$B/bin/mlserve" && -x "$B/bin/gpucheck" ]] || die "no bundle in $B: run scripts/gpu-check.sh --dry-run here and carry .gpucheck"
	local out="${OUT:-$B/results}" py="${PYTHON:-python3}"
	mkdir -p "$out"
	local env="$out/environment.txt"
	{
		echo "== nvidia-smi"
		nvidia-smi 2>&1 || true
		echo "== CUDA libraries"
	} >"$env"

	# CUDA runtime, cuBLAS, cuDNN... wherever pip or the system put them.
	local dirs
	dirs="$(find / \( -path /proc -o -path /sys -o -path /dev \) -prune -o \
		\( -name 'libcudnn.so*' -o -name 'libcublas.so*' -o -name 'libcublasLt.so*' -o -name 'libcudart.so*' \
		-o -name 'libcufft.so*' -o -name 'libcurand.so*' -o -name 'libnvrtc.so*' -o -name 'libnvJitLink.so*' \) \
		-print 2>/dev/null | tee -a "$env" | xargs -r -n1 dirname | sort -u | paste -sd:)"
	[[ -n "$dirs" ]] || die "no CUDA libraries found (libcudnn.so*, libcublas.so*...)"

	# An ONNX Runtime with the CUDA execution provider.
	local ort="" info
	if info="$("$py" -c 'import onnxruntime as o, os; print(",".join(o.get_available_providers())); print(o.__version__); print(os.path.join(os.path.dirname(o.__file__), "capi"))' 2>>"$env")"; then
		echo "== python onnxruntime: $(paste -sd' ' <<<"$info")" >>"$env"
		if grep -q CUDAExecutionProvider <<<"$(sed -n 1p <<<"$info")"; then
			local capi
			capi="$(sed -n 3p <<<"$info")"
			ort="$(find "$capi" -maxdepth 1 -name 'libonnxruntime.so.1*' | sort | head -n1)"
			[[ -n "$ort" ]] || echo "== $capi has CUDA but no libonnxruntime.so.1* (C API library)" >>"$env"
			dirs="$capi:$dirs"
		fi
	fi
	if [[ -z "$ort" ]] && compgen -G "$PARTS/part-*.d/part-*" >/dev/null; then
		local n
		n="$(ls "$PARTS"/part-*.d/part-* | wc -l)"
		((n == 3)) || die "$n of 3 ONNX Runtime parts are here; carry the missing ones while the machine is warm"
		local dest=/tmp/mlserve-ort-gpu
		mkdir -p "$dest"
		cat "$PARTS"/part-*.d/part-* >"$dest/ort-gpu.tar.xz"
		(cd "$dest" && sha256sum -c "$(ls "$PARTS"/part-*.d/ort-gpu.tar.xz.sha256 | head -n1)" >/dev/null) || die "the joined ONNX Runtime parts do not match their sha256"
		tar -C "$dest" -xJf "$dest/ort-gpu.tar.xz"
		ort="$dest/libonnxruntime.so"
		dirs="$dest:$dirs"
	fi
	[[ -n "$ort" ]] || die "no ONNX Runtime with CUDA: $py's onnxruntime lacks CUDAExecutionProvider and no .gpucheck-ort parts were carried (scripts/gpu-check.sh --dry-run --ort-parts)"
	echo "== ONNX Runtime used: $ort" >>"$env"
	log "ONNX Runtime $ort; CUDA libraries in $(tr ':' '\n' <<<"$dirs" | wc -l) folders"

	export MLSERVE_ORT_LIBRARY="$ort"
	export LD_LIBRARY_PATH="$B/lib:$dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
	local rc=0
	local full=-full models=/tmp/mlserve-gpucheck-models
	if [[ "${GPUCHECK_SMALL:-0}" == 1 ]]; then
		full=-full=false models=/tmp/mlserve-gpucheck-models-small
	fi
	timeout 290 "$B/bin/gpucheck" run -cuda "$full" -mlserve "$B/bin/mlserve" -models "$models" \
		-tokenizer "$B/tokenizer" -out "$out/gpu-check.json" -logs "$out" -python "$py" \
		-bench-duration "${GPUCHECK_BENCH:-10}s" -budget 240s || rc=$?
	rm -f "$out/faces.jpg"
	log "summary: $out/gpu-check.json (exit $rc)"
	return $rc
}

case "${1:-}" in
--dry-run) dry_run "$([[ "${2:-}" == --ort-parts ]] && echo 1 || echo 0)" ;;
"") gpu_run ;;
*) die "usage: scripts/gpu-check.sh [--dry-run [--ort-parts]]" ;;
esac
