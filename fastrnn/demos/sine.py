"""Forecast noisy sums of sines one step ahead with an LSTM (many-to-many).

An LSTM reads a sequence and a linear readout predicts the next value at
every step; mean squared error, Adam, gradient clipping.  Trains for a few
seconds and prints the loss, against the loss of the naive forecast "next =
current" as a yardstick.
"""
from __future__ import annotations

import time

import numpy as np

import fastrnn


def make_batch(rng, batch, steps):
    """batch of sequences (steps + 1, batch, 1): two sines of random
    frequency and phase, plus noise."""
    t = np.arange(steps + 1)[:, None]
    f1, f2 = rng.uniform(0.05, 0.2, batch), rng.uniform(0.2, 0.5, batch)
    p1, p2 = rng.uniform(0, 2 * np.pi, batch), rng.uniform(0, 2 * np.pi, batch)
    s = np.sin(f1 * t + p1) + 0.5 * np.sin(f2 * t + p2) + 0.05 * rng.standard_normal((steps + 1, batch))
    return s[:, :, None].astype(np.float32)


class Adam:
    """Adam over a dict of parameters and a dict of their gradients."""

    def __init__(self, params, lr=3e-3, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.lr, self.betas, self.eps, self.t = params, lr, betas, eps, 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, grads):
        self.t += 1
        b1, b2 = self.betas
        for k, p in self.params.items():
            g = grads[k]
            self.m[k] = b1 * self.m[k] + (1 - b1) * g
            self.v[k] = b2 * self.v[k] + (1 - b2) * g * g
            m_hat = self.m[k] / (1 - b1 ** self.t)
            v_hat = self.v[k] / (1 - b2 ** self.t)
            p -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


def main(seconds: float = 5.0, hidden: int = 32, batch: int = 32, steps: int = 100, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    lstm = fastrnn.LSTM(1, hidden, seed=seed)
    readout = {"weight": (rng.standard_normal((1, hidden)) / np.sqrt(hidden)).astype(np.float32),
               "bias": np.zeros(1, np.float32)}
    params = dict(lstm.params, **{f"readout.{k}": v for k, v in readout.items()})
    opt = Adam(params)
    val = make_batch(np.random.default_rng(seed + 1), 256, steps)
    naive = float(np.mean((val[1:] - val[:-1]) ** 2))
    print(f"fastrnn {fastrnn.__version__}: LSTM(1, {hidden}) forecasting sums of sines, batch {batch}, "
          f"{steps} steps, {fastrnn.get_num_threads()} threads")
    print(f"naive forecast (next = current) validation MSE: {naive:.4f}")
    start, it, last_print = time.perf_counter(), 0, 0.0
    while True:
        seq = make_batch(rng, batch, steps)
        x, target = seq[:-1], seq[1:]
        lstm.zero_grad()
        y, _ = lstm(x)
        pred = y @ readout["weight"].T + readout["bias"]
        err = pred - target
        loss = float(np.mean(err ** 2))
        dpred = 2 * err / err.size
        grads = {"readout.weight": dpred.reshape(-1, 1).T @ y.reshape(-1, hidden),
                 "readout.bias": dpred.sum(axis=(0, 1))}
        lstm.backward(dpred @ readout["weight"])
        grads.update(lstm.grads)
        fastrnn.clip_grad_norm(grads, max_norm=1.0)
        opt.step(grads)
        it += 1
        elapsed = time.perf_counter() - start
        if elapsed - last_print >= 1.0 or elapsed >= seconds:
            last_print = elapsed
            print(f"  {elapsed:5.1f} s  step {it:5d}  training MSE {loss:.4f}")
        if elapsed >= seconds:
            break
    lstm.eval()
    y, _ = lstm(val[:-1])
    val_mse = float(np.mean((y @ readout["weight"].T + readout["bias"] - val[1:]) ** 2))
    print(f"validation MSE after {it} steps: {val_mse:.4f} ({naive / val_mse:.1f}x better than naive)")
    return val_mse
