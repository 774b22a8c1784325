#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU and TensorRT (a Jetson, or any CUDA host): checks the
# TensorRT path end to end and prints the figures to send back. About five minutes on a Jetson Orin
# (most of it the first engine builds; a second run reuses them).
#
#   bash bench/gpu_check.sh 2>&1 | tee gpu_check.txt     # from the repository root, then send gpu_check.txt
#
# Needs: the repository's environment with tensorrt and pycuda importable (docs/jetson.md, "Bare metal":
# a venv made with --system-site-packages on JetPack), the converted models (skeletond models fetch, or a
# copied models folder) and the test photos in ../shared/testdata. PYTHON picks the interpreter
# (default: .venv/bin/python, else python3). Nothing is installed and nothing outside the engine cache
# is written.
#
# Steps: 1. what this machine is; 2. why TensorRT would not be used (stops here if it would not);
# 3. the GPU tests (engine build, rebuild on a changed key, FP16 parity on crops); 4. the engines for
# the configured models; 5. FP16 parity of the whole pose stage against ONNX Runtime on every test
# photo; 6. latency: a 12 MP front/side pair end to end, and a live-capture frame.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
failed=()
step() { echo; echo "=== $* ($(date -u +%H:%M:%S) UTC)"; }
run() { "$@" || failed+=("$*"); }

step "1. this machine"
uname -srm
[ -r /etc/nv_tegra_release ] && head -n 1 /etc/nv_tegra_release
command -v nvpmodel >/dev/null && (nvpmodel -q 2>/dev/null || sudo -n nvpmodel -q 2>/dev/null) | tr '\n' ' ' && echo
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
id -nG | grep -qw video || echo "note: $(id -un) is not in group video (a Jetson's GPU device nodes need it)"
"$PYTHON" - <<'EOF'
import platform, sys
print(f"Python {platform.python_version()} ({sys.executable})")
for name in ("tensorrt", "pycuda", "onnxruntime", "numpy", "cv2"):
    try:
        module = __import__(name)
        print(f"{name} {getattr(module, '__version__', getattr(module, 'VERSION', '?'))}")
    except Exception as exc:  # print every missing piece, not just the first
        print(f"{name}: not importable ({exc})")
EOF

step "2. can TensorRT run here?"
if ! "$PYTHON" -c '
import sys
from engines.backends import tensorrt_unavailable_reason
from engines.tensorrt import gpu_info
reason = tensorrt_unavailable_reason()
if reason:
    sys.exit(f"TensorRT not usable: {reason}")
info = gpu_info()
print(f"TensorRT {info.tensorrt_version} on {info.name} (sm {info.compute_capability})")
'; then
    # Without TensorRT, the backend's own CUDA side (context, page-locked buffers, async copies) can still
    # be checked on the GPU with pycuda alone: the test plays TensorRT, the copies and the device are real.
    if "$PYTHON" -c 'import pycuda.driver as c; c.init(); raise SystemExit(0 if c.Device.count() else 1)' 2>/dev/null; then
        echo "pycuda sees a CUDA device: checking the backend's CUDA side without TensorRT"
        "$PYTHON" -m pytest -q -rs -m gpu tests/test_tensorrt.py -k cuda_side_on_a_real_gpu
    fi
    echo "stopping: fix the reason above (docs/jetson.md), then run this again"
    exit 2
fi

step "3. GPU tests (engine build and rebuild, FP16 parity on crops of the test photos)"
run "$PYTHON" -m pytest -q -rs -m gpu tests/test_tensorrt.py

step "4. engines for the configured models (built once, then cached)"
run "$PYTHON" -m daemon.cli engines build
run "$PYTHON" -m daemon.cli engines list

step "5. FP16 parity: TensorRT vs ONNX Runtime fp32, whole pose stage, every front/side test photo"
run "$PYTHON" bench/gpu_check.py parity

step "6a. latency: a front/side pair at its own size and upscaled to 12 MP (median of 10)"
run "$PYTHON" -m daemon.cli bench --backend tensorrt --megapixels 12 --runs 10

step "6b. latency: one live-capture frame (detector + one landmark pass, batch 1)"
run "$PYTHON" bench/gpu_check.py live --runs 50

echo
if [ ${#failed[@]} -gt 0 ]; then
    echo "=== done, with failures:"; printf '  %s\n' "${failed[@]}"
    exit 1
fi
echo "=== done: please send this output back, with the power mode (sudo nvpmodel -q) and whether jetson_clocks was on"
