"""The compiled kernels (fastrnn/_recurrence.pyx), in the build that suits
this CPU: every other module reaches them as `fastrnn._kernels.recurrence`.

A build from source compiles them once, for the machine it runs on
(-march=native).  A portable build (the wheels) compiles them three times:
for any x86-64 CPU, for x86-64-v3 (AVX2 and FMA, 2013 on) and for x86-64-v4
(AVX-512: Intel Skylake-SP 2017 on, AMD Zen 4 2022 on); the widest one the CPU
runs is imported here.  FASTRNN_KERNELS=baseline or avx2 caps the choice
(for tests)."""
from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import TYPE_CHECKING

from fastrnn import _recurrence as baseline

__all__ = ["recurrence", "variant", "baseline"]


def _portable_build() -> bool:
    try:
        from fastrnn._build_info import BUILD_INFO
    except ImportError:
        return False
    return BUILD_INFO.get("arch") == "portable"


# the extra builds of a portable build, widest first, with the CPU check of each
VARIANTS = (("avx512", baseline.cpu_has_avx512), ("avx2", baseline.cpu_has_avx2_fma))


def _pick() -> tuple[ModuleType, str]:
    # a build for this machine only (not portable) has one module, and the
    # _recurrence_<variant> left over from an earlier portable build are stale
    if not _portable_build():
        return baseline, "native"
    cap = os.environ.get("FASTRNN_KERNELS", "")
    if cap == "baseline":
        return baseline, "baseline"
    names = [name for name, _ in VARIANTS]
    start = names.index(cap) if cap in names else 0   # FASTRNN_KERNELS=avx2: none wider
    for name, cpu_runs in VARIANTS[start:]:
        if cpu_runs():
            try:
                return importlib.import_module(f"fastrnn._recurrence_{name}"), name
            except ImportError:
                pass
    return baseline, "baseline"


if TYPE_CHECKING:   # every build has the one interface, in _recurrence.pyi
    from fastrnn import _recurrence as recurrence
    variant: str
else:
    recurrence, variant = _pick()
