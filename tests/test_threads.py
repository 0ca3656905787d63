"""Results do not depend on the thread count: outputs, final states and
every gradient are bitwise identical with 1, 2 and 3 threads."""
import numpy as np
import pytest

import fastrnn
from conftest import MODES, backward_layer, make_layer, run_layer


@pytest.fixture
def restore_threads():
    """Restores the thread count, and makes every loop worth splitting: the
    sizes here are small, and by default small loops stay on one thread."""
    from fastrnn._kernels import recurrence as _recurrence
    before = fastrnn.get_num_threads()
    threshold = _recurrence.parallel_threshold(0)
    yield
    fastrnn.set_num_threads(before)
    _recurrence.parallel_threshold(threshold)


def run_everything(mode, dtype, threads, lengths, B, bidirectional):
    fastrnn.set_num_threads(threads)
    rng = np.random.default_rng(0)
    T, I, H = 40, 48, 40
    layer = make_layer(mode, I, H, dtype=dtype, num_layers=2, bidirectional=bidirectional, seed=1)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    dy = rng.standard_normal((T, B, (2 if bidirectional else 1) * H)).astype(dtype)
    y, h_n, c_n = run_layer(layer, x, lengths=lengths)
    dx, dh_0, dc_0 = backward_layer(layer, dy, np.ones_like(h_n), None if c_n is None else np.ones_like(c_n))
    results = {"y": y, "h_n": h_n, "dx": dx, "dh_0": dh_0}
    if c_n is not None:
        results.update(c_n=c_n, dc_0=dc_0)
    results.update({f"grad {k}": v for k, v in layer.grads.items()})
    layer.eval()
    results["y eval"] = run_layer(layer, x, lengths=lengths)[0]
    return results


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
# B >= 4 per thread: the threads share the rows (12, 13); fewer: the units
@pytest.mark.parametrize("B,ragged,bidirectional", [(12, False, False), (13, True, True), (5, True, True),
                                                     (7, False, True), (1, False, False)])
def test_bitwise_identical_across_thread_counts(restore_threads, mode, dtype, B, ragged, bidirectional):
    lengths = np.random.default_rng(B).integers(1, 41, size=B) if ragged else None
    runs = [run_everything(mode, dtype, n, lengths, B, bidirectional) for n in (1, 2, 3)]
    for name in runs[0]:
        for n, other in zip((2, 3), runs[1:]):
            assert np.array_equal(runs[0][name], other[name]), f"{name} differs between 1 and {n} threads"


def test_set_num_threads_checks(restore_threads):
    fastrnn.set_num_threads(3)
    assert fastrnn.get_num_threads() == 3
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        fastrnn.set_num_threads(0)
    with pytest.raises(TypeError, match="n must be an int"):
        fastrnn.set_num_threads(2.5)
    assert fastrnn.get_num_threads() == 3
