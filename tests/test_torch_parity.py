"""Parity with torch.nn.RNN / LSTM / GRU and the cells, loaded with the same
weights: outputs, final states and every gradient (autograd against
backward), float32 and float64.  Ragged batches against packed sequences.

PyTorch is a test dependency only (see conftest.require)."""

import numpy as np
import pytest

from conftest import TORCH_MODES, require, backward_layer, make_cell, make_layer, run_layer

torch = require("torch")

pytestmark = pytest.mark.torch

TOL = {np.float64: dict(rtol=1e-9, atol=1e-10), np.float32: dict(rtol=1e-4, atol=1e-5)}
TORCH_DTYPE = {np.float32: "float32", np.float64: "float64"}


def torch_layer(mode, layer):
    kwargs = dict(num_layers=layer.num_layers, bias=layer.bias, batch_first=layer.batch_first,
                  bidirectional=layer.bidirectional, dtype=getattr(torch, TORCH_DTYPE[layer.dtype.type]))
    if mode.startswith("RNN"):
        module = torch.nn.RNN(layer.input_size, layer.hidden_size, nonlinearity=layer.nonlinearity, **kwargs)
    else:
        module = getattr(torch.nn, mode)(layer.input_size, layer.hidden_size, **kwargs)
    # fastrnn's state_dict loads into PyTorch as it is
    module.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    return module


def tensor(a, requires_grad=False):
    return torch.tensor(np.asarray(a), requires_grad=requires_grad)


def torch_run(mode, module, x, h0, c0, lengths, dy, dh_n, dc_n, batch_first):
    """PyTorch forward with autograd, then the same loss's gradients."""
    xt, h0t = tensor(x, True), tensor(h0, True)
    c0t = tensor(c0, True) if mode == "LSTM" else None
    hx = (h0t, c0t) if mode == "LSTM" else h0t
    inp = xt
    if lengths is not None:
        inp = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lengths), batch_first=batch_first,
                                                      enforce_sorted=False)
    out, state = module(inp, hx)
    if lengths is not None:
        T = x.shape[1] if batch_first else x.shape[0]
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=batch_first, total_length=T)
    h_n, c_n = state if mode == "LSTM" else (state, None)
    loss = (out * tensor(dy)).sum() + (h_n * tensor(dh_n)).sum()
    if mode == "LSTM":
        loss = loss + (c_n * tensor(dc_n)).sum()
    loss.backward()
    grads = {name: p.grad.numpy() for name, p in module.named_parameters()}
    return (out.detach().numpy(), h_n.detach().numpy(), None if c_n is None else c_n.detach().numpy(),
            xt.grad.numpy(), h0t.grad.numpy(), None if c0t is None else c0t.grad.numpy(), grads)


def check_against_torch(mode, dtype, layer, x, h0, c0, lengths, dy, dh_n, dc_n):
    hx = (h0, c0) if mode == "LSTM" else h0
    got = list(run_layer(layer, x, hx, lengths))
    got += list(backward_layer(layer, dy, dh_n, dc_n))
    want = torch_run(mode, torch_layer(mode, layer), x, h0, c0, lengths, dy, dh_n, dc_n, layer.batch_first)
    for name, g, w in zip(("y", "h_n", "c_n", "dx", "dh_0", "dc_0"), got, want[:6]):
        if w is None:
            assert g is None
            continue
        assert g.shape == w.shape, name
        np.testing.assert_allclose(g, w, err_msg=name, **TOL[dtype])
    assert set(layer.grads) == set(want[6])
    for name, w in want[6].items():
        np.testing.assert_allclose(layer.grads[name], w, err_msg=f"grad {name}", **TOL[dtype])


@pytest.mark.parametrize("mode", TORCH_MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("ragged", [False, True])
def test_layer_parity(mode, dtype, num_layers, bidirectional, batch_first, ragged):
    rng = np.random.default_rng(abs(hash((mode, num_layers, bidirectional, batch_first, ragged))) % 2**32)
    T, B, I, H = 9, 6, 5, 8
    D = 2 if bidirectional else 1
    S = num_layers * D
    layer = make_layer(mode, I, H, dtype=dtype, num_layers=num_layers, bidirectional=bidirectional,
                       batch_first=batch_first, seed=int(rng.integers(1000)))
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I)).astype(dtype)
    h0 = rng.standard_normal((S, B, H)).astype(dtype)
    c0 = rng.standard_normal((S, B, H)).astype(dtype)
    lengths = None
    dy = rng.standard_normal((B, T, D * H) if batch_first else (T, B, D * H)).astype(dtype)
    if ragged:
        lengths = rng.integers(1, T + 1, size=B)
        lengths[0] = T
        padded = np.arange(T)[:, None] >= lengths[None, :]
        (dy.transpose(1, 0, 2) if batch_first else dy)[padded] = 0  # PyTorch gives padding no gradient
    dh_n = rng.standard_normal((S, B, H)).astype(dtype)
    dc_n = rng.standard_normal((S, B, H)).astype(dtype)
    check_against_torch(mode, dtype, layer, x, h0, c0, lengths, dy, dh_n, dc_n if mode == "LSTM" else None)


@pytest.mark.parametrize("mode", TORCH_MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unbatched_parity(mode, dtype):
    rng = np.random.default_rng(1)
    T, I, H = 7, 4, 5
    layer = make_layer(mode, I, H, dtype=dtype, num_layers=2, bidirectional=True, seed=4)
    x = rng.standard_normal((T, I)).astype(dtype)
    h0, c0 = (rng.standard_normal((4, H)).astype(dtype) for _ in range(2))
    dy = rng.standard_normal((T, 2 * H)).astype(dtype)
    dh_n, dc_n = (rng.standard_normal((4, H)).astype(dtype) for _ in range(2))
    check_against_torch(mode, dtype, layer, x, h0, c0, None, dy, dh_n, dc_n if mode == "LSTM" else None)


@pytest.mark.parametrize("mode", TORCH_MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
def test_cell_parity(mode, dtype, bias):
    rng = np.random.default_rng(2)
    B, I, H, T = 4, 6, 5, 3
    cell = make_cell(mode, I, H, dtype=dtype, bias=bias, seed=3)
    tdtype = getattr(torch, TORCH_DTYPE[dtype])
    if mode.startswith("RNN"):
        module = torch.nn.RNNCell(I, H, bias=bias, nonlinearity=cell.nonlinearity, dtype=tdtype)
    else:
        module = getattr(torch.nn, mode + "Cell")(I, H, bias=bias, dtype=tdtype)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in cell.state_dict().items()})
    xs = rng.standard_normal((T, B, I)).astype(dtype)
    h0, c0 = (rng.standard_normal((B, H)).astype(dtype) for _ in range(2))
    ws = rng.standard_normal((T, B, H)).astype(dtype)
    is_lstm = mode == "LSTM"

    # PyTorch: T steps, loss sum_t <h_t, w_t>
    xt = tensor(xs, True)
    h0t, c0t = tensor(h0, True), tensor(c0, True)
    h, c, loss, outs = h0t, c0t, 0, []
    for t in range(T):
        if is_lstm:
            h, c = module(xt[t], (h, c))
        else:
            h = module(xt[t], h)
        outs.append(h.detach().numpy())
        loss = loss + (h * tensor(ws[t])).sum()
    loss.backward()

    h, c = h0, c0
    for t in range(T):
        if is_lstm:
            h, c = cell(xs[t], (h, c))
        else:
            h = cell(xs[t], h)
        np.testing.assert_allclose(h, outs[t], **TOL[dtype])
    dh, dc, dxs = np.zeros((B, H), dtype), np.zeros((B, H), dtype), np.zeros_like(xs)
    for t in reversed(range(T)):
        if is_lstm:
            dxs[t], (dh, dc) = cell.backward(dh + ws[t], dc)
        else:
            dxs[t], dh = cell.backward(dh + ws[t])
    np.testing.assert_allclose(dxs, xt.grad.numpy(), err_msg="dx", **TOL[dtype])
    np.testing.assert_allclose(dh, h0t.grad.numpy(), err_msg="dh_0", **TOL[dtype])
    if is_lstm:
        np.testing.assert_allclose(dc, c0t.grad.numpy(), err_msg="dc_0", **TOL[dtype])
    for name, p in module.named_parameters():
        np.testing.assert_allclose(cell.grads[name], p.grad.numpy(), err_msg=name, **TOL[dtype])


def test_unbatched_cell_parity():
    rng = np.random.default_rng(5)
    cell = make_cell("LSTM", 3, 4, dtype=np.float64, seed=0)
    module = torch.nn.LSTMCell(3, 4, dtype=torch.float64)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in cell.state_dict().items()})
    x = rng.standard_normal(3)
    h, c = cell(x)
    ht, ct = module(tensor(x))
    np.testing.assert_allclose(h, ht.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(c, ct.detach().numpy(), rtol=1e-12)
    assert h.shape == (4,) and c.shape == (4,)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.5, float("inf")])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_parity(norm_type, max_norm):
    import fastrnn
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s) for s in [(3, 4), (5,), (2, 2, 2)]]
    tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
    for t, a in zip(tensors, arrays):
        t.grad = torch.tensor(a.copy())
    want = torch.nn.utils.clip_grad_norm_(tensors, max_norm, norm_type=norm_type)
    got = fastrnn.clip_grad_norm(arrays, max_norm, norm_type=norm_type)
    np.testing.assert_allclose(got, float(want), rtol=1e-12)
    for t, a in zip(tensors, arrays):
        np.testing.assert_allclose(a, t.grad.numpy(), rtol=1e-12)


def test_clip_grad_value_parity():
    import fastrnn
    rng = np.random.default_rng(1)
    arrays = {"a": rng.standard_normal((4, 3)), "b": rng.standard_normal(7)}
    tensors = [torch.tensor(a, requires_grad=True) for a in arrays.values()]
    for t, a in zip(tensors, arrays.values()):
        t.grad = torch.tensor(a.copy())
    torch.nn.utils.clip_grad_value_(tensors, 0.3)
    fastrnn.clip_grad_value(arrays, 0.3)
    for t, a in zip(tensors, arrays.values()):
        np.testing.assert_array_equal(a, t.grad.numpy())
