"""Central finite differences in float64: the gradient of a scalar loss with
respect to every parameter, input and initial state, for every cell, stacked,
bidirectional, with a ragged batch; and through a loop of cells."""
import numpy as np
import pytest

from conftest import MODES, backward_layer, make_cell, make_layer, run_layer

EPS = 1e-6


def numeric_gradient(f, array):
    """d f / d array by central differences, entry by entry (array changed in place and restored)."""
    grad = np.zeros_like(array)
    flat, g = array.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + EPS
        up = f()
        flat[i] = old - EPS
        down = f()
        flat[i] = old
        g[i] = (up - down) / (2 * EPS)
    return grad


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("num_layers,bidirectional,with_lengths",
                         [(1, False, False), (2, True, True), (1, True, True), (2, False, True)])
def test_finite_differences(mode, num_layers, bidirectional, with_lengths):
    rng = np.random.default_rng(abs(hash((mode, num_layers, bidirectional))) % 2**32)
    T, B, I, H = 4, 3, 3, 3
    D = 2 if bidirectional else 1
    S = num_layers * D
    layer = make_layer(mode, I, H, num_layers=num_layers, bidirectional=bidirectional, seed=2)
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((S, B, H)) * 0.5
    c0 = rng.standard_normal((S, B, H)) * 0.5
    lengths = np.array([4, 2, 3]) if with_lengths else None
    # the loss weights every output: y, h_n and (LSTM) c_n
    wy, wh, wc = (rng.standard_normal((T, B, D * H)), rng.standard_normal((S, B, H)),
                  rng.standard_normal((S, B, H)))
    is_lstm = mode == "LSTM"

    def loss():
        y, h_n, c_n = run_layer(layer, x, (h0, c0) if is_lstm else h0, lengths)
        total = np.sum(y * wy) + np.sum(h_n * wh)
        return total + (np.sum(c_n * wc) if is_lstm else 0.0)

    loss()
    layer.zero_grad()
    dx, dh0, dc0 = backward_layer(layer, wy, wh, wc if is_lstm else None)
    layer.eval()  # the numeric loss must not keep tapes (and eval equals training without dropout)
    checks = [("x", x, dx), ("h_0", h0, dh0)] + ([("c_0", c0, dc0)] if is_lstm else [])
    checks += [(name, layer.params[name], layer.grads[name]) for name in layer.params]
    for name, array, analytic in checks:
        numeric = numeric_gradient(loss, array)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("mode", MODES)
def test_finite_differences_through_a_loop_of_cells(mode):
    """forward T steps with a cell, backward T steps carrying dh: BPTT by hand."""
    rng = np.random.default_rng(3)
    T, B, I, H = 4, 2, 3, 4
    cell = make_cell(mode, I, H, seed=1)
    xs = rng.standard_normal((T, B, I))
    h0, c0 = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    weights = rng.standard_normal((T, B, H))
    is_lstm = mode == "LSTM"

    def loss():
        h, c, total = h0, c0, 0.0
        for t in range(T):
            if is_lstm:
                h, c = cell(xs[t], (h, c))
            else:
                h = cell(xs[t], h)
            total += np.sum(h * weights[t])
        return total

    loss()
    cell.zero_grad()
    dh, dc, dxs = np.zeros((B, H)), np.zeros((B, H)), np.zeros_like(xs)
    for t in reversed(range(T)):
        if is_lstm:
            dxs[t], (dh, dc) = cell.backward(dh + weights[t], dc)
        else:
            dxs[t], dh = cell.backward(dh + weights[t])
    cell.eval()
    checks = [("x", xs, dxs), ("h_0", h0, dh)] + ([("c_0", c0, dc)] if is_lstm else [])
    checks += [(name, cell.params[name], cell.grads[name]) for name in cell.params]
    for name, array, analytic in checks:
        np.testing.assert_allclose(analytic, numeric_gradient(loss, array), rtol=1e-6, atol=1e-7,
                                   err_msg=name)
