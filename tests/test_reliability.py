"""Trust under bad input, long runs, threads and extreme values: property-based
tests against the float64 reference, leaks over 10,000 calls, the GIL released
and shared layers across threads, Ctrl-C during a long call, memory that
cannot be had, and 10,000 damaged model files."""
import os
import resource
import subprocess
import sys
import threading
import tracemalloc

import numpy as np
import pytest

import fastrnn
from conftest import MODES, backward_layer, make_layer, require, run_layer, subprocess_env
from fastrnn._kernels import recurrence as _recurrence
from test_reference import TOL, random_case, reference_run

hypothesis = require("hypothesis")
st = hypothesis.strategies


@pytest.fixture
def every_loop_threaded():
    """Run the parallel paths even at the small sizes drawn here."""
    previous = _recurrence.parallel_threshold(0)
    threads = fastrnn.get_num_threads()
    yield
    _recurrence.parallel_threshold(previous)
    fastrnn.set_num_threads(threads)


# --- property-based: any valid configuration matches the reference ------------------------


@hypothesis.settings(max_examples=150, deadline=None, derandomize=True,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(mode=st.sampled_from(MODES), dtype=st.sampled_from([np.float32, np.float64]),
                  T=st.integers(1, 7), B=st.integers(1, 6), I=st.integers(1, 9), H=st.integers(1, 19),
                  L=st.integers(1, 3), bidirectional=st.booleans(), batch_first=st.booleans(),
                  with_lengths=st.booleans(), bias=st.booleans(), threads=st.integers(1, 3),
                  seed=st.integers(0, 2**31))
def test_any_configuration_matches_reference(every_loop_threaded, mode, dtype, T, B, I, H, L, bidirectional,
                                             batch_first, with_lengths, bias, threads, seed):
    fastrnn.set_num_threads(threads)
    D = 2 if bidirectional else 1
    rng = np.random.default_rng(seed)
    layer = make_layer(mode, I, H, dtype=dtype, num_layers=L, bidirectional=bidirectional, bias=bias,
                       batch_first=batch_first, seed=seed)
    x, h0, c0, lengths, dy, dh_n, dc_n = random_case(rng, mode, T, B, I, H, L, D, with_lengths)
    swap = (lambda a: a.transpose(1, 0, 2)) if batch_first else (lambda a: a)
    y, h_n, c_n = run_layer(layer, swap(x), (h0, c0) if mode == "LSTM" else h0, lengths)
    dx, dh_0, dc_0 = backward_layer(layer, swap(dy), dh_n, dc_n)
    want = reference_run(mode, layer, x, h0, c0, lengths, dy, dh_n, dc_n)
    got = (swap(y), h_n, c_n, swap(dx), dh_0, dc_0)
    for name, g, w in zip(("y", "h_n", "c_n", "dx", "dh_0", "dc_0"), got, want[:6]):
        if w is None:
            assert g is None
        else:
            np.testing.assert_allclose(g, w, err_msg=name, **TOL[dtype])
    assert set(layer.grads) <= set(want[6])
    for name in layer.grads:   # (the reference has zero biases when the layer has none)
        np.testing.assert_allclose(layer.grads[name], want[6][name], err_msg=name, **TOL[dtype])


BAD_X = {
    "wrong feature size": lambda T, B, I: np.zeros((T, B, I + 1), np.float32),
    "4-D": lambda T, B, I: np.zeros((T, B, I, 1), np.float32),
    "1-D": lambda T, B, I: np.zeros(I, np.float32),
    "no steps": lambda T, B, I: np.zeros((0, B, I), np.float32),
    "integers": lambda T, B, I: np.zeros((T, B, I), np.int64),
    "complex": lambda T, B, I: np.zeros((T, B, I), np.complex64),
    "objects": lambda T, B, I: np.full((T, B, I), None),
    "strings": lambda T, B, I: np.full((T, B, I), "a"),
    "a dict": lambda T, B, I: {"x": 1},
}


@hypothesis.settings(max_examples=120, deadline=None, derandomize=True)
@hypothesis.given(mode=st.sampled_from(MODES), T=st.integers(1, 5), B=st.integers(1, 4), I=st.integers(1, 6),
                  H=st.integers(1, 8), bad=st.sampled_from(sorted(BAD_X)),
                  state=st.sampled_from(["ok", "wrong batch", "wrong layers", "integers"]),
                  lengths=st.sampled_from(["ok", "zero", "too long", "floats", "wrong count"]))
def test_invalid_input_raises_cleanly(mode, T, B, I, H, bad, state, lengths):
    """Bad input raises ValueError or TypeError, and the layer works afterwards."""
    layer = make_layer(mode, I, H, dtype=np.float32, seed=0)
    good_x = np.zeros((T, B, I), np.float32)
    h = {"ok": np.zeros((1, B, H), np.float32), "wrong batch": np.zeros((1, B + 1, H), np.float32),
         "wrong layers": np.zeros((2, B, H), np.float32), "integers": np.zeros((1, B, H), np.int32)}[state]
    hx = (h, h) if mode == "LSTM" else h
    lens = {"ok": np.full(B, T), "zero": np.zeros(B, int), "too long": np.full(B, T + 1),
            "floats": np.full(B, 1.0), "wrong count": np.full(B + 1, T)}[lengths]
    with pytest.raises((ValueError, TypeError)):
        layer(BAD_X[bad](T, B, I), hx, lens)
    if state != "ok":
        with pytest.raises((ValueError, TypeError)):
            layer(good_x, hx)
    if lengths != "ok":
        with pytest.raises((ValueError, TypeError)):
            layer(good_x, None, lens)
    y = run_layer(layer, good_x)[0]
    assert y.shape == (T, B, H) and np.isfinite(y).all()


# --- no leaks ------------------------------------------------------------------------


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
@pytest.mark.parametrize("mode", MODES)
def test_no_leak_over_10000_calls(mode):
    """10,000 forward+backward calls grow resident memory by < 5 MB; over
    2,000 more, the memory Python traces stays flat (tracemalloc slows every
    call several times, hence the shorter run)."""
    rng = np.random.default_rng(0)
    layer = make_layer(mode, 8, 16, dtype=np.float32, num_layers=2, bidirectional=True, seed=0)
    x = rng.standard_normal((10, 4, 8)).astype(np.float32)
    lengths = np.array([10, 7, 3, 10])

    def call():
        y = run_layer(layer, x, lengths=lengths)[0]
        backward_layer(layer, np.ones_like(y), None)

    for _ in range(200):   # warm-up: caches, scratch buffers, allocator pools
        call()
    rss_before = _rss_bytes()
    for _ in range(10_000):
        call()
    rss_growth = _rss_bytes() - rss_before
    tracemalloc.start()
    try:
        traced_before = tracemalloc.get_traced_memory()[0]
        for _ in range(2_000):
            call()
        traced_growth = tracemalloc.get_traced_memory()[0] - traced_before
    finally:
        tracemalloc.stop()
    print(f"{mode}: 10,000 calls, resident memory +{rss_growth} bytes; 2,000 more, traced +{traced_growth} bytes")
    assert rss_growth < 5 * 2**20
    assert traced_growth < 64 * 2**10


# --- threads -----------------------------------------------------------------------


def test_kernels_release_the_gil():
    """While one thread is inside a long kernel call, another runs Python code:
    a counter in the main thread advances during the call (with the GIL held
    it could not)."""
    layer = fastrnn.LSTM(64, 256, seed=0).eval()
    x = np.random.default_rng(0).standard_normal((3000, 4, 64)).astype(np.float32)
    inside = threading.Event()
    done = threading.Event()
    counts = {}

    def worker():
        inside.set()
        layer(x)
        done.set()

    thread = threading.Thread(target=worker)
    count = 0
    thread.start()
    inside.wait()
    start = count
    while not done.is_set():
        count += 1
    thread.join()
    counts["during"] = count - start
    assert counts["during"] > 10_000, counts


@pytest.mark.parametrize("mode", MODES)
def test_shared_eval_layer_across_eight_threads(mode):
    """Eight threads running inference on one eval-mode layer get exactly the
    serial results."""
    layer = make_layer(mode, 12, 24, dtype=np.float32, num_layers=2, bidirectional=True, seed=0).eval()
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((40, 3 + i, 12)).astype(np.float32) for i in range(8)]
    serial = [run_layer(layer, x)[0] for x in inputs]
    results = [None] * 8
    barrier = threading.Barrier(8)

    def worker(i):
        barrier.wait()
        for _ in range(5):
            results[i] = run_layer(layer, inputs[i])[0]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, serial):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode", MODES)
def test_training_one_layer_from_several_threads(mode):
    """Training calls on one layer from four threads at once: each either
    succeeds or raises RuntimeError (its forward was replaced by another
    thread's), and the gradients are exactly those of the calls that succeeded."""
    layer = make_layer(mode, 6, 10, dtype=np.float64, seed=0)
    rng = np.random.default_rng(2)
    inputs = [rng.standard_normal((30, 5, 6)) for _ in range(4)]
    outcome = [None] * 4
    barrier = threading.Barrier(4)

    def worker(i):
        barrier.wait()
        y = run_layer(layer, inputs[i])[0]
        try:
            backward_layer(layer, np.ones_like(y), None)
            outcome[i] = "ok"
        except (RuntimeError, ValueError) as exc:
            outcome[i] = "refused" if "another thread" in str(exc) else str(exc)

    for _ in range(5):
        layer.zero_grad()
        outcome[:] = [None] * 4
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert "ok" in outcome and set(outcome) <= {"ok", "refused"}, outcome
        got = {k: v.copy() for k, v in layer.grads.items()}
        layer.zero_grad()
        for i, result in enumerate(outcome):
            if result == "ok":
                y = run_layer(layer, inputs[i])[0]
                backward_layer(layer, np.ones_like(y), None)
        for name, g in layer.grads.items():
            np.testing.assert_allclose(got[name], g, rtol=1e-12, atol=1e-12, err_msg=name)


# --- Ctrl-C -------------------------------------------------------------------------

SIGINT_CHILD = r"""
import os, signal, sys, threading, time
import numpy as np, fastrnn
mode, which = sys.argv[1], sys.argv[2]
layer = {"RNN_TANH": lambda: fastrnn.RNN(16, 32, seed=0), "LSTM": lambda: fastrnn.LSTM(16, 32, seed=0),
         "GRU": lambda: fastrnn.GRU(16, 32, seed=0),
         "GRU_RESET_BEFORE": lambda: fastrnn.GRU(16, 32, reset_after=False, seed=0),
         "LSTM_ROWS": lambda: fastrnn.LSTM(16, 64, seed=0)}[mode]()
if mode == "LSTM_ROWS":   # 8 rows over 2 threads: they share the rows, and never meet at a barrier
    fastrnn.set_num_threads(2)
    layer.eval()
    x = np.random.default_rng(0).standard_normal((3 * 10**5, 8, 16)).astype(np.float32)
else:
    x = np.random.default_rng(0).standard_normal((3 * 10**6, 1, 16)).astype(np.float32)
if which == "backward":
    y, _ = layer(x)
    before = {k: v.copy() for k, v in layer.grads.items()}
sent = []
def interrupt():
    time.sleep(0.3)
    sent.append(time.perf_counter())
    os.kill(os.getpid(), signal.SIGINT)
threading.Thread(target=interrupt).start()
try:
    layer(x) if which == "forward" else layer.backward(np.ones_like(y))
    print("completed")
except KeyboardInterrupt:
    print(f"interrupted {time.perf_counter() - sent[0]:.3f}")
if which == "backward":
    print("grads unchanged" if all(np.array_equal(before[k], layer.grads[k]) for k in before) else "grads changed")
layer.train()
y, _ = layer(x[:20])
layer.backward(np.ones_like(y))
print("usable")
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("mode, which", [(mode, which) for mode in ["RNN_TANH", "LSTM", "GRU", "GRU_RESET_BEFORE"]
                                         for which in ["forward", "backward"]] + [("LSTM_ROWS", "forward")])
def test_ctrl_c_interrupts_a_long_call(mode, which, tmp_path):
    """SIGINT during a forward or backward over T = 3,000,000 steps (a batch of
    one: the forward's second thread projects the input ahead of the steps;
    LSTM_ROWS: 300,000 steps of 8 rows, threads share the rows) raises
    KeyboardInterrupt before the call ends; a backward
    leaves the gradients unchanged; the layer works afterwards."""
    # cwd: not the source folder, which would shadow an installed fastrnn
    result = subprocess.run([sys.executable, "-c", SIGINT_CHILD, mode, which], capture_output=True, text=True,
                            env=subprocess_env(), cwd=tmp_path, timeout=300)
    lines = result.stdout.split()
    assert result.returncode == 0, result.stderr
    assert "interrupted" in lines, result.stdout
    latency = float(lines[lines.index("interrupted") + 1])
    print(f"{mode} {which}: KeyboardInterrupt {latency:.3f} s after SIGINT")
    if which == "backward":
        assert "unchanged" in lines
    assert lines[-1] == "usable"


# --- memory that cannot be had -----------------------------------------------------

MEMORY_CHILD = r"""
import resource, numpy as np, fastrnn
layer = fastrnn.LSTM(8, 64, num_layers=2, seed=0)
small = np.zeros((10, 2, 8), np.float32)
y, _ = layer(small)
layer.backward(np.ones_like(y))
grads = {k: v.copy() for k, v in layer.grads.items()}
resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))
big = np.broadcast_to(np.float32(0.5), (200_000, 64, 8))   # a view: no memory of its own
for attempt in ("training forward", "eval forward"):
    layer.train(attempt == "training forward")
    try:
        layer(big)
        print("allocated")
    except MemoryError as exc:
        print("MemoryError:", exc)
layer.train()
assert all(np.array_equal(grads[k], layer.grads[k]) for k in grads)
y, _ = layer(small)
layer.backward(np.ones_like(y))
print("usable")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS")
def test_memory_error_names_the_bytes_and_leaves_the_layer_usable(tmp_path):
    result = subprocess.run([sys.executable, "-c", MEMORY_CHILD], capture_output=True, text=True,
                            env=subprocess_env(), cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    errors = [line for line in result.stdout.splitlines() if line.startswith("MemoryError")]
    assert len(errors) == 2, result.stdout
    for line in errors:
        assert "LSTM.forward needs" in line and "bytes" in line and "GiB" in line
    assert result.stdout.splitlines()[-1] == "usable"


# --- numeric robustness ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_denormal_inputs_give_the_reference_numbers(mode):
    """Subnormal inputs and weights are computed, not flushed (timing: bench/denormals.py)."""
    layer = make_layer(mode, 8, 16, dtype=np.float32, seed=0)
    tiny = np.float32(1e-41)   # subnormal in float32
    x = np.full((20, 3, 8), tiny, np.float32)
    y = run_layer(layer, x)[0]
    want = reference_run(mode, layer, x.astype(np.float64), np.zeros((1, 3, 16)),
                         np.zeros((1, 3, 16)) if mode == "LSTM" else None, None,
                         np.zeros((20, 3, 16)), np.zeros((1, 3, 16)),
                         np.zeros((1, 3, 16)) if mode == "LSTM" else None)[0]
    np.testing.assert_allclose(y, want, **TOL[np.float32])


# --- hostile files ---------------------------------------------------------------------------


def test_10000_damaged_files_raise_only_value_error(tmp_path):
    """Random byte changes, insertions and truncations of a saved model (with
    optimiser state and extra data): loading raises ValueError or succeeds,
    never anything else, never crashes or hangs (pickle is never used)."""
    model = fastrnn.nn.Sequential(fastrnn.nn.Embedding(20, 8, seed=0),
                                  fastrnn.LSTM(8, 16, batch_first=True, seed=1),
                                  fastrnn.nn.Linear(16, 20, seed=2))
    path = tmp_path / "model.npz"
    fastrnn.save(path, model, optimizer=fastrnn.optim.Adam(model.params), extra={"chars": "abc"})
    good = path.read_bytes()
    rng = np.random.default_rng(0)
    damaged = tmp_path / "damaged.npz"
    outcomes = {"ValueError": 0, "loaded": 0}
    for _ in range(10_000):
        data = bytearray(good)
        kind = rng.random()
        if kind < 0.3:
            data = data[:rng.integers(0, len(data))]
        elif kind < 0.8:
            for _ in range(rng.integers(1, 10)):
                data[rng.integers(0, len(data))] = rng.integers(0, 256)
        else:
            at = rng.integers(0, len(data))
            data[at:at] = rng.bytes(int(rng.integers(1, 20)))
        damaged.write_bytes(bytes(data))
        try:
            fastrnn.load_checkpoint(damaged)
            outcomes["loaded"] += 1
        except ValueError:
            outcomes["ValueError"] += 1
    print(f"10,000 damaged files: {outcomes}")
    assert outcomes["ValueError"] > 9000


# --- 64-bit indices ------------------------------------------------------------------------------


@pytest.mark.skipif(os.environ.get("FASTRNN_LARGE_TESTS") != "1",
                    reason="needs 9 GB of memory and a minute: FASTRNN_LARGE_TESTS=1")
def test_offsets_past_2_to_the_31():
    """A forward whose output has more than 2**31 elements (offsets such as
    row * (D * H) pass 2**31): its last sequences equal the same sequences
    run alone, where every offset is small."""
    T, B, H = 4100, 512, 512
    layer = fastrnn.GRU(1, H, bidirectional=True, seed=0).eval()
    x = np.random.default_rng(0).standard_normal((T, B, 1)).astype(np.float32)
    y, h_n = layer(x)
    assert y.size > 2**31
    for b in (0, B - 1):
        y_b, h_b = layer(x[:, b:b + 1])
        np.testing.assert_array_equal(y[:, b], y_b[:, 0])
        np.testing.assert_array_equal(h_n[:, b], h_b[:, 0])
