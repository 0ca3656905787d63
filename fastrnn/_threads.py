"""Thread count of the kernels, and the build/runtime report."""
from __future__ import annotations

import os
import platform
import sys
from typing import IO, Any

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


def _openmp_runtime() -> str | None:
    """Path of the OpenMP runtime loaded in this process (Linux: from
    /proc/self/maps; a wheel carries its own libgomp, in fastrnn.libs)."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1] if len(line.split()) >= 6 else ""
                if any(name in os.path.basename(path) for name in ("libgomp", "libomp", "libiomp")):
                    return path
    except OSError:
        pass
    return None


def _numpy_blas() -> dict[str, Any]:
    """NumPy's BLAS (what fastrnn.nn.Linear and the losses use through
    numpy.matmul), with its threading when threadpoolctl is installed."""
    import numpy as np
    info: dict[str, Any] = {}
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info = {"name": blas.get("name"), "version": blas.get("version")}
    except Exception:  # older NumPy: no mode="dicts"
        pass
    try:
        import threadpoolctl
    except ImportError:
        return info
    for pool in threadpoolctl.threadpool_info():
        if pool.get("user_api") == "blas":
            info.update(internal_api=pool.get("internal_api"), num_threads=pool.get("num_threads"),
                        threading_layer=pool.get("threading_layer"))
            break
    return info


def show_config(file: IO[str] | None = None) -> dict[str, Any]:
    """Print and return how fastrnn was built and what it runs with: version,
    compiler and flags, kernel build in use, OpenMP and its runtime, thread
    count, matrix products and NumPy's BLAS, CPU features."""
    from fastrnn import __version__
    from fastrnn._kernels import recurrence as _recurrence, variant
    try:
        from fastrnn._build_info import BUILD_INFO
    except ImportError:  # built by something other than setup.py
        BUILD_INFO = {}

    cflags = BUILD_INFO.get(f"cflags_{variant}", BUILD_INFO.get("cflags"))
    config: dict[str, Any] = {
        "version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "compiler": BUILD_INFO.get("compiler"),
        "cflags": cflags,
        "kernels": variant,
        "kernels_compiled_for": _recurrence.compiled_for(),
        "openmp": _recurrence.openmp_enabled(),
        "openmp_runtime": _openmp_runtime(),
        "openmp_max_threads": _recurrence.openmp_max_threads(),
        "num_threads": get_num_threads(),
        "matrix_products": "fastrnn's packed kernels (csrc/rgemm.h, "
                           f"{'wide' if _recurrence.wide_kernels() else 'narrow'} set, groups of panels up to "
                           f"{_recurrence.group_bytes() // 1024} KB), no BLAS",
        "numpy_blas": _numpy_blas(),
        "cpu_features": _cpu_features(),
    }
    out = file if file is not None else sys.stdout
    blas = config["numpy_blas"]
    blas_text = " ".join(str(blas[k]) for k in ("name", "version") if blas.get(k)) or "unknown"
    if blas.get("num_threads") is not None:
        blas_text += f", {blas['num_threads']} threads ({blas.get('threading_layer')})"
    openmp = "on" if config["openmp"] else "OFF (single-threaded build)"
    if config["openmp"] and config["openmp_runtime"]:
        openmp += f", runtime {config['openmp_runtime']}"
    print(f"fastrnn {config['version']} (Python {config['python']}, {config['platform']})", file=out)
    print(f"  compiler: {config['compiler']}  flags: {config['cflags']}", file=out)
    print(f"  kernels: {config['kernels']} build, compiled for {config['kernels_compiled_for']}", file=out)
    print(f"  OpenMP: {openmp}", file=out)
    print(f"  threads: {config['num_threads']} (fastrnn.set_num_threads)", file=out)
    print(f"  matrix products: {config['matrix_products']}", file=out)
    print(f"  NumPy BLAS (nn.Linear, losses): {blas_text}", file=out)
    print(f"  CPU features: {' '.join(config['cpu_features']) or 'unknown'}", file=out)
    return config
