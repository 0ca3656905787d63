"""The kernels' own sigmoid, tanh and relu against float64 references: the
float32 versions (csrc/activations.h, written to vectorise) are within a few
ulp; NaN propagates; large and infinite inputs saturate exactly."""
import numpy as np
import pytest
from scipy.special import expit

from fastrnn._kernels import recurrence as _recurrence

ULP = 2.0 ** -24   # unit roundoff of float32 (half an ulp at 1)


def run(name, x):
    out = np.empty_like(x)
    _recurrence.activation(name, x, out)
    return out


@pytest.fixture(scope="module")
def grid():
    # dense in [-20, 20], then sparse out to the float range
    return np.unique(np.concatenate([np.linspace(-20, 20, 2_000_001), np.geomspace(20, 3e38, 2000),
                                     -np.geomspace(20, 3e38, 2000), [0.0, 1e-30, -1e-30, 1e-8]])).astype(np.float32)


def test_sigmoid_float32(grid):
    want = expit(grid.astype(np.float64))
    got = run("sigmoid", grid).astype(np.float64)
    normal = want > np.finfo(np.float32).tiny
    rel = np.abs(got - want)[normal] / want[normal]
    assert rel.max() <= 2 * 2 * ULP, rel.max() / (2 * ULP)
    assert np.abs(got - want).max() <= 2e-38 + 1e-7   # tiny outputs: absolute
    assert (got >= 0).all() and (got <= 1).all()


def test_tanh_float32(grid):
    want = np.tanh(grid.astype(np.float64))
    got = run("tanh", grid).astype(np.float64)
    assert np.abs(got - want).max() <= 8e-8
    nonzero = want != 0
    assert (np.abs(got - want)[nonzero] / np.abs(want[nonzero])).max() <= 1.4e-7
    assert np.abs(got).max() <= 1.0
    np.testing.assert_array_equal(np.sign(got), np.sign(want))


def test_special_values():
    x = np.array([np.nan, np.inf, -np.inf, 1e4, -1e4, 0.0], dtype=np.float32)
    s, t, r = run("sigmoid", x), run("tanh", x), run("relu", x)
    assert np.isnan(s[0]) and np.isnan(t[0]) and np.isnan(r[0])
    np.testing.assert_array_equal(s[[1, 3, 5]], [1, 1, 0.5])
    # far below zero sigmoid stops at exp(-87), the smallest value it returns,
    # rather than going through subnormal numbers (slow) to 0
    assert 0 < s[2] == s[4] <= np.exp(-87.0) * 1.0001
    np.testing.assert_array_equal(t[1:], [1, -1, 1, -1, 0])
    np.testing.assert_array_equal(r[1:], [np.inf, 0, 1e4, 0, 0])
    tiny = run("sigmoid", np.linspace(-200, -80, 1000).astype(np.float32))
    assert (tiny >= np.finfo(np.float32).tiny).all()


def test_float64_versions_are_libm():
    x = np.linspace(-30, 30, 10001)
    np.testing.assert_allclose(run("sigmoid", x), expit(x), rtol=1e-15, atol=0)
    np.testing.assert_allclose(run("tanh", x), np.tanh(x), rtol=1e-15, atol=0)
