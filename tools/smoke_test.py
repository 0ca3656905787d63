"""Smoke check of an installed fastrnn (a wheel, typically): import it, run
the forward and backward of every cell on small inputs against values
computed here with NumPy (forward) and by finite differences (backward),
check thread-count independence and what show_config() reports.

    python tools/smoke_test.py                  # any installation
    python tools/smoke_test.py --wheel          # also: OpenMP runtime carried by the wheel,
                                                # and no C compiler on PATH

Run it from outside the source tree, so that `import fastrnn` finds the
installed package.  Needs NumPy only.  Exits non-zero on any failure.  A
portable build (the wheels) carries three builds of the kernels (AVX-512,
AVX2, baseline) and runs the widest the CPU has; the check runs again in a
child process with the next narrower one (FASTRNN_KERNELS), and so on.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from typing import Any

import numpy as np

import fastrnn

T, B, I, H = 4, 3, 5, 6


def sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def reference_forward(mode: str, x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    """One layer, one direction, zero initial state, float64: y (T, B, H)."""
    w_ih, w_hh, b_ih, b_hh = p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"], p["bias_hh_l0"]
    h = np.zeros((x.shape[1], H))
    c = np.zeros_like(h)
    ys = []
    for x_t in x:
        gi, gh = x_t @ w_ih.T + b_ih, h @ w_hh.T + b_hh
        if mode == "RNN_TANH":
            h = np.tanh(gi + gh)
        elif mode == "RNN_RELU":
            h = np.maximum(gi + gh, 0.0)
        elif mode == "LSTM":
            i, f, g, o = np.split(gi + gh, 4, axis=1)
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
            h = sigmoid(o) * np.tanh(c)
        elif mode == "GRU":
            r = sigmoid(gi[:, :H] + gh[:, :H])
            z = sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
            n = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
            h = (1 - z) * n + z * h
        else:  # GRU, reset_after=False: the reset multiplies h before its product
            r = sigmoid(gi[:, :H] + gh[:, :H])
            z = sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
            n = np.tanh(gi[:, 2 * H:] + (r * h) @ w_hh[2 * H:].T + b_hh[2 * H:])
            h = (1 - z) * n + z * h
        ys.append(h)
    return np.stack(ys)


def make_layer(mode: str) -> Any:
    kwargs = dict(dtype=np.float64, seed=1)
    if mode.startswith("RNN"):
        return fastrnn.RNN(I, H, nonlinearity="tanh" if mode == "RNN_TANH" else "relu", **kwargs)
    if mode == "LSTM":
        return fastrnn.LSTM(I, H, **kwargs)
    return fastrnn.GRU(I, H, reset_after=mode == "GRU", **kwargs)


def check_cell(mode: str) -> list[str]:
    failures = []
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I))
    w = rng.standard_normal((T, B, H))      # loss = sum(w * y)
    layer = make_layer(mode)
    y = layer(x)[0]
    expected = reference_forward(mode, x, layer.params)
    err = float(np.max(np.abs(y - expected)))
    if err > 1e-12:
        failures.append(f"{mode}: forward differs from NumPy by {err:.2e}")
    dx = layer.backward(w)[0]
    grads = {k: v.copy() for k, v in layer.grads.items()}

    def loss() -> float:
        return float(np.sum(w * reference_forward(mode, x, layer.params)))

    eps = 1e-6
    worst = 0.0
    checks = [(x, dx, "x")] + [(layer.params[k], grads[k], k) for k in grads]
    for array, grad, name in checks:
        for idx in [(0,) * array.ndim, tuple(s - 1 for s in array.shape), tuple(s // 2 for s in array.shape)]:
            old = array[idx]
            array[idx] = old + eps
            up = loss()
            array[idx] = old - eps
            down = loss()
            array[idx] = old
            numeric = (up - down) / (2 * eps)
            worst = max(worst, abs(numeric - grad[idx]) / max(1.0, abs(numeric)))
    if worst > 1e-6:
        failures.append(f"{mode}: backward differs from finite differences by {worst:.2e} (relative)")
    return failures


def check_threads() -> list[str]:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((50, 37, 16)).astype(np.float32)
    outputs = []
    default = fastrnn.get_num_threads()
    for n in (1, 2, 3):
        fastrnn.set_num_threads(n)
        lstm = fastrnn.LSTM(16, 64, seed=3)
        y, _ = lstm(x)
        dx, _ = lstm.backward(np.ones_like(y))
        outputs.append((y, dx, lstm.grads["weight_hh_l0"].copy()))
    fastrnn.set_num_threads(default)
    same = all(np.array_equal(a, b) for other in outputs[1:] for a, b in zip(outputs[0], other))
    return [] if same else ["results differ between 1, 2 and 3 threads"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", action="store_true",
                        help="also check that the OpenMP runtime is the one the wheel carries and that no "
                             "C compiler is on PATH")
    args = parser.parse_args()

    print(f"fastrnn {fastrnn.__version__} from {os.path.dirname(fastrnn.__file__)}")
    failures: list[str] = []
    for mode in ("RNN_TANH", "RNN_RELU", "LSTM", "GRU", "GRU_RESET_BEFORE"):
        failures += check_cell(mode)
    failures += check_threads()
    config = fastrnn.show_config()
    if not config["openmp"]:
        failures.append("show_config: built without OpenMP")
    if config["num_threads"] < 1:
        failures.append(f"show_config: num_threads = {config['num_threads']}")
    if args.wheel:
        compilers = [c for c in ("gcc", "cc", "clang", "g++") if shutil.which(c)]
        if compilers:
            failures.append(f"--wheel: a C compiler is on PATH ({', '.join(compilers)}): not the test asked for")
        runtime = config["openmp_runtime"] or ""
        if sys.platform.startswith("linux") and "fastrnn.libs" not in runtime:
            failures.append(f"--wheel: the OpenMP runtime in use is {runtime or 'unknown'}, not the wheel's own "
                            "(fastrnn.libs/)")

    narrower = {"avx512": "avx2", "avx2": "baseline"}.get(config["kernels"])
    if narrower:   # the wheel's other builds of the kernels, on this CPU too
        env = dict(os.environ, FASTRNN_KERNELS=narrower)
        print(f"\n== again with FASTRNN_KERNELS={narrower}", flush=True)
        if subprocess.run([sys.executable, __file__] + sys.argv[1:], env=env).returncode != 0:
            failures.append(f"the {narrower} build of the kernels failed its smoke check")

    for failure in failures:
        print(f"FAIL: {failure}")
    print("smoke check:", "FAILED" if failures else "passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
