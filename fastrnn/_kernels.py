"""The compiled kernels (fastrnn/_recurrence.pyx), in the build that suits
this CPU: every other module reaches them as `fastrnn._kernels.recurrence`.

A build from source compiles them once, for the machine it runs on
(-march=native).  A portable build (the wheels) compiles them twice: for any
x86-64 CPU, and for x86-64-v3 (AVX2 and FMA, 2013 on), imported here when the
CPU has them.  FASTRNN_KERNELS=baseline forces the first (for tests)."""
from __future__ import annotations

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


def _pick() -> tuple[ModuleType, str]:
    # a build for this machine only (not portable) has one module, and a
    # _recurrence_avx2 left over from an earlier portable build is stale
    if not _portable_build():
        return baseline, "native"
    if os.environ.get("FASTRNN_KERNELS", "") != "baseline" and baseline.cpu_has_avx2_fma():
        try:
            from fastrnn import _recurrence_avx2
        except ImportError:
            pass
        else:
            return _recurrence_avx2, "avx2"
    return baseline, "baseline"


if TYPE_CHECKING:   # both builds have the one interface, in _recurrence.pyi
    from fastrnn import _recurrence as recurrence
    variant: str
else:
    recurrence, variant = _pick()
