"""The benchmark's contenders, built on one shared set of weights:

- fastrnn: the layer, eval mode for the forward, training mode for forward+backward;
- numpy: what a user writes by hand: the input GEMM once, then per step `h @ W_hh.T`
  and NumPy pointwise ops; the backward a hand-written BPTT;
- torch: torch.nn.RNN/GRU/LSTM, forward under no_grad, forward+backward with autograd
  (the input requires grad, as fastrnn computes dx);
- onnxruntime (forward only): the ONNX export of the same torch module.

Each contender is a dict of callables `forward()` and `train_step()` (forward +
backward with a fixed output gradient), and `output()` for checking that all agree.
"""
from __future__ import annotations

import io
import os

import numpy as np

import fastrnn

SIZES = {  # name: (B, T, I, H)
    "stream": (1, 100, 64, 64),
    "small": (8, 200, 32, 128),
    "medium": (32, 100, 128, 128),
    "large": (64, 50, 512, 512),
    "wide": (16, 25, 1024, 1024),
}
CELLS = ("RNN", "GRU", "LSTM")
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def flops(cell: str, size: str, backward: bool = False) -> float:
    """2*T*B*G*H*(I+H) for a forward; three times that with the backward."""
    B, T, I, H = SIZES[size]
    f = 2.0 * T * B * GATES[cell] * H * (I + H)
    return 3 * f if backward else f


def make_problem(cell: str, size: str, seed: int = 0):
    """fastrnn layer, input x (T, B, I) and output gradient dy, float32."""
    B, T, I, H = SIZES[size]
    rng = np.random.default_rng(seed)
    layer = getattr(fastrnn, cell)(I, H, seed=seed)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    return layer, x, dy


# --- fastrnn --------------------------------------------------------------------

def fastrnn_contender(layer, x, dy, lengths=None):
    def forward():
        layer.eval()
        return layer(x, lengths=lengths)[0]

    def train_step():
        layer.train()
        y, _ = layer(x, lengths=lengths)
        layer.backward(dy)
        return y

    return {"forward": forward, "train_step": train_step, "output": forward}


# --- NumPy by hand ----------------------------------------------------------------

def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def numpy_forward(cell, p, x, keep=False):
    """Forward of one layer written with NumPy: (y, tape)."""
    T, B, I = x.shape
    H = p["weight_hh_l0"].shape[1]
    w_hh_t = p["weight_hh_l0"].T.copy()
    xw = (x.reshape(T * B, I) @ p["weight_ih_l0"].T + p["bias_ih_l0"]).reshape(T, B, -1)
    b_hh = p["bias_hh_l0"]
    h = np.zeros((B, H), np.float32)
    c = np.zeros((B, H), np.float32)
    y = np.empty((T, B, H), np.float32)
    tape = []
    for t in range(T):
        hw = h @ w_hh_t + b_hh
        if cell == "RNN":
            h_new = np.tanh(xw[t] + hw)
            cache = (h, h_new)
        elif cell == "LSTM":
            g = xw[t] + hw
            i, f, gg, o = _sigmoid(g[:, :H]), _sigmoid(g[:, H:2 * H]), np.tanh(g[:, 2 * H:3 * H]), _sigmoid(g[:, 3 * H:])
            c_new = f * c + i * gg
            tc = np.tanh(c_new)
            h_new = o * tc
            cache = (h, c, i, f, gg, o, tc)
            c = c_new
        else:  # GRU
            r = _sigmoid(xw[t, :, :H] + hw[:, :H])
            z = _sigmoid(xw[t, :, H:2 * H] + hw[:, H:2 * H])
            n = np.tanh(xw[t, :, 2 * H:] + r * hw[:, 2 * H:])
            h_new = n + z * (h - n)
            cache = (h, r, z, n, hw[:, 2 * H:])
        if keep:
            tape.append(cache)
        h = h_new
        y[t] = h
    return y, tape


def numpy_backward(cell, p, x, tape, dy):
    """Hand-written BPTT of numpy_forward: returns dx and the parameter grads."""
    T, B, I = x.shape
    H = p["weight_hh_l0"].shape[1]
    G = GATES[cell]
    w_hh = p["weight_hh_l0"]
    dxw = np.empty((T, B, G * H), np.float32)
    dhw = np.empty((T, B, G * H), np.float32)
    h_prev = np.empty((T, B, H), np.float32)
    dh = np.zeros((B, H), np.float32)
    dc = np.zeros((B, H), np.float32)
    for t in reversed(range(T)):
        d = dh + dy[t]
        if cell == "RNN":
            h, h_new = tape[t]
            dxw[t] = dhw[t] = d * (1 - h_new * h_new)
            dh = dxw[t] @ w_hh
        elif cell == "LSTM":
            h, c, i, f, gg, o, tc = tape[t]
            dc = dc + d * o * (1 - tc * tc)
            g = np.concatenate([dc * gg * i * (1 - i), dc * c * f * (1 - f), dc * i * (1 - gg * gg),
                                d * tc * o * (1 - o)], axis=1)
            dc = dc * f
            dxw[t] = dhw[t] = g
            dh = g @ w_hh
        else:
            h, r, z, n, hn = tape[t]
            dn = d * (1 - z) * (1 - n * n)
            dz = d * (h - n) * z * (1 - z)
            dr = dn * hn * r * (1 - r)
            dxw[t] = np.concatenate([dr, dz, dn], axis=1)
            dhw[t] = np.concatenate([dr, dz, dn * r], axis=1)
            dh = dhw[t] @ w_hh + d * z
        h_prev[t] = h
    dxw2, dhw2 = dxw.reshape(T * B, -1), dhw.reshape(T * B, -1)
    grads = {"weight_ih_l0": dxw2.T @ x.reshape(T * B, I), "weight_hh_l0": dhw2.T @ h_prev.reshape(T * B, H),
             "bias_ih_l0": dxw2.sum(0), "bias_hh_l0": dhw2.sum(0)}
    return (dxw2 @ p["weight_ih_l0"]).reshape(T, B, I), grads


def numpy_contender(cell, layer, x, dy):
    p = layer.state_dict()

    def forward():
        return numpy_forward(cell, p, x)[0]

    def train_step():
        y, tape = numpy_forward(cell, p, x, keep=True)
        numpy_backward(cell, p, x, tape, dy)
        return y

    return {"forward": forward, "train_step": train_step, "output": forward}


# --- PyTorch -----------------------------------------------------------------------

def torch_module(cell, layer):
    import torch
    module = getattr(torch.nn, cell)(layer.input_size, layer.hidden_size)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    return module


def torch_contender(cell, layer, x, dy, lengths=None):
    import torch
    module = torch_module(cell, layer)
    xt, dyt = torch.from_numpy(x), torch.from_numpy(dy)

    def run(inp):
        if lengths is None:
            return module(inp)[0]
        packed = torch.nn.utils.rnn.pack_padded_sequence(inp, torch.from_numpy(lengths), enforce_sorted=False)
        out, _ = module(packed)
        return torch.nn.utils.rnn.pad_packed_sequence(out, total_length=x.shape[0])[0]

    def forward():
        with torch.no_grad():
            return run(xt)

    def train_step():
        inp = xt.detach().requires_grad_(True)
        module.zero_grad(set_to_none=True)
        out = run(inp)
        out.backward(dyt)
        return out

    return {"forward": forward, "train_step": train_step, "output": lambda: forward().numpy()}


# --- onnxruntime -------------------------------------------------------------------

def onnxruntime_contender(cell, layer, x, threads):
    import onnxruntime as ort
    import torch
    module = torch_module(cell, layer)
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(module, (torch.from_numpy(x),), buffer, input_names=["x"], output_names=["y"],
                          dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])

    def forward():
        return session.run(["y"], {"x": x})[0]

    return {"forward": forward, "output": lambda: forward().reshape(x.shape[0], x.shape[1], -1)}


def set_threads(n: int) -> None:
    """The same thread count for every contender."""
    from threadpoolctl import threadpool_limits
    fastrnn.set_num_threads(n)
    threadpool_limits(n)  # NumPy's and SciPy's BLAS
    try:
        import torch
        torch.set_num_threads(n)
    except ImportError:
        pass
    os.environ["OMP_NUM_THREADS"] = str(n)


def product_gflops(product, n: int, seconds: float, repeats: int) -> float:
    """GFLOP/s of `product` (an n x n by n x n float32 matrix product): the
    median of the products timed in `seconds`, at least `repeats` of them."""
    import time
    product()
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < repeats:
        t0 = time.perf_counter()
        product()
        times.append(time.perf_counter() - t0)
    return 2.0 * n ** 3 / float(np.median(times)) / 1e9


def sgemm_ceilings(seconds: float = 1.0, n: int = 2048, repeats: int = 3) -> dict:
    """GFLOP/s of a plain large float32 matrix product, by NumPy's BLAS and by
    fastrnn's own product (nn.Linear without bias): the machine's ceiling for
    an RNN, whose work is matrix products, is the faster of the two.  (Both
    are read because NumPy's OpenBLAS may not use the CPU's widest vectors:
    on a Zen 5 it runs its Haswell kernels, AVX2, at about half of what the
    cores' AVX-512 FMAs can do.)"""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    linear = fastrnn.nn.Linear(n, n, bias=False)
    return {"numpy": product_gflops(lambda: a @ b, n, seconds / 2, repeats),
            "fastrnn": product_gflops(lambda: linear(a), n, seconds / 2, repeats)}


def probe_gflops() -> float:
    """One 1024^3 product by NumPy's BLAS (2.1 GFLOP: 10-30 ms on 2 threads
    here): a quick reading of how much of the machine is there now."""
    a = np.ones((1024, 1024), dtype=np.float32)
    return product_gflops(lambda: a @ a, 1024, 0.0, 1)


def have(module: str) -> bool:
    """Whether an optional contender's library is installed."""
    import importlib.util
    return importlib.util.find_spec(module) is not None


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()
