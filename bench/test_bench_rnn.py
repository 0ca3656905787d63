"""pytest-benchmark suite: every cell, every size, forward (eval) and
forward+backward (training), float32, fastrnn against NumPy by hand, PyTorch
and (forward) onnxruntime.  Run: pytest bench/ --benchmark-only
(--benchmark-group-by=group shows each cell/size/mode with its contenders).
bench/compare.py runs the same grid in rotation and checks the targets."""
import numpy as np
import pytest

import contenders as C
import fastrnn
from conftest import THREADS

CONTENDERS = ["fastrnn", "numpy", "torch", "onnxruntime"]


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("size", list(C.SIZES))
@pytest.mark.parametrize("cell", C.CELLS)
def test_grid(benchmark, problems, cell, size, mode, contender):
    if contender in ("torch", "onnxruntime") and not C.have(contender):
        pytest.skip(f"{contender} is not installed")
    if contender == "onnxruntime" and mode == "fwd+bwd":
        pytest.skip("onnxruntime runs inference only")
    fn = problems(cell, size)[contender]["forward" if mode == "fwd" else "train_step"]
    flops = C.flops(cell, size, backward=mode == "fwd+bwd")
    benchmark.group = f"{cell} {size} {mode}"
    benchmark.extra_info.update(flops=flops, shape=dict(zip("BTIH", C.SIZES[size])))
    benchmark.pedantic(fn, warmup_rounds=3, rounds=15 if size in ("large", "wide") else 50, iterations=1)
    benchmark.extra_info["gflops"] = flops / benchmark.stats.stats.median / 1e9


@pytest.mark.parametrize("who", ["fastrnn lengths", "fastrnn padded", "torch packed"])
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
def test_ragged(benchmark, who, mode):
    """B=32, T=100, I=H=128 LSTM, lengths uniform in [T/4, T]."""
    B, T, I, H = 32, 100, 128, 128
    lengths = np.random.default_rng(1).integers(T // 4, T + 1, size=B)
    rng = np.random.default_rng(0)
    layer = fastrnn.LSTM(I, H, seed=0)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    dy[np.arange(T)[:, None] >= lengths[None, :]] = 0
    if who == "torch packed":
        if not C.have("torch"):
            pytest.skip("torch is not installed")
        c = C.torch_contender("LSTM", layer, x, dy, lengths=lengths)
    else:
        c = C.fastrnn_contender(layer, x, dy, lengths=lengths if who == "fastrnn lengths" else None)
    benchmark.group = f"ragged LSTM {mode}"
    benchmark.pedantic(c["forward" if mode == "fwd" else "train_step"], warmup_rounds=3, rounds=30)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("size", ["medium", "large"])
def test_threads(benchmark, problems, size, threads):
    """Thread scaling of the LSTM forward+backward."""
    step = problems("LSTM", size)["fastrnn"]["train_step"]
    fastrnn.set_num_threads(threads)
    try:
        benchmark.group = f"threads LSTM {size} fwd+bwd"
        benchmark.pedantic(step, warmup_rounds=2, rounds=10)
    finally:
        fastrnn.set_num_threads(THREADS)
