"""Shared set-up of the benchmark suite: `pytest bench/ --benchmark-only`.

One problem (weights, input, output gradient) per cell and size, shared by
all contenders, whose outputs are checked to agree before anything is timed.
Threads: FASTRNN_BENCH_THREADS (default 2) for every contender.
"""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import contenders as C  # noqa: E402

THREADS = int(os.environ.get("FASTRNN_BENCH_THREADS", "2"))


def pytest_configure(config):
    C.set_threads(THREADS)


@pytest.fixture(scope="session")
def problems():
    """(cell, size) -> dict of contenders, built and checked once."""
    cache = {}

    def get(cell, size):
        if (cell, size) not in cache:
            layer, x, dy = C.make_problem(cell, size)
            built = {"fastrnn": C.fastrnn_contender(layer, x, dy), "numpy": C.numpy_contender(cell, layer, x, dy)}
            if C.have("torch"):
                built["torch"] = C.torch_contender(cell, layer, x, dy)
                if C.have("onnxruntime"):
                    built["onnxruntime"] = C.onnxruntime_contender(cell, layer, x, THREADS)
            reference = np.asarray(built["fastrnn"]["output"]())
            for name, c in built.items():
                got = np.asarray(c["output"]()).reshape(reference.shape)
                np.testing.assert_allclose(got, reference, atol=1e-4, err_msg=f"{name} disagrees")
            cache[cell, size] = built
        return cache[cell, size]

    return get
