"""The compiled layers against the float64 NumPy reference (tests/reference.py):
outputs, final states and every gradient, for every cell, stacked and
bidirectional, ragged batches, batch_first, unbatched input, no bias."""
import numpy as np
import pytest

import reference as ref
from conftest import MODES, backward_layer, make_cell, make_layer, run_layer

TOL = {np.float64: dict(rtol=1e-9, atol=1e-11), np.float32: dict(rtol=2e-4, atol=2e-5)}


def reference_run(mode, layer, x, h0, c0, lengths, dy, dh_n, dc_n, dropout_masks=None):
    """The reference's forward and backward with the layer's parameters (float64)."""
    params = {k: v.astype(np.float64) for k, v in layer.params.items()}
    if not layer.bias:
        for name in list(params):
            if name.startswith("weight_ih"):
                G_H = params[name].shape[0]
                suffix = name[len("weight_ih"):]
                params["bias_ih" + suffix] = np.zeros(G_H)
                params["bias_hh" + suffix] = np.zeros(G_H)
    y, h_n, c_n, tape = ref.forward(mode, params, x, h0, c0, lengths, layer.num_layers, layer.bidirectional,
                                    dropout_masks)
    dx, dh_0, dc_0, grads = ref.backward(mode, tape, dy, dh_n, dc_n)
    return y, h_n, c_n, dx, dh_0, dc_0, grads


def random_case(rng, mode, T, B, I, H, L, D, with_lengths):
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((L * D, B, H)) * 0.5
    c0 = rng.standard_normal((L * D, B, H)) * 0.5 if mode == "LSTM" else None
    lengths = rng.integers(1, T + 1, size=B) if with_lengths else None
    if with_lengths:
        lengths[rng.integers(B)] = T
    dy = rng.standard_normal((T, B, D * H))
    if lengths is not None:
        dy[np.arange(T)[:, None] >= lengths[None, :]] = 0  # padded steps get no gradient
    dh_n = rng.standard_normal((L * D, B, H))
    dc_n = rng.standard_normal((L * D, B, H)) if mode == "LSTM" else None
    return x, h0, c0, lengths, dy, dh_n, dc_n


def assert_all_close(got, want, dtype, what):
    np.testing.assert_allclose(got, want, err_msg=what, **TOL[dtype])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (1, True), (2, False), (3, True)])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_layer_matches_reference(mode, dtype, num_layers, bidirectional, with_lengths):
    rng = np.random.default_rng(hash((mode, num_layers, bidirectional, with_lengths)) % 2**32)
    T, B, I, H = 6, 5, 4, 7
    D = 2 if bidirectional else 1
    layer = make_layer(mode, I, H, dtype=dtype, num_layers=num_layers, bidirectional=bidirectional, seed=1)
    x, h0, c0, lengths, dy, dh_n, dc_n = random_case(rng, mode, T, B, I, H, num_layers, D, with_lengths)
    hx = (h0, c0) if mode == "LSTM" else h0
    y, h_n, c_n = run_layer(layer, x, hx, lengths)
    dx, dh_0, dc_0 = backward_layer(layer, dy, dh_n, dc_n)
    want = reference_run(mode, layer, x, h0, c0, lengths, dy, dh_n, dc_n)
    for name, got, expected in zip(("y", "h_n", "c_n", "dx", "dh_0", "dc_0"),
                                   (y, h_n, c_n, dx, dh_0, dc_0), want[:6]):
        if expected is None:
            assert got is None
            continue
        assert got.dtype == dtype
        assert_all_close(got, expected, dtype, name)
    for name, g in want[6].items():
        assert_all_close(layer.grads[name], g, dtype, f"grad {name}")


@pytest.mark.parametrize("mode", MODES)
def test_batch_first_unbatched_and_no_bias(mode):
    rng = np.random.default_rng(7)
    T, B, I, H = 5, 3, 4, 6
    layer = make_layer(mode, I, H, num_layers=2, bidirectional=True, bias=False, batch_first=True, seed=3)
    assert not any(k.startswith("bias") for k in layer.params)
    x, h0, c0, _, dy, dh_n, dc_n = random_case(rng, mode, T, B, I, H, 2, 2, False)
    hx = (h0, c0) if mode == "LSTM" else h0
    # batch_first: (B, T, I) in, (B, T, D*H) out, states still (L*D, B, H)
    y, h_n, c_n = run_layer(layer, x.transpose(1, 0, 2), hx)
    assert y.shape == (B, T, 2 * H)
    dx, dh_0, dc_0 = backward_layer(layer, dy.transpose(1, 0, 2), dh_n, dc_n)
    want = reference_run(mode, layer, x, h0, c0, None, dy, dh_n, dc_n)
    assert_all_close(y, want[0].transpose(1, 0, 2), np.float64, "y")
    assert_all_close(h_n, want[1], np.float64, "h_n")
    assert_all_close(dx, want[3].transpose(1, 0, 2), np.float64, "dx")
    assert_all_close(dh_0, want[4], np.float64, "dh_0")
    for name, g in want[6].items():
        if not name.startswith("bias"):
            assert_all_close(layer.grads[name], g, np.float64, f"grad {name}")

    # unbatched: (T, I) in, (T, D*H) and (L*D, H) out; batch_first does not apply
    layer.zero_grad()
    hx1 = (h0[:, 0], c0[:, 0]) if mode == "LSTM" else h0[:, 0]
    y1, h1, c1 = run_layer(layer, x[:, 0], hx1)
    assert y1.shape == (T, 2 * H) and h1.shape == (4, H)
    dx1, dh1, dc1 = backward_layer(layer, dy[:, 0], dh_n[:, 0], None if dc_n is None else dc_n[:, 0])
    want1 = reference_run(mode, layer, x[:, :1], h0[:, :1], None if c0 is None else c0[:, :1], None,
                          dy[:, :1], dh_n[:, :1], None if dc_n is None else dc_n[:, :1])
    assert_all_close(y1, want1[0][:, 0], np.float64, "unbatched y")
    assert_all_close(dx1, want1[3][:, 0], np.float64, "unbatched dx")
    assert_all_close(dh1, want1[4][:, 0], np.float64, "unbatched dh_0")
    if mode == "LSTM":
        assert c1.shape == (4, H) and dc1.shape == (4, H)
        assert_all_close(dc1, want1[5][:, 0], np.float64, "unbatched dc_0")


@pytest.mark.parametrize("mode", MODES)
def test_lengths_semantics(mode):
    """Padded steps give zero output, cost nothing and leave the state alone:
    each sequence of a ragged batch equals that sequence run alone."""
    rng = np.random.default_rng(11)
    T, B, I, H = 7, 4, 3, 5
    layer = make_layer(mode, I, H, num_layers=2, bidirectional=True, seed=5)
    x = rng.standard_normal((T, B, I))
    lengths = np.array([3, 7, 1, 5])
    y, h_n, c_n = run_layer(layer, x, lengths=lengths)
    for b in range(B):
        yb, hb, cb = run_layer(layer, x[:lengths[b], b:b + 1])
        np.testing.assert_allclose(y[:lengths[b], b], yb[:, 0], rtol=1e-12, atol=1e-13)
        assert not y[lengths[b]:, b].any()
        np.testing.assert_allclose(h_n[:, b], hb[:, 0], rtol=1e-12, atol=1e-13)
        if cb is not None:
            np.testing.assert_allclose(c_n[:, b], cb[:, 0], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("mode", MODES)
def test_lengths_zeros_past_the_ends_in_reused_memory(mode):
    """The padded rows of y and dx are zeroed row by row (the others are
    written by the kernels): they are zero even when the arrays come from
    memory full of NaN, which freeing a NaN array of their size just before
    makes likely."""
    rng = np.random.default_rng(12)
    T, B, I, H = 9, 6, 5, 4
    layer = make_layer(mode, I, H, seed=1, dtype=np.float32)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    lengths = np.array([2, 9, 5, 1, 9, 3])
    past = np.arange(T)[:, None] >= lengths[None, :]
    for _ in range(3):
        np.full((T * B, H), np.nan, dtype=np.float32)
        y, _ = layer(x, lengths=lengths)
        np.full((T * B, I), np.nan, dtype=np.float32)
        dx = layer.backward(np.ones_like(y))[0]
        assert not y[past].any() and np.isfinite(y).all()
        assert not dx[past].any() and np.isfinite(dx).all()


def test_packing_of_lengths():
    """The packing of a ragged batch (computed in C) against its definition:
    sequences longest first, ties in batch order; batch_sizes[t] of them
    running at time t; each packed row's place in a time-major and a
    batch-major padded array; the padded rows past the ends, every other one."""
    from fastrnn.layers import Packing
    rng = np.random.default_rng(13)
    for _ in range(300):
        T, B = int(rng.integers(1, 9)), int(rng.integers(1, 7))
        lengths = rng.integers(1, T + 1, size=B)
        p = Packing(T, B, lengths)
        if (lengths == T).all():
            assert p.order is None and p.N == T * B
            continue
        order = np.argsort(-lengths, kind="stable")
        np.testing.assert_array_equal(p.order, order)
        np.testing.assert_array_equal(p.batch_sizes, [(lengths > t).sum() for t in range(lengths.max())])
        rows = [(t, b) for t in range(T) for b in order if t < lengths[b]]
        assert p.N == len(rows) == lengths.sum()
        np.testing.assert_array_equal(p._rows_tb, [t * B + b for t, b in rows])
        np.testing.assert_array_equal(p._rows_bt, [b * T + t for t, b in rows])
        assert sorted(p._pad_rows) == [t * B + b for t in range(T) for b in range(B) if t >= lengths[b]]
        for a in (p.order, p.batch_sizes, p._rows_tb, p._rows_bt, p._pad_rows):
            assert a.dtype == np.intp and a.flags.c_contiguous


@pytest.mark.parametrize("mode", MODES)
def test_dropout_between_layers(mode):
    """Training dropout multiplies each layer's output but the last by a
    mask (kept / (1 - p)); backward uses the same masks; eval has none;
    masks are reproducible from the seed."""
    rng = np.random.default_rng(2)
    T, B, I, H, L = 5, 4, 3, 6, 3
    x, h0, c0, _, dy, dh_n, dc_n = random_case(rng, mode, T, B, I, H, L, 2, False)
    hx = (h0, c0) if mode == "LSTM" else h0
    layer = make_layer(mode, I, H, num_layers=L, bidirectional=True, dropout=0.4, seed=9)
    y, h_n, c_n = run_layer(layer, x, hx)
    masks = [m.reshape(T, B, 2 * H) for _, _, m in layer._tape.layers[:-1]]
    kept = np.concatenate([m.ravel() for m in masks])
    assert set(np.unique(kept)) == {0.0, 1 / 0.6}
    assert 0.3 < np.mean(kept == 0) < 0.5
    dx, dh_0, dc_0 = backward_layer(layer, dy, dh_n, dc_n)
    want = reference_run(mode, layer, x, h0, c0, None, dy, dh_n, dc_n, dropout_masks=masks)
    for name, got, expected in zip(("y", "h_n", "dx", "dh_0"), (y, h_n, dx, dh_0),
                                   (want[0], want[1], want[3], want[4])):
        assert_all_close(got, expected, np.float64, name)
    for name, g in want[6].items():
        assert_all_close(layer.grads[name], g, np.float64, f"grad {name}")

    same_seed = make_layer(mode, I, H, num_layers=L, bidirectional=True, dropout=0.4, seed=9)
    np.testing.assert_array_equal(run_layer(same_seed, x, hx)[0], y)
    layer.eval()
    y_eval = run_layer(layer, x, hx)[0]
    want_eval = reference_run(mode, layer, x, h0, c0, None, dy, dh_n, dc_n)[0]
    assert_all_close(y_eval, want_eval, np.float64, "eval y")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", ["padded", "ragged", "ragged batch_first bidirectional", "ragged strided"])
def test_eval_keeps_nothing_and_matches_training(mode, layout):
    # on a ragged batch, training packs the input rows and eval reads them
    # where they are (or packs them, when the array's layout has no 2-D view)
    rng = np.random.default_rng(4)
    batch_first, bidirectional = "batch_first" in layout, "bidirectional" in layout
    layer = make_layer(mode, 3, 4, num_layers=2, seed=0, batch_first=batch_first, bidirectional=bidirectional)
    x = rng.standard_normal((5, 6, 3))
    if "strided" in layout:
        x = rng.standard_normal((5, 6, 6))[:, :, ::2]
    if batch_first:
        x = np.ascontiguousarray(x.transpose(1, 0, 2))   # (B, T, I)
    lengths = np.array([5, 2, 4, 1, 5, 3]) if "ragged" in layout else None
    y_train, h_train, c_train = run_layer(layer, x, lengths=lengths)
    layer.eval()
    assert not layer.training
    y_eval, h_eval, c_eval = run_layer(layer, x, lengths=lengths)
    np.testing.assert_array_equal(y_train, y_eval)
    np.testing.assert_array_equal(h_train, h_eval)
    if c_train is not None:
        np.testing.assert_array_equal(c_train, c_eval)
    assert layer._tape is None
    layer.train()
    assert layer.training


@pytest.mark.parametrize("mode", MODES)
def test_grads_accumulate_and_zero(mode):
    rng = np.random.default_rng(5)
    layer = make_layer(mode, 3, 4, seed=0)
    x = rng.standard_normal((5, 2, 3))
    dy = rng.standard_normal((5, 2, 4))
    run_layer(layer, x)
    backward_layer(layer, dy, None)
    once = {k: v.copy() for k, v in layer.grads.items()}
    run_layer(layer, x)
    backward_layer(layer, dy, None)
    for k, v in layer.grads.items():
        np.testing.assert_allclose(v, 2 * once[k], rtol=1e-12)
    layer.zero_grad()
    assert all(not v.any() for v in layer.grads.values())


@pytest.mark.parametrize("mode", MODES)
def test_steps_reusing_the_workspace_match_the_reference(mode):
    """A training forward reuses the workspace of the last tape (consumed by
    backward, or replaced by a new forward): every step of a loop still
    matches the reference, whatever came before it."""
    rng = np.random.default_rng(11)
    layer = make_layer(mode, 4, 5, num_layers=2, bidirectional=True, seed=2)
    steps = ((6, 3, True, False), (6, 3, True, False), (6, 3, False, False), (6, 3, True, False),
             (4, 3, True, False), (6, 3, True, True), (6, 3, True, False))   # T, B, consumed, ragged
    for T, B, consume, ragged in steps:
        x, h0, c0, lengths, dy, dh_n, dc_n = random_case(rng, mode, T, B, 4, 5, 2, 2, with_lengths=ragged)
        hx = (h0, c0) if mode == "LSTM" else h0
        y, h_n, c_n = run_layer(layer, x, hx, lengths)
        if not consume:   # the next forward replaces this tape
            continue
        layer.zero_grad()
        dx, dh_0, dc_0 = backward_layer(layer, dy, dh_n, dc_n)
        want = reference_run(mode, layer, x, h0, c0, lengths, dy, dh_n, dc_n)
        for name, got, expected in zip(("y", "h_n", "c_n", "dx", "dh_0", "dc_0"),
                                       (y, h_n, c_n, dx, dh_0, dc_0), want[:6]):
            if expected is not None:
                assert_all_close(got, expected, np.float64, f"T={T}: {name}")
        for name, g in want[6].items():
            assert_all_close(layer.grads[name], g, np.float64, f"T={T}: grad {name}")


def test_inputs_of_other_dtypes_and_layouts_are_converted():
    rng = np.random.default_rng(6)
    layer = make_layer("LSTM", 4, 5, dtype=np.float32, seed=0)
    x64 = rng.standard_normal((6, 3, 4))
    y_ref = run_layer(layer, x64.astype(np.float32))[0]
    for x in (x64, x64.astype(np.float16).astype(np.float64), np.asfortranarray(x64),
              x64[:, ::-1][:, ::-1], x64.tolist()):
        y = run_layer(layer, x)[0]
        assert y.dtype == np.float32
        np.testing.assert_allclose(y, run_layer(layer, np.asarray(x, dtype=np.float32))[0], rtol=0, atol=0)
    np.testing.assert_allclose(run_layer(layer, x64[:, ::-1])[0],
                               run_layer(layer, np.ascontiguousarray(x64[:, ::-1], dtype=np.float32))[0])
    assert y_ref.shape == (6, 3, 5)


def test_backward_reads_private_copies():
    """Changing the input or the returned output in place between forward and
    backward must not change the gradients; and backward, which writes the
    input gradient over its own copy of the input, leaves the input alone."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((5, 3, 4))
    dy = rng.standard_normal((5, 3, 6))
    for mode in MODES:
        a = make_layer(mode, 4, 6, seed=1)
        b = make_layer(mode, 4, 6, seed=1)
        xa = x.copy()
        ya = run_layer(a, xa)[0]
        xa[:] = 0
        ya[:] = 7
        dxa = backward_layer(a, dy, None)[0]
        xb = x.astype(b.dtype)   # the layer's own dtype: no conversion, so the copy is the input's
        run_layer(b, xb)
        dxb = backward_layer(b, dy, None)[0]
        np.testing.assert_array_equal(xb, x.astype(b.dtype))
        assert not np.shares_memory(dxb, xb)
        np.testing.assert_array_equal(dxa, dxb)
        for k in a.grads:
            np.testing.assert_array_equal(a.grads[k], b.grads[k])


@pytest.mark.parametrize("mode", MODES)
def test_omitted_states_give_fresh_writeable_results(mode):
    """An omitted state (or state gradient) is a zero array the layer and the
    cell keep between calls: no result may be that array or be read-only,
    and writing into one result changes nothing of the next call."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((4, 2, 3))
    layer = make_layer(mode, 3, 5, num_layers=2, seed=3)
    cell = make_cell(mode, 3, 5, seed=3)
    first = None
    for _ in range(2):
        y, h_n, c_n = run_layer(layer, x)
        dx, dh_0, dc_0 = backward_layer(layer, np.ones_like(y), None)
        step = cell(x[0])
        cell_out = step if isinstance(step, tuple) else (step,)
        dcell = cell.backward()
        dcell = (dcell[0], *dcell[1]) if isinstance(dcell[1], tuple) else dcell
        results = [a for a in (y, h_n, c_n, dx, dh_0, dc_0, *cell_out, *dcell) if a is not None]
        assert all(a.flags.writeable for a in results)
        snapshot = [a.copy() for a in results]
        for a in results:
            a[...] = 7.0
        if first is not None:
            for got, want in zip(snapshot, first):
                np.testing.assert_array_equal(got, want)
        first = snapshot
