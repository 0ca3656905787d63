"""Bad input gets a clear error (ValueError or TypeError naming the argument,
the expected and the received value) and leaves the layer as it was."""
import numpy as np
import pytest

import fastrnn
from conftest import MODES, backward_layer, make_cell, make_layer, run_layer


def snapshot(module):
    return ({k: v.copy() for k, v in module.params.items()}, {k: v.copy() for k, v in module.grads.items()})


def assert_unchanged(module, snap):
    params, grads = snap
    for k in params:
        np.testing.assert_array_equal(module.params[k], params[k])
        np.testing.assert_array_equal(module.grads[k], grads[k])


@pytest.fixture(params=MODES)
def trained_layer(request):
    """A 2-layer bidirectional layer (I=3, H=4) with non-zero grads, T=5, B=2."""
    mode = request.param
    layer = make_layer(mode, 3, 4, num_layers=2, bidirectional=True, seed=0)
    run_layer(layer, np.ones((5, 2, 3)))
    backward_layer(layer, np.ones((5, 2, 8)), None)
    return layer


BAD_FORWARD = [
    # (description, kwargs for forward, exception, message pattern)
    ("x 1-D", dict(x=np.ones(3)), ValueError, r"x must be 3-D \(T, B, input_size\).*got 1-D"),
    ("x 4-D", dict(x=np.ones((5, 2, 3, 1))), ValueError, r"got 4-D with shape \(5, 2, 3, 1\)"),
    ("feature size", dict(x=np.ones((5, 2, 7))), ValueError, r"input_size=3, got 7"),
    ("empty batch", dict(x=np.ones((5, 0, 3))), ValueError, r"at least one step of one sequence"),
    ("int x", dict(x=np.ones((5, 2, 3), dtype=np.int64)), TypeError, r"x must be a floating-point array.*int64"),
    ("bool x", dict(x=np.ones((5, 2, 3), dtype=bool)), TypeError, r"x must be a floating-point.*bool"),
    ("complex x", dict(x=np.ones((5, 2, 3), dtype=complex)), TypeError, r"x must be a floating-point.*complex128"),
    ("object x", dict(x=np.array([[[object()] * 3] * 2] * 5)), TypeError, r"x must be a floating-point.*object"),
    ("lengths shape", dict(lengths=np.array([5, 5, 5])), ValueError, r"lengths must have shape \(2,\).*got \(3,\)"),
    ("lengths 0", dict(lengths=np.array([5, 0])), ValueError, r"lengths must be between 1 and .*T=5, got 0"),
    ("lengths > T", dict(lengths=np.array([6, 2])), ValueError, r"lengths must be between 1 and .*T=5, got 6"),
    ("float lengths", dict(lengths=np.array([5.0, 2.0])), TypeError, r"lengths must be an integer array, got dtype float64"),
    ("unbatched lengths", dict(x=np.ones((5, 3)), lengths=np.array([5])), ValueError, r"lengths needs batched input"),
]


@pytest.mark.parametrize("what,kwargs,exc,pattern", BAD_FORWARD, ids=[b[0] for b in BAD_FORWARD])
def test_bad_forward_arguments(trained_layer, what, kwargs, exc, pattern):
    layer = trained_layer
    snap = snapshot(layer)
    args = dict(x=np.ones((5, 2, 3)), hx=None, lengths=None)
    args.update(kwargs)
    with pytest.raises(exc, match=pattern):
        layer(args["x"], args["hx"], lengths=args["lengths"])
    assert_unchanged(layer, snap)


def test_bad_states(trained_layer):
    layer = trained_layer
    snap = snapshot(layer)
    x = np.ones((5, 2, 3))
    good = np.zeros((4, 2, 4))
    if layer.mode == "LSTM":
        cases = [(good, TypeError, r"hx for LSTM must be a tuple \(h_0, c_0\), got ndarray"),
                 ((good,), TypeError, r"must be a tuple \(h_0, c_0\)"),
                 ((np.zeros((4, 3, 4)), good), ValueError, r"hx\[0\] \(h_0\) must have shape \(4, 2, 4\).*got \(4, 3, 4\)"),
                 ((good, np.zeros((2, 2, 4))), ValueError, r"hx\[1\] \(c_0\) must have shape \(4, 2, 4\).*got \(2, 2, 4\)"),
                 ((good, good.astype(np.int32)), TypeError, r"hx\[1\] \(c_0\) must be a floating-point array.*int32")]
    else:
        cases = [((good, good), TypeError, r"hx for \w+ must be an array h_0, got tuple"),
                 (np.zeros((4, 2, 5)), ValueError, r"hx \(h_0\) must have shape \(4, 2, 4\).*got \(4, 2, 5\)"),
                 (np.zeros((2, 4)), ValueError, r"hx \(h_0\) must have shape \(4, 2, 4\).*got \(2, 4\)"),
                 (good.astype(complex), TypeError, r"hx \(h_0\) must be a floating-point array.*complex")]
    for hx, exc, pattern in cases:
        with pytest.raises(exc, match=pattern):
            layer(x, hx)
    # unbatched input wants unbatched states
    with pytest.raises(ValueError, match=r"must have shape \(4, 4\) \(num_layers \* num_directions, hidden_size "
                                         r"for unbatched input\), got \(4, 2, 4\)"):
        layer(np.ones((5, 3)), (good, good) if layer.mode == "LSTM" else good)
    assert_unchanged(layer, snap)


def test_bad_backward(trained_layer):
    layer = trained_layer
    # no forward since the last backward
    with pytest.raises(ValueError, match=r"no stored forward pass.*forward has not been called since the last backward"):
        backward_layer(layer, np.ones((5, 2, 8)), None)
    y, h_n, _ = run_layer(layer, np.ones((5, 2, 3)))
    snap = snapshot(layer)
    for dy, exc, pattern in [(np.ones((5, 2, 4)), ValueError, r"dy must have shape \(5, 2, 8\) \(the shape of the output y\), got \(5, 2, 4\)"),
                             (np.ones((2, 5, 8)), ValueError, r"dy must have shape \(5, 2, 8\)"),
                             (np.ones((5, 2, 8), dtype=np.int8), TypeError, r"dy must be a floating-point array.*int8")]:
        with pytest.raises(exc, match=pattern):
            backward_layer(layer, dy, None)
    with pytest.raises(ValueError, match=r"dh_n must have shape \(4, 2, 4\).*got \(4, 2, 3\)"):
        backward_layer(layer, None, np.ones((4, 2, 3)))
    if layer.mode == "LSTM":
        with pytest.raises(ValueError, match=r"dc_n must have shape \(4, 2, 4\)"):
            layer.backward(None, None, np.ones((1, 2, 4)))
    assert_unchanged(layer, snap)
    # a failed backward keeps the forward: the right call still works
    backward_layer(layer, np.ones_like(y), np.ones_like(h_n))
    # eval mode keeps nothing
    layer.eval()
    run_layer(layer, np.ones((5, 2, 3)))
    with pytest.raises(ValueError, match=r"no stored forward pass.*eval mode"):
        backward_layer(layer, np.ones((5, 2, 8)), None)


@pytest.mark.parametrize("cls", [fastrnn.RNN, fastrnn.LSTM, fastrnn.GRU, fastrnn.RNNCell, fastrnn.LSTMCell,
                                 fastrnn.GRUCell])
def test_bad_constructor_arguments(cls):
    with pytest.raises(ValueError, match=r"input_size must be >= 1, got 0"):
        cls(0, 4)
    with pytest.raises(ValueError, match=r"hidden_size must be >= 1, got -2"):
        cls(3, -2)
    with pytest.raises(TypeError, match=r"hidden_size must be an int, got float 4.0"):
        cls(3, 4.0)
    with pytest.raises(TypeError, match=r"input_size must be an int, got bool"):
        cls(True, 4)
    with pytest.raises(TypeError, match=r"dtype must be float32 or float64, got float16"):
        cls(3, 4, dtype=np.float16)
    with pytest.raises(TypeError, match=r"dtype must be float32 or float64, got int64"):
        cls(3, 4, dtype=np.int64)
    with pytest.raises(TypeError, match=r"seed must be None, an int or a numpy.random.Generator, got str"):
        cls(3, 4, seed="1")
    if cls in (fastrnn.RNN, fastrnn.LSTM, fastrnn.GRU):
        with pytest.raises(ValueError, match=r"num_layers must be >= 1, got 0"):
            cls(3, 4, num_layers=0)
        with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\], got 1.5"):
            cls(3, 4, num_layers=2, dropout=1.5)
        with pytest.raises(TypeError, match=r"bidirectional must be a bool, got str"):
            cls(3, 4, bidirectional="yes")
        with pytest.warns(UserWarning, match="num_layers=1 it does nothing"):
            cls(3, 4, dropout=0.5)
    if cls in (fastrnn.RNN, fastrnn.RNNCell):
        with pytest.raises(ValueError, match=r"nonlinearity must be 'tanh' or 'relu', got 'sigmoid'"):
            cls(3, 4, nonlinearity="sigmoid")


def test_load_state_dict_checks():
    layer = fastrnn.GRU(3, 4, num_layers=2)
    snap = snapshot(layer)
    good = layer.state_dict()
    bad_shape = dict(good, weight_hh_l1=np.zeros((12, 5)))
    with pytest.raises(ValueError, match=r"weight_hh_l1 must have shape \(12, 4\), got \(12, 5\)"):
        layer.load_state_dict(bad_shape)
    missing = {k: v for k, v in good.items() if k != "bias_ih_l0"}
    with pytest.raises(ValueError, match=r"missing keys \['bias_ih_l0'\]"):
        layer.load_state_dict(missing)
    with pytest.raises(ValueError, match=r"unexpected keys \['weight_ih_l2'\]"):
        layer.load_state_dict(dict(good, weight_ih_l2=np.zeros((12, 4))))
    with pytest.raises(TypeError, match=r"weight_ih_l0 must be a real numeric array, got dtype complex128"):
        layer.load_state_dict(dict(good, weight_ih_l0=np.zeros((12, 3), dtype=complex)))
    with pytest.raises(TypeError, match=r"state_dict must be a mapping"):
        layer.load_state_dict([1, 2])
    assert_unchanged(layer, snap)
    # lists and other precisions load, converted to the layer's dtype
    new = {k: (v * 2).astype(np.float64).tolist() for k, v in good.items()}
    layer.load_state_dict(new)
    for k, v in layer.state_dict().items():
        assert v.dtype == np.float32
        np.testing.assert_allclose(v, np.asarray(new[k], dtype=np.float32))


@pytest.mark.parametrize("mode", MODES)
def test_cell_bad_arguments(mode):
    cell = make_cell(mode, 3, 4, seed=0)
    snap = snapshot(cell)
    with pytest.raises(ValueError, match=r"x must be 2-D \(batch, input_size\) or 1-D .*got 3-D"):
        cell(np.ones((1, 2, 3)))
    with pytest.raises(ValueError, match=r"input_size=3, got 5"):
        cell(np.ones((2, 5)))
    with pytest.raises(TypeError, match=r"x must be a floating-point array.*int64"):
        cell(np.ones((2, 3), dtype=np.int64))
    if mode == "LSTM":
        with pytest.raises(TypeError, match=r"hx for LSTMCell must be a tuple \(h, c\)"):
            cell(np.ones((2, 3)), np.zeros((2, 4)))
        with pytest.raises(ValueError, match=r"hx\[1\] \(c\) must have shape \(2, 4\)"):
            cell(np.ones((2, 3)), (np.zeros((2, 4)), np.zeros((3, 4))))
    else:
        with pytest.raises(ValueError, match=r"h must have shape \(2, 4\)"):
            cell(np.ones((2, 3)), np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"no stored forward step.*every forward step has had its backward"):
        cell.backward(np.ones((2, 4)))
    cell(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"dh must have shape \(2, 4\)"):
        cell.backward(np.ones((3, 4)))
    assert_unchanged(cell, snap)
    cell.backward(np.ones((2, 4)))
    cell.eval()
    cell(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"eval mode"):
        cell.backward(np.ones((2, 4)))


@pytest.mark.parametrize("mode", MODES)
def test_nan_propagates(mode):
    layer = make_layer(mode, 3, 4, dtype=np.float32, bidirectional=True, seed=0)
    x = np.ones((6, 2, 3), dtype=np.float32)
    x[2, 0, 1] = np.nan
    y, h_n, _ = run_layer(layer, x)
    # sequence 0 is NaN from step 2 on (forward direction) and up to step 2 (reverse); sequence 1 is clean
    assert np.isnan(y[2:, 0, :4]).all() and np.isnan(y[:3, 0, 4:]).all()
    assert np.isfinite(y[:2, 0, :4]).all() and np.isfinite(y[:, 1]).all()
    assert np.isnan(h_n[:, 0]).all() and np.isfinite(h_n[:, 1]).all()
    dx, dh_0, _ = backward_layer(layer, np.ones_like(y), None)
    assert np.isfinite(dx[:, 1]).all()
    assert np.isnan(next(iter(layer.grads.values()))).any()


@pytest.mark.parametrize("mode", MODES)
def test_saturation_and_infinity(mode):
    """Huge finite pre-activations saturate the gates without inf/NaN, forward
    and backward; infinite inputs run without crashing (inf - inf inside the
    input product is NaN, as in any IEEE arithmetic)."""
    layer = make_layer(mode, 2, 3, dtype=np.float32, seed=0)
    for scale in (1e4, -1e4, 1e30, -1e30):
        y, h_n, c_n = run_layer(layer, np.full((4, 1, 2), scale, dtype=np.float32))
        if mode == "RNN_RELU":
            assert (y >= 0).all()
        else:
            assert np.isfinite(y).all() and np.abs(y).max() <= 1
        dx = backward_layer(layer, np.ones_like(y), None)[0]
        if mode != "RNN_RELU":
            assert np.isfinite(dx).all()
    for scale in (np.inf, -np.inf):
        y = run_layer(layer, np.full((4, 1, 2), scale, dtype=np.float32))[0]
        backward_layer(layer, np.ones_like(y), None)
