"""Thread count of the kernels, and the build/runtime report."""
from __future__ import annotations

import os
import platform
import sys

__all__ = ["set_num_threads", "get_num_threads", "show_config"]


def _default_num_threads() -> int:
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_num_threads = _default_num_threads()


def set_num_threads(n: int) -> None:
    """Number of threads the kernels use (OpenMP over the batch and over the
    tiles of the big matrix products).  Results do not depend on it."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, (int,)) and not hasattr(n, "__index__"):
        raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__}")
    n = int(n)
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    _num_threads = n


def get_num_threads() -> int:
    """Number of threads the kernels use: by default the usable cores, or
    OMP_NUM_THREADS when set."""
    return _num_threads


# --- report ----------------------------------------------------------------


def _cpu_features() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    wanted = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl")
                    return [flag for flag in wanted if flag in flags]
    except OSError:
        pass
    return []


def show_config(file=None) -> dict:
    """Print and return how fastrnn was built and what it runs with: version,
    compiler and flags, OpenMP, thread count, CPU features."""
    from fastrnn import __version__, _recurrence
    try:
        from fastrnn._build_info import BUILD_INFO
    except ImportError:  # built by something other than setup.py
        BUILD_INFO = {}

    config = {
        "version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "compiler": BUILD_INFO.get("compiler"),
        "cflags": BUILD_INFO.get("cflags"),
        "openmp": _recurrence.openmp_enabled(),
        "openmp_max_threads": _recurrence.openmp_max_threads(),
        "num_threads": get_num_threads(),
        "matrix_products": "fastrnn's packed kernels (csrc/rgemm.h); no BLAS",
        "cpu_features": _cpu_features(),
    }
    out = file if file is not None else sys.stdout
    print(f"fastrnn {config['version']} (Python {config['python']}, {config['platform']})", file=out)
    print(f"  compiler: {config['compiler']}  flags: {config['cflags']}", file=out)
    print(f"  OpenMP: {'on' if config['openmp'] else 'OFF (single-threaded build)'}", file=out)
    print(f"  threads: {config['num_threads']} (fastrnn.set_num_threads)", file=out)
    print(f"  matrix products: {config['matrix_products']}", file=out)
    print(f"  CPU features: {' '.join(config['cpu_features']) or 'unknown'}", file=out)
    return config
