"""Results do not depend on the thread count: outputs, final states and
every gradient are bitwise identical with 1, 2 and 3 threads."""
import numpy as np
import pytest

import fastrnn
from conftest import MODES, backward_layer, make_cell, make_layer, run_layer


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


def run_everything(mode, dtype, threads, lengths, B, bidirectional, H=40):
    fastrnn.set_num_threads(threads)
    rng = np.random.default_rng(0)
    T, I = 40, 48
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
# B >= 4 per thread: the threads share the rows (12, 13), in blocks split by
# the steps they hold (a ragged batch: fewer rows to the first thread); fewer:
# the units, where a step holds enough work (1e5 flops), else the forward's
# second thread projects the input ahead of the steps (B=1; the RNN at B=5
# and 7).  H a multiple of the panel width (32 floats, 16 doubles with
# AVX-512): on 2 and 3 threads, training projects x straight into the kept
# gates (forward_thread's `direct`).  B=16: 640 rows, more than a block of the
# weight gradients (GRAD_KC, 512)
@pytest.mark.parametrize("B,ragged,bidirectional,H", [(12, False, False, 40), (13, True, True, 40),
                                                       (5, True, True, 40), (7, False, True, 40),
                                                       (1, False, False, 40), (12, False, True, 64),
                                                       (13, True, False, 64), (16, False, True, 64)])
def test_bitwise_identical_across_thread_counts(restore_threads, mode, dtype, B, ragged, bidirectional, H):
    lengths = np.random.default_rng(B).integers(1, 41, size=B) if ragged else None
    runs = [run_everything(mode, dtype, n, lengths, B, bidirectional, H) for n in (1, 2, 3)]
    for name in runs[0]:
        for n, other in zip((2, 3), runs[1:]):
            assert np.array_equal(runs[0][name], other[name]), f"{name} differs between 1 and {n} threads"


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
@pytest.mark.parametrize("B", [8, 64])
def test_bitwise_identical_with_weights_larger_than_l2(restore_threads, mode, B):
    """H=384: a packed weight_hh of 1.8-2.4 MB, which the threads share by
    rows or by units depending on the L2 size of the machine and the rows
    each thread would get (see share_rows); either way, and across many
    panel groups, the same bits."""
    rng = np.random.default_rng(3)
    T, I, H = 4, 16, 384
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    runs = []
    for n in (1, 2):
        fastrnn.set_num_threads(n)
        layer = make_layer(mode, I, H, dtype=np.float32, seed=2)
        y, h_n, c_n = run_layer(layer, x)
        dx, dh_0, _ = backward_layer(layer, dy, np.ones_like(h_n), None if c_n is None else np.ones_like(c_n))
        runs.append({"y": y, "h_n": h_n, "dx": dx, "dh_0": dh_0, **layer.grads})
    for name in runs[0]:
        assert np.array_equal(runs[0][name], runs[1][name]), f"{name} differs between 1 and 2 threads"


def test_set_num_threads_checks(restore_threads):
    fastrnn.set_num_threads(3)
    assert fastrnn.get_num_threads() == 3
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        fastrnn.set_num_threads(0)
    with pytest.raises(TypeError, match="n must be an int"):
        fastrnn.set_num_threads(2.5)
    assert fastrnn.get_num_threads() == 3


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_a_sequence_in_two_pieces_gives_the_same_bits(restore_threads, mode, dtype, threads):
    """Odd steps take the step product's groups of panels in the other order
    (forward_thread); step 3 of a sequence and step 0 of its rest, started
    from the states after step 2, are the same product in the two orders:
    the same bits.  H=136: five panels per gate in float32, nine in float64,
    the last one partial (groups of four panels, the last group short);
    B=14: a 12-row block and leftover rows."""
    fastrnn.set_num_threads(threads)
    rng = np.random.default_rng(6)
    T, B, I, H = 7, 14, 24, 136
    layer = make_layer(mode, I, H, dtype=dtype, seed=3)
    layer.eval()
    x = rng.standard_normal((T, B, I)).astype(dtype)
    y, h_n, c_n = run_layer(layer, x)
    y_head, h_head, c_head = run_layer(layer, x[:3])
    hx = h_head if c_head is None else (h_head, c_head)
    y_rest, h_rest, c_rest = run_layer(layer, x[3:], hx=hx)
    assert np.array_equal(y, np.concatenate([y_head, y_rest]))
    assert np.array_equal(h_n, h_rest)
    if c_n is not None:
        assert np.array_equal(c_n, c_rest)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("B", [1, 2, 3])
def test_one_step_at_a_time_gives_the_same_bits(restore_threads, mode, dtype, threads, B):
    """A call of a single step whose threads share the units packs each group
    of panels just before its product (weights_product) rather than all of
    them first, and in float32 at one or two rows a thread reads the weights'
    rows with no panel packed (fr_row_product_f32): a sequence run one step
    at a time, through the layer and through the cell, gives the bits of the
    whole sequence in one call.  H=136: five panels per gate in float32, nine
    in float64, so groups of four panels that straddle two gates, and a
    partial last panel; I=24 and H=136 leave 8 columns past the last whole
    vector of 16."""
    fastrnn.set_num_threads(threads)
    rng = np.random.default_rng(7)
    T, I, H = 4, 24, 136
    layer = make_layer(mode, I, H, dtype=dtype, seed=3)
    cell = make_cell(mode, I, H, dtype=dtype, seed=3)
    layer.eval()
    cell.eval()
    x = rng.standard_normal((T, B, I)).astype(dtype)
    y = run_layer(layer, x)[0]
    hx = cell_hx = None
    for t in range(T):
        y_t, h_t, c_t = run_layer(layer, x[t:t + 1], hx=hx)
        hx = h_t if c_t is None else (h_t, c_t)
        cell_hx = cell(x[t], cell_hx)
        assert np.array_equal(y_t[0], y[t]), f"step {t} alone differs"
        assert np.array_equal(cell_hx[0] if isinstance(cell_hx, tuple) else cell_hx, y[t]), f"cell step {t}"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_a_step_of_few_rows_backward_gives_the_bits_of_a_larger_batch(restore_threads, mode, threads):
    """The backward of a single step of one or two rows reads weight_ih and
    weight_hh where they are (fr_cols_product_f32) rather than packed by
    columns first: its dx and dh (and dc) rows have the bits of the same rows
    in a batch of five, whose products read the packed copies.  H=136 and
    I=40: a partial last panel in both."""
    fastrnn.set_num_threads(threads)
    rng = np.random.default_rng(9)
    I, H, B = 40, 136, 5
    cell = make_cell(mode, I, H, dtype=np.float32, seed=4)
    x = rng.standard_normal((B, I)).astype(np.float32)
    h, c, dh, dc = (rng.standard_normal((B, H)).astype(np.float32) for _ in range(4))

    def step_backward(rows):
        """dx, dh and, for the LSTM, dc of the rows' step"""
        if mode == "LSTM":
            cell(x[rows], (h[rows], c[rows]))
            dx, (dh_prev, dc_prev) = cell.backward(dh[rows], dc[rows])
            return dx, dh_prev, dc_prev
        cell(x[rows], h[rows])
        return cell.backward(dh[rows])

    whole = step_backward(slice(0, B))
    for rows in (slice(0, 1), slice(1, 3), slice(4, 5)):
        parts = step_backward(rows)
        assert len(parts) == len(whole) == (3 if mode == "LSTM" else 2)
        for name, part, full in zip(("dx", "dh", "dc"), parts, whole):
            assert np.array_equal(part, full[rows]), f"{name} of rows {rows} differs"


@pytest.mark.parametrize("mode", ["RNN_TANH", "RNN_RELU"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ["forward", "ragged", "reverse", "one row", "more rows than a block"])
def test_the_rnn_backward_reads_the_states_from_its_outputs(restore_threads, mode, dtype, case):
    """Without h_prev, the RNN's backward reads the state before each step
    from h' of the step before, by blocks of steps (_recurrence.pack_prev),
    and sums dweight_hh block by block: the same dx, dh_0, dweight_ih and
    bias gradients, bit for bit, as with h_prev, dweight_hh equal up to the
    order of its sum, and every gradient the same bits with 1, 2 and 3
    threads.  Blocks of 256 rows: 3 of them at B=8, T=70; at B=1, T=600, 3
    with the threads sharing the units; at B=300, one step each."""
    from fastrnn._kernels import recurrence as _recurrence
    B, T = {"one row": (1, 600), "more rows than a block": (300, 3)}.get(case, (8, 70))
    lengths = np.array([70, 60, 50, 50, 33, 20, 7, 1]) if case == "ragged" else np.full(B, T)
    batch_sizes = np.array([(lengths > t).sum() for t in range(T)], dtype=np.intp)
    N, I, H = int(lengths.sum()), 24, 136
    rng = np.random.default_rng(8)
    w_ih, w_hh = (rng.uniform(-0.2, 0.2, (H, k)).astype(dtype) for k in (I, H))
    b_ih, b_hh = (rng.uniform(-0.2, 0.2, H).astype(dtype) for _ in range(2))
    x = rng.standard_normal((N, I)).astype(dtype)
    dy = rng.standard_normal((N, H)).astype(dtype)
    h_0, dh_n = (rng.standard_normal((B, H)).astype(dtype) for _ in range(2))
    grads_before = [rng.standard_normal(shape).astype(dtype) for shape in ((H, I), (H, H), (H,), (H,))]
    cell, reverse, none = _recurrence.CELLS[mode], case == "reverse", np.empty((0, H), dtype)

    def run(keep_h_prev, threads):
        fastrnn.set_num_threads(threads)
        y, h_n, saved = np.empty((N, H), dtype), np.empty((B, H), dtype), np.empty((N, H), dtype)
        h_prev = np.empty((N, H), dtype) if keep_h_prev else none
        _recurrence.forward(cell, y, h_n, none, saved, saved, h_prev, x, w_ih, w_hh, b_ih, b_hh, h_0, none,
                            batch_sizes, reverse, threads)
        dx, dh_0 = np.empty((N, I), dtype), np.empty((B, H), dtype)
        grads = [g.copy() for g in grads_before]
        _recurrence.backward(cell, dx, dh_0, none, *grads, saved, saved, h_prev, dy, dh_n, none, x, w_ih, w_hh,
                             none, batch_sizes, reverse, False, threads, None, None if keep_h_prev else h_0)
        return dict(zip(["y", "dx", "dh_0", "dweight_ih", "dweight_hh", "dbias_ih", "dbias_hh", "dG", "h_prev"],
                        [y, dx, dh_0, *grads, saved, h_prev]))

    kept = run(True, 1)
    runs = [run(False, threads) for threads in (1, 2, 3)]
    for name in kept:
        for threads, other in zip((2, 3), runs[1:]):
            assert np.array_equal(runs[0][name], other[name]), f"{name}: 1 and {threads} threads differ"
        if name == "h_prev":
            continue
        if name == "dweight_hh":   # both within the error bound of a sum of N terms of the exact one
            dG, h_prev = kept["dG"].astype(np.float64), kept["h_prev"].astype(np.float64)
            exact = grads_before[1] + dG.T @ h_prev
            bound = (N + 1) * np.finfo(dtype).eps * (np.abs(grads_before[1]) + np.abs(dG).T @ np.abs(h_prev))
            for got in (kept[name], runs[0][name]):
                assert (np.abs(got - exact) <= bound).all()
        else:
            assert np.array_equal(runs[0][name], kept[name]), f"{name} differs from the backward with h_prev"
    if case == "ragged":   # backwards, the rows of a block of steps are not consecutive
        with pytest.raises(ValueError, match="equal lengths"):
            _recurrence.backward(cell, np.empty((N, I), dtype), np.empty((B, H), dtype), none, *grads_before,
                                 np.empty((N, H), dtype), np.empty((N, H), dtype), none, dy, dh_n, none, x,
                                 w_ih, w_hh, none, batch_sizes, True, False, 1, None, h_0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_the_bits_do_not_depend_on_the_groups_of_panels(restore_threads, mode, dtype, threads):
    """A product takes the panels of its weights in groups of at most half of
    L2 (csrc/rgemm.h: 1 to 4 panels a group): groups of one panel, of four
    and the default give the same bits for every output and gradient.
    B=13: blocks of 12 rows and leftover rows; H=136: five panels per gate
    in float32, nine in float64, the last one partial; a ragged batch in
    both directions."""
    from fastrnn._kernels import recurrence as _recurrence
    lengths = np.random.default_rng(9).integers(1, 41, size=13)
    default = _recurrence.group_bytes()
    runs = []
    try:
        for nbytes in (1, default, 1 << 40):
            _recurrence.group_bytes(nbytes)
            runs.append(run_everything(mode, dtype, threads, lengths, 13, True, H=136))
    finally:
        _recurrence.group_bytes(default)
    for name in runs[0]:
        for other in runs[1:]:
            assert np.array_equal(runs[0][name], other[name]), f"{name} depends on the groups of panels"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_the_bits_do_not_depend_on_how_the_weight_gradients_read_dG(restore_threads, mode, dtype, threads):
    """The weight gradients' products read dG.T in dG itself (rows up to
    4 KB) or from tiles of it transposed into scratch: both give the same
    bits for every output and gradient.  H=136: tiles of blocks of 12 rows
    and leftover rows of dG.T; a ragged batch in both directions, B=16 and
    lengths 33-40: more rows than a block of the weight gradients (GRAD_KC,
    512)."""
    from fastrnn._kernels import recurrence as _recurrence
    lengths = np.random.default_rng(10).integers(33, 41, size=16)
    default = _recurrence.grad_in_place_bytes()
    runs = []
    try:
        for nbytes in (0, 1 << 40):
            _recurrence.grad_in_place_bytes(nbytes)
            runs.append(run_everything(mode, dtype, threads, lengths, 16, True, H=136))
    finally:
        _recurrence.grad_in_place_bytes(default)
    for name in runs[0]:
        assert np.array_equal(runs[0][name], runs[1][name]), f"{name} depends on how dG is read"
