"""clip_grad_norm and clip_grad_value: PyTorch's semantics (the values
themselves are compared with PyTorch in test_torch_parity.py)."""
import math

import numpy as np
import pytest

import fastrnn


def test_norm_is_joint_and_scale_capped():
    a, b = np.array([3.0, 0.0]), np.array([[0.0], [4.0]])
    total = fastrnn.clip_grad_norm({"a": a, "b": b}, max_norm=1.0)
    assert total == pytest.approx(5.0)
    scale = 1.0 / (5.0 + 1e-6)
    np.testing.assert_allclose(a, [3 * scale, 0])
    np.testing.assert_allclose(b, [[0], [4 * scale]])
    # under the limit: untouched, returns the norm
    c = np.array([0.3, 0.4], dtype=np.float32)
    assert fastrnn.clip_grad_norm([c], max_norm=10.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(c, np.array([0.3, 0.4], dtype=np.float32))
    assert c.dtype == np.float32


def test_inf_norm_and_other_orders():
    g = [np.array([1.0, -7.0]), np.array([2.0])]
    assert fastrnn.clip_grad_norm(g, 100.0, norm_type=math.inf) == 7.0
    assert fastrnn.clip_grad_norm(g, 100.0, norm_type="inf") == 7.0
    assert fastrnn.clip_grad_norm(g, 100.0, norm_type=1) == pytest.approx(10.0)


def test_accepts_layer_grads_and_iterables_of_dicts():
    layers = [fastrnn.LSTM(3, 4, seed=0), fastrnn.GRU(3, 4, seed=1)]
    for layer in layers:
        y, _ = layer(np.ones((5, 2, 3)))
        layer.backward(np.ones_like(y) * 100)
    before = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for l in layers for g in l.grads.values()))
    total = fastrnn.clip_grad_norm([l.grads for l in layers], max_norm=1.0)
    assert total == pytest.approx(before, rel=1e-6)
    after = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for l in layers for g in l.grads.values()))
    assert after == pytest.approx(1.0, rel=1e-5)
    fastrnn.clip_grad_value(layers[0].grads, 1e-3)
    assert max(np.abs(g).max() for g in layers[0].grads.values()) <= 1e-3


def test_nonfinite():
    g = [np.array([1.0, np.nan])]
    with pytest.raises(RuntimeError, match=r"non-finite"):
        fastrnn.clip_grad_norm(g, 1.0, error_if_nonfinite=True)
    np.testing.assert_array_equal(g[0], [1.0, np.nan])  # nothing clipped on error
    total = fastrnn.clip_grad_norm(g, 1.0)  # PyTorch: the NaN spreads
    assert math.isnan(total) and np.isnan(g[0]).all()
    h = [np.array([np.inf, 1.0])]
    assert fastrnn.clip_grad_norm(h, 1.0) == math.inf
    np.testing.assert_array_equal(h[0], [np.nan, 0.0])  # inf * 0 = nan, as PyTorch


def test_empty_and_bad_arguments():
    assert fastrnn.clip_grad_norm({}, 1.0) == 0.0
    with pytest.raises(TypeError, match=r"every gradient must be a floating-point ndarray.*list"):
        fastrnn.clip_grad_norm([[1.0, 2.0]], 1.0)
    with pytest.raises(TypeError, match=r"every gradient must be a floating-point ndarray.*int64"):
        fastrnn.clip_grad_value([np.array([1, 2])], 1.0)
    with pytest.raises(TypeError, match=r"grads must be a dict of arrays"):
        fastrnn.clip_grad_norm(3.0, 1.0)
    with pytest.raises(ValueError, match=r"max_norm must be >= 0.0, got -1.0"):
        fastrnn.clip_grad_norm([np.ones(2)], -1.0)
    with pytest.raises(ValueError, match=r"norm_type must be > 0"):
        fastrnn.clip_grad_norm([np.ones(2)], 1.0, norm_type=0)
    with pytest.raises(TypeError, match=r"clip_value must be a real number, got str"):
        fastrnn.clip_grad_value([np.ones(2)], "1")
