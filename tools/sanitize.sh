#!/usr/bin/env bash
# Build fastrnn with AddressSanitizer and UndefinedBehaviorSanitizer
# (FASTRNN_SANITIZE=1) in a copy of the sources, and run the tests that drive
# the kernels under them: any report (out-of-bounds access, use after free,
# overflow, misaligned access, ...) stops the run with a non-zero exit.
#
#   tools/sanitize.sh [PYTHON]          (about 2 minutes here)
#
# Needs gcc (or clang) with libasan/libubsan, and Cython, setuptools, pytest,
# hypothesis, numpy in the Python used (default: python3).  Python is not built with ASan, so
# libasan is preloaded and leak detection is off (CPython keeps memory until
# exit by design); the PyTorch, Keras and ONNX tests are not run (those
# libraries do not run under a preloaded ASan), nor the two tests that
# measure memory (see below).
set -euo pipefail

python="${1:-python3}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

mkdir "$work/src"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard 2>/dev/null || find . -type f -print0) | (cd "$repo" && xargs -0 cp --parents -t "$work/src")
cd "$work/src"
echo "== building with FASTRNN_SANITIZE=1"
if ! FASTRNN_SANITIZE=1 "$python" setup.py build_ext --inplace > "$work/build.log" 2>&1; then
    tail -20 "$work/build.log" >&2
    echo "sanitize.sh: the build failed (it needs Cython>=3.0.10 and setuptools in $python)" >&2
    exit 1
fi

libasan="$(${CC:-gcc} -print-file-name=libasan.so)"
export LD_PRELOAD="$libasan"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export PYTHONPATH="$work/src"

tests=(tests/test_reference.py tests/test_gradcheck.py tests/test_threads.py tests/test_errors.py
       tests/test_activations.py tests/test_clip.py tests/test_nn.py tests/test_reliability.py)
echo "== pytest under ASan and UBSan: ${tests[*]}"
# not here: the leak test (ASan keeps freed memory in quarantine, so resident
# memory grows) and the MemoryError test (its address-space limit leaves ASan
# no room for its shadow memory)
"$python" -m pytest -q -p no:cacheprovider -k "not torch and not leak and not memory_error" "${tests[@]}"
echo "== no sanitizer report"
