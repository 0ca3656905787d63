"""What the package promises besides its numbers: type information that
matches the code (mypy --strict, the stubs of the compiled modules checked
against them by stubtest), a light `import fastrnn`, the configuration report,
one version.  The wheel itself is built and smoke-tested by .ci/run
(tools/build_wheel.sh, tools/smoke_test.py)."""
import importlib.metadata
import io
import os
import subprocess
import sys

import pytest

import fastrnn
from fastrnn import _kernels
from conftest import require, subprocess_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.dirname(os.path.abspath(fastrnn.__file__))


def _run(args, **kwargs):
    return subprocess.run([sys.executable] + args, capture_output=True, text=True, env=subprocess_env(), **kwargs)


def test_mypy_strict_passes_on_the_package():
    require("mypy")
    # the sources (the stubs of the compiled modules are among them), wherever fastrnn is installed
    result = _run(["-m", "mypy", "--config-file", os.path.join(REPO, "pyproject.toml"),
                   os.path.join(REPO, "fastrnn")], cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout


def test_stubs_of_the_compiled_modules_match_them(tmp_path):
    require("mypy")
    modules = ["fastrnn._recurrence"]
    for variant in ("avx2", "avx512"):   # a portable build only
        try:
            importlib.import_module(f"fastrnn._recurrence_{variant}")
            modules.append(f"fastrnn._recurrence_{variant}")
        except ImportError:
            pass
    result = _run(["-m", "mypy.stubtest", "--mypy-config-file", os.path.join(REPO, "pyproject.toml"),
                   "--allowlist", os.path.join(REPO, "tools", "stubtest-allowlist.txt")] + modules,
                  cwd=tmp_path)   # not the source folder: the fastrnn under test, with its compiled modules
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_is_light():
    """`import fastrnn` loads no framework, plotting or progress-bar library
    (the demos and converters import theirs when called)."""
    heavy = ["torch", "keras", "onnx", "onnxruntime", "matplotlib", "tqdm", "scipy", "threadpoolctl", "pandas"]
    code = ("import sys, fastrnn; heavy = %r; print(' '.join(m for m in heavy if m in sys.modules))" % heavy)
    result = _run(["-c", code], cwd=os.path.dirname(REPO))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_show_config_reports_build_and_runtime():
    out = io.StringIO()
    config = fastrnn.show_config(file=out)
    text = out.getvalue()
    assert config["version"] == fastrnn.__version__
    assert config["openmp"] is True, "the tests expect an OpenMP build"
    assert config["num_threads"] == fastrnn.get_num_threads() >= 1
    assert config["kernels"] == _kernels.variant in ("native", "avx512", "avx2", "baseline")
    assert config["kernels_compiled_for"]
    assert config["compiler"] and config["cflags"]
    if sys.platform.startswith("linux"):
        assert config["openmp_runtime"] and "gomp" in os.path.basename(config["openmp_runtime"])
        assert config["cpu_features"]
    for line in ("OpenMP: on", "threads:", "kernels:", "NumPy BLAS", "CPU features"):
        assert line in text


def test_info_command_prints_the_report():
    result = _run(["-m", "fastrnn", "info"], cwd=os.path.dirname(REPO))
    assert result.returncode == 0, result.stderr
    assert f"fastrnn {fastrnn.__version__}" in result.stdout and "OpenMP: on" in result.stdout


def test_one_version():
    """The distribution's version is fastrnn.__version__ (pyproject reads it
    from there)."""
    try:
        installed = importlib.metadata.version("fastrnn")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("fastrnn is not installed (built in place)")
    if os.path.dirname(PACKAGE) == REPO:
        pytest.skip("testing the source tree: the installed metadata may be another build's")
    assert installed == fastrnn.__version__


def test_kernel_builds_agree(tmp_path):
    """A portable build's builds of the kernels (each that this CPU runs)
    give the same numbers to rounding (FMA contraction and the panel width
    differ between them)."""
    if not hasattr(_kernels, "baseline") or _kernels.recurrence is _kernels.baseline:
        pytest.skip("one build of the kernels here")
    import numpy as np
    code = ("import numpy as np, fastrnn, fastrnn._kernels as k; print(k.variant);"
            "x = np.random.default_rng(0).standard_normal((20, 5, 8)).astype('f');"
            "l = fastrnn.GRU(8, 40, seed=1); y, _ = l(x); np.save(__import__('sys').argv[1], y)")
    outs = {}
    for kernels in ("avx512", "avx2", "baseline"):
        path = str(tmp_path / f"kernels_{kernels}.npy")
        env = dict(subprocess_env(), FASTRNN_KERNELS=kernels)
        ran = subprocess.run([sys.executable, "-c", code, path], check=True, env=env, cwd=tmp_path,
                             capture_output=True, text=True).stdout.strip()
        outs[ran] = np.load(path)
    assert _kernels.variant in outs and "baseline" in outs
    for variant, y in outs.items():
        np.testing.assert_allclose(y, outs["baseline"], rtol=0, atol=1e-5, err_msg=variant)
