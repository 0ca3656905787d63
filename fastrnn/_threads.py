"""Thread count of the kernels, BLAS thread control, and the build/runtime report."""
from __future__ import annotations

import ctypes
import os
import platform
import sys
import threading

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


# --- BLAS --------------------------------------------------------------------
# The kernels call BLAS from inside OpenMP regions, one call per tile, so BLAS
# must not start threads of its own then.  scipy.linalg.cython_blas calls the
# BLAS that scipy links; threadpoolctl finds it among the loaded libraries and
# we keep the raw addresses of its get/set thread-count functions, so that
# pinning costs two C calls per kernel call.

_blas_lock = threading.Lock()
_blas_found: list[dict] = []

_SYMBOLS = {
    "openblas": ("openblas_get_num_threads", "openblas_set_num_threads"),
    "blis": ("bli_thread_get_num_threads", "bli_thread_set_num_threads"),
    "mkl": ("MKL_Get_Max_Threads", "MKL_Set_Num_Threads"),
}


def _find_function(lib: ctypes.CDLL, name: str):
    for prefix in ("", "scipy_"):
        for suffix in ("", "64_", "_64"):
            try:
                return getattr(lib, prefix + name + suffix)
            except AttributeError:
                continue
    return None


def _scipy_blas_libraries() -> list[dict]:
    import scipy.linalg.cython_blas  # noqa: F401  (loads scipy's BLAS)
    from threadpoolctl import threadpool_info

    blas = [info for info in threadpool_info() if info.get("user_api") == "blas"]
    scipy_dir = os.path.dirname(os.path.dirname(os.path.abspath(scipy.linalg.cython_blas.__file__)))
    site = os.path.dirname(scipy_dir)
    # pip wheels vendor scipy's BLAS next to scipy (scipy.libs, scipy/.dylibs);
    # otherwise (conda, system packages) every BLAS found may be the one
    own = [info for info in blas
           if os.path.abspath(info["filepath"]).startswith((scipy_dir, os.path.join(site, "scipy.libs")))]
    return own or blas


def register_blas_libraries() -> None:
    """Find scipy's BLAS and give the kernels its thread-count functions."""
    from fastrnn import _recurrence

    with _blas_lock:
        functions = []
        found = []
        try:
            libraries = _scipy_blas_libraries()
        except Exception:  # threadpoolctl could not inspect the process
            libraries = []
        for info in libraries:
            symbols = _SYMBOLS.get(info.get("internal_api"))
            if symbols is None:
                continue
            try:
                lib = ctypes.CDLL(info["filepath"])
            except OSError:
                continue
            get, set_ = (_find_function(lib, name) for name in symbols)
            if get is None or set_ is None:
                continue
            functions.append((ctypes.cast(get, ctypes.c_void_p).value,
                              ctypes.cast(set_, ctypes.c_void_p).value))
            found.append(info)
        _blas_found[:] = found
        _recurrence.register_blas(functions)


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
    compiler and flags, OpenMP, the BLAS libraries and their threads, the
    thread count, CPU features."""
    from fastrnn import __version__, _recurrence
    try:
        from fastrnn._build_info import BUILD_INFO
    except ImportError:  # built by something other than setup.py
        BUILD_INFO = {}

    if not _blas_found:
        register_blas_libraries()
    from threadpoolctl import threadpool_info

    threads_now = {info["filepath"]: info.get("num_threads") for info in threadpool_info()}
    config = {
        "version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "compiler": BUILD_INFO.get("compiler"),
        "cflags": BUILD_INFO.get("cflags"),
        "openmp": _recurrence.openmp_enabled(),
        "openmp_max_threads": _recurrence.openmp_max_threads(),
        "num_threads": get_num_threads(),
        "blas": [
            {
                "library": info.get("internal_api"),
                "version": info.get("version"),
                "threading": info.get("threading_layer"),
                "architecture": info.get("architecture"),
                "num_threads": threads_now.get(info["filepath"], info.get("num_threads")),
                "filepath": info["filepath"],
            }
            for info in _blas_found
        ],
        "cpu_features": _cpu_features(),
    }
    out = file if file is not None else sys.stdout
    print(f"fastrnn {config['version']} (Python {config['python']}, {config['platform']})", file=out)
    print(f"  compiler: {config['compiler']}  flags: {config['cflags']}", file=out)
    print(f"  OpenMP: {'on' if config['openmp'] else 'OFF (single-threaded build)'}", file=out)
    print(f"  threads: {config['num_threads']} (fastrnn.set_num_threads)", file=out)
    for blas in config["blas"]:
        print(f"  BLAS: {blas['library']} {blas['version']} ({blas['threading']}, "
              f"{blas['architecture']}, {blas['num_threads']} threads outside fastrnn calls) "
              f"{blas['filepath']}", file=out)
    if not config["blas"]:
        print("  BLAS: not identified (its threads cannot be held to one inside fastrnn calls)", file=out)
    print(f"  CPU features: {' '.join(config['cpu_features']) or 'unknown'}", file=out)
    return config
