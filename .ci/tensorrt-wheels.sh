#!/usr/bin/env bash
# NVIDIA's real TensorRT Python bindings for the CI tests of the TensorRT backend (tests/test_tensorrt_real.py).
#
# Installs into a cache OUTSIDE the repository, one folder per version (they share a module name):
#   ${SKELETON_TRT_WHEELS:-~/.cache/skeleton-v2/trt-wheels}/<cpXY>/<version>/site      pip --target
#   ${SKELETON_TRT_WHEELS:-~/.cache/skeleton-v2/trt-wheels}/<cpXY>/<version>/stub-lib  (bindings only)
# (<cpXY>: the Python the wheels were installed for; the downloads are shared in .../downloads.)
#
# - tensorrt-bindings 8.6.1 (JetPack 6.0), tensorrt-cu12-bindings 10.3.0 (JetPack 6.1/6.2) and
#   11.4.0.106 (desktop): PyPI has the bindings without libnvinfer. The few libnvinfer / parser symbols
#   the module links against are compiled here as stubs returning NULL, so the real module imports and
#   its classes, enums and method signatures can be checked; trt.Builder(...) then fails as real TensorRT
#   does without a usable GPU.
# - tensorrt-rtx-cu12-libs + tensorrt-rtx-cu12-bindings 1.7.1.116 (about 90 MB download, 350 MB
#   installed): real libraries that parse ONNX and build engines without a GPU.
#
# Only the bindings go into a folder (pip --no-deps), never numpy or another package the venv has: the
# tests put a folder after the venv's site-packages, and the bindings run with the venv's numpy, as the
# daemon does. (A numpy<2 installed beside 8.6.1 once shadowed the venv's numpy 2 and broke the venv's
# ml_dtypes 0.7, which onnx imports and which needs numpy 2.)
#
# Idempotent: a version whose folder holds a READY marker naming the same requirements is left alone (a
# warm run takes a second); a folder installed from other requirements is installed afresh.
# Never fails the caller: a version that cannot be installed prints why, and its tests skip with a reason.
set -uo pipefail
PYTHON="${PYTHON:-python3}"
CACHE="${SKELETON_TRT_WHEELS:-$HOME/.cache/skeleton-v2/trt-wheels}"
if ! TAG=$("$PYTHON" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")'); then
    echo "tensorrt-wheels: $PYTHON does not run; the real-TensorRT tests will skip"
    exit 0
fi
ROOT="$CACHE/$TAG"
mkdir -p "$CACHE/downloads" "$ROOT"

say() { echo "tensorrt-wheels: $*"; }

# True when <folder name> holds a finished install of exactly these requirements.
ready() {  # <folder name> <pip requirement>...
    local name="$1"; shift
    [ -f "$ROOT/$name/READY" ] && [ "$(cat "$ROOT/$name/READY")" = "$*" ]
}

install_target() {  # <folder name> <pip requirement>...
    local name="$1"; shift
    local dir="$ROOT/$name"
    rm -rf "$dir"
    mkdir -p "$dir"
    # pip's own cache keeps the wheels for a re-install; --find-links reuses what an earlier run fetched.
    if ! "$PYTHON" -m pip download --quiet --no-deps --find-links "$CACHE/downloads" --dest "$CACHE/downloads" "$@" \
            >"$dir/pip.log" 2>&1 \
        || ! "$PYTHON" -m pip install --quiet --no-deps --no-index --find-links "$CACHE/downloads" \
            --target "$dir/site" "$@" >>"$dir/pip.log" 2>&1; then
        say "$name: NOT installed (pip failed: $(tail -n 1 "$dir/pip.log")); its tests will skip"
        return 1
    fi
    return 0
}

# libnvinfer & co. as stubs: every symbol the binding module needs from NVIDIA's libraries, returning 0.
build_stubs() {  # <folder name> <major>
    local dir="$ROOT/$1" major="$2"
    local module
    module=$(find "$dir/site" -name 'tensorrt*.so' -path '*tensorrt_bindings*' | head -n 1)
    if [ -z "$module" ]; then
        say "$1: no binding module found in $dir/site"
        return 1
    fi
    if ! command -v gcc >/dev/null || ! command -v nm >/dev/null; then
        say "$1: gcc and nm (binutils) are needed for the libnvinfer stubs; its tests will skip"
        return 1
    fi
    mkdir -p "$dir/stub-lib"
    # Undefined, unversioned symbols that neither Python nor libc/libdl provide: NVIDIA's.
    nm -D --undefined-only "$module" | awk '$1 == "U" && $2 !~ /@/ {print $2}' \
        | grep -Ev '^(_?Py|dl(open|sym|close|error)$)' \
        | sed 's/.*/void *&(void) { return 0; }/' >"$dir/stub-lib/stubs.c"
    local lib
    for lib in libnvinfer libnvonnxparser libnvinfer_plugin libnvparsers; do
        gcc -shared -fPIC -o "$dir/stub-lib/$lib.so.$major" "$dir/stub-lib/stubs.c" \
            -Wl,-soname,"$lib.so.$major" || return 1
    done
    return 0
}

for spec in "8.6.1 8 tensorrt-bindings==8.6.1" \
            "10.3.0 10 tensorrt-cu12-bindings==10.3.0" \
            "11.4.0.106 11 tensorrt-cu12-bindings==11.4.0.106"; do
    read -r version major requirements <<<"$spec"
    # shellcheck disable=SC2086  # requirements is a word list
    if ready "$version" $requirements; then
        say "$version: cached in $ROOT/$version"
    elif install_target "$version" $requirements && build_stubs "$version" "$major"; then
        echo "$requirements" >"$ROOT/$version/READY"
        say "$version: installed in $ROOT/$version"
    fi
done

rtx="tensorrt-rtx-cu12-libs==1.7.1.116 tensorrt-rtx-cu12-bindings==1.7.1.116"
# shellcheck disable=SC2086  # rtx is a word list
if ready rtx-1.7.1.116 $rtx; then
    say "rtx-1.7.1.116: cached in $ROOT/rtx-1.7.1.116"
elif install_target rtx-1.7.1.116 $rtx; then
    echo "$rtx" >"$ROOT/rtx-1.7.1.116/READY"
    say "rtx-1.7.1.116: installed in $ROOT/rtx-1.7.1.116"
fi
exit 0
