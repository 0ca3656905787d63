"""memory: the adding problem, where a vanilla RNN cannot learn and an LSTM can.

Many-to-one: each sequence has T = 100 steps of two inputs, a random value in
[0, 1] and a marker; exactly two steps are marked (one in each half), and the
target is the sum of their two values.  Always answering 1 (the mean) gives a
mean squared error of 1/6 = 0.167; a model must carry the first marked value
across up to 99 steps to do better.

A vanilla tanh RNN and an LSTM of the same width are trained the same way
(Adam, gradient clipping, the same number of steps on the same data); then,
for a batch, the gradient of the loss with respect to the input at each step
shows why: through the RNN it shrinks by orders of magnitude going back in
time (vanishing gradients), through the LSTM's additive cell state much less.
Writes memory.png.

    fastrnn demo memory [--quick]
"""
from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

import fastrnn
from fastrnn import nn, optim
from fastrnn.demos._common import Progress, pyplot, setup

T = 100


def adding_batch(rng: np.random.Generator, batch: int, steps: int = T) -> tuple[np.ndarray, np.ndarray]:
    """x (batch, steps, 2): values and markers; y (batch, 1): the marked sum."""
    values = rng.uniform(0, 1, (batch, steps)).astype(np.float32)
    first = rng.integers(0, steps // 2, batch)
    second = rng.integers(steps // 2, steps, batch)
    markers = np.zeros((batch, steps), dtype=np.float32)
    rows = np.arange(batch)
    markers[rows, first] = 1
    markers[rows, second] = 1
    y = (values[rows, first] + values[rows, second])[:, None]
    return np.stack([values, markers], axis=-1), y


class Adder(nn.Module):
    """A recurrent layer read at its final state, then a linear output."""

    def __init__(self, cell: str, hidden: int, seed: int = 0) -> None:
        super().__init__()
        cls = {"RNN": fastrnn.RNN, "LSTM": fastrnn.LSTM}[cell]
        self.rnn: fastrnn.RNN | fastrnn.LSTM = cls(2, hidden, batch_first=True, seed=seed)
        self.head = nn.Linear(hidden, 1, seed=seed + 1)
        self._config = dict(cell=cell, hidden=hidden, seed=seed)
        self.cell = cell

    def __call__(self, x: np.ndarray) -> np.ndarray:
        _, state = self.rnn(x)
        h_n = state[0] if isinstance(state, tuple) else state
        return self.head(h_n[-1])

    def backward(self, dpred: np.ndarray) -> np.ndarray:
        dh_n = self.head.backward(dpred)[None]              # the gradient reaches the final state only
        dx, _ = self.rnn.backward(None, dh_n)
        return dx                                           # (batch, T, 2)


fastrnn.register(Adder)


def train(model: Adder, rng: np.random.Generator, steps: int, batch: int, lr: float, bar_desc: str) -> list[float]:
    opt = optim.Adam(model.params, lr=lr)
    losses = []
    bar = Progress(total=steps, desc=bar_desc, unit="step")
    for step in range(steps):
        x, y = adding_batch(rng, batch)
        loss, dpred = nn.mse_loss(model(x), y)
        model.backward(dpred)
        fastrnn.clip_grad_norm(model.grads, max_norm=1.0)
        opt.step(model.grads)
        model.zero_grad()
        losses.append(loss)
        if step % 10 == 9 or step == steps - 1:
            bar.update(10 if step % 10 == 9 else step % 10 + 1, loss=f"{np.mean(losses[-50:]):.4f}")
    bar.close()
    return losses


def gradient_per_step(model: Adder, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """||d loss / d x_t||, averaged over the batch, for t = 0 .. T-1."""
    model.train()
    loss, dpred = nn.mse_loss(model(x), y)
    dx = model.backward(dpred)
    model.zero_grad()
    norms: np.ndarray = np.linalg.norm(dx.astype(np.float64), axis=2).mean(axis=0)
    return norms


def main(seed: int = 0, threads: int | None = None, quick: bool = False, out: str | None = None,
         steps: int = 3000, hidden: int = 64, batch: int = 64) -> dict[str, Any]:
    out = setup(seed, threads, out)
    if quick:
        steps, hidden = 150, 16
    print(f"memory: the adding problem, T = {T}; predicting the mean costs 1/6 = 0.167 (mean squared error). "
          f"RNN(2, {hidden}, tanh) and LSTM(2, {hidden}), each trained {steps} steps with Adam, batch {batch}, "
          f"{fastrnn.get_num_threads()} threads")
    test_x, test_y = adding_batch(np.random.default_rng(seed + 1000), 1000)
    results: dict[str, Any] = {}
    for cell, lr in (("RNN", 1e-3), ("LSTM", 2e-3)):
        model = Adder(cell, hidden, seed)
        rng = np.random.default_rng(seed)
        initial = gradient_per_step(model, test_x[:256], test_y[:256])
        start = time.perf_counter()
        losses = train(model, rng, steps, batch, lr, f"{cell:4s} training")
        took = time.perf_counter() - start
        model.eval()
        test_mse = nn.mse_loss(model(test_x), test_y)[0]
        grads = gradient_per_step(model, test_x[:256], test_y[:256])
        results[cell] = {"first_loss": float(np.mean(losses[:20])), "last_loss": float(np.mean(losses[-20:])),
                         "test_mse": float(test_mse), "steps": len(losses), "grad_norms": grads,
                         "initial_grad_norms": initial}
        print(f"{cell}: {len(losses)} steps in {took:.0f} s, test mean squared error {test_mse:.4f} "
              f"({'learnt' if test_mse < 0.05 else 'not learnt: about the 0.167 of predicting the mean'})")

    print("\nnorm of d loss / d x_t, averaged over 256 test sequences (t = 99 is the last step, where the "
          "loss is read), at initialisation and after training:")
    print("   t    RNN init   LSTM init   RNN trained  LSTM trained")
    for t in list(range(T - 1, -1, -10)) + [0]:
        print(f"  {t:3d}  {results['RNN']['initial_grad_norms'][t]:.2e}   "
              f"{results['LSTM']['initial_grad_norms'][t]:.2e}    {results['RNN']['grad_norms'][t]:.2e}     "
              f"{results['LSTM']['grad_norms'][t]:.2e}")
    for cell in ("RNN", "LSTM"):
        g0, g = results[cell]["initial_grad_norms"], results[cell]["grad_norms"]
        print(f"{cell}: the gradient reaching step 0 is {g0[0] / g0[T - 1]:.1e} times the one at step 99 at "
              f"initialisation, {g[0] / g[T - 1]:.1e} after training")

    png = os.path.join(out, "memory.png")
    plt = pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        steps_back = np.arange(T)[::-1]
        for cell, color in (("RNN", "tab:red"), ("LSTM", "tab:blue")):
            ax.semilogy(steps_back, results[cell]["grad_norms"], color=color,
                        label=f"{cell}, trained (test MSE {results[cell]['test_mse']:.3f})")
            ax.semilogy(steps_back, results[cell]["initial_grad_norms"], color=color, linestyle=":",
                        label=f"{cell}, at initialisation")
        ax.set_xlabel("steps back from the end of the sequence")
        ax.set_ylabel("|| d loss / d x_t ||")
        ax.set_title(f"Adding problem, T = {T}: gradients reaching earlier steps")
        ax.legend()
        fig.tight_layout()
        fig.savefig(png, dpi=100)
        plt.close(fig)
        print(f"wrote {png}")
    results["plot"] = png
    return results
