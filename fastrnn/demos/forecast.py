"""forecast: atmospheric CO2 at Mauna Loa, 1958-2001, forecast with a GRU.

Many-to-many: the GRU reads the monthly series (as month-to-month changes, so
that the rising level does not leave the range seen in training) and at
every month forecasts each of the next 12 months, as changes from the
current value.  Trained on the first 80% of the months, then run over the
whole series; on the held-out last 20% its forecasts are compared with two
baselines:
  - naive: every future month equals the last observed one (misses the season);
  - seasonal naive: a month equals the same month a year earlier (misses the trend).
Prints the mean absolute errors and writes forecast.png (the held-out tail: the
truth, the GRU's and the naive forecasts six months ahead).

    fastrnn demo forecast [--quick]
"""
from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

import fastrnn
from fastrnn import nn, optim
from fastrnn.demos._common import Progress, data_path, pyplot, setup

HORIZON = 12          # months forecast at every step
SEASON = 12           # months in a season, for the seasonal-naive forecast
WINDOW = 120          # months per training window
WARMUP = 24           # steps of each window whose forecasts are not scored (the state settles)


def load_series() -> tuple[np.ndarray, np.ndarray]:
    """(years as floats, monthly mean CO2 in ppm)"""
    with data_path("co2_monthly.csv").open("r") as f:
        table = np.loadtxt(f, delimiter=",", skiprows=1)
    return table[:, 0] + (table[:, 1] - 0.5) / 12, table[:, 2]


def ahead(values: np.ndarray) -> np.ndarray:
    """(T, HORIZON): row t holds values[t+1 .. t+HORIZON] (NaN past the end)."""
    T = len(values)
    out = np.full((T, HORIZON), np.nan)
    for h in range(1, HORIZON + 1):
        out[:T - h, h - 1] = values[h:]
    return out


class Forecaster(nn.Module):
    """GRU over the scaled changes, a linear head forecasting HORIZON months."""

    def __init__(self, hidden: int = 64, layers: int = 2, seed: int = 0) -> None:
        super().__init__()
        self.rnn = fastrnn.GRU(1, hidden, num_layers=layers, batch_first=True, seed=seed)
        self.head = nn.Linear(hidden, HORIZON, seed=seed + 1)
        self._config = dict(hidden=hidden, layers=layers, seed=seed)

    def __call__(self, x: np.ndarray, hx: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        out, h = self.rnn(x, hx)
        return self.head(out), h

    def backward(self, dpred: np.ndarray) -> np.ndarray:
        dx, _ = self.rnn.backward(self.head.backward(dpred))
        return dx


fastrnn.register(Forecaster)


def main(seed: int = 0, threads: int | None = None, quick: bool = False, out: str | None = None,
         seconds: float = 60.0, hidden: int = 64, layers: int = 2, batch: int = 32) -> dict[str, Any]:
    out = setup(seed, threads, out)
    rng = np.random.default_rng(seed)
    years, co2 = load_series()
    split = int(len(co2) * 0.8)
    step_change = np.diff(co2, prepend=co2[0])                  # input: this month's change
    scale = step_change[1:split].std()
    x_all = (step_change / scale).astype(np.float32)
    target = ((ahead(co2) - co2[:, None]) / scale).astype(np.float32)   # output: changes from now
    if quick:
        seconds, hidden, layers = 3.0, 16, 1

    model = Forecaster(hidden, layers, seed)
    opt = optim.Adam(model.params, lr=3e-3)
    print(f"forecast: monthly CO2 at Mauna Loa, {len(co2)} months {years[0]:.0f}-{years[-1]:.0f}, training on the "
          f"first {split} (to {years[split - 1]:.0f}), {len(co2) - split} held out; GRU(1, {hidden}, "
          f"num_layers={layers}) -> Linear({hidden}, {HORIZON}); {seconds:g} s of training, "
          f"{fastrnn.get_num_threads()} threads")

    starts_max = split - WINDOW - HORIZON
    mask = np.zeros((batch, WINDOW, 1), dtype=np.float32)
    mask[:, WARMUP:] = 1
    norm = np.float32(1.0 / (mask.sum() * HORIZON))
    bar = Progress(total=max(1, int(seconds)), desc="forecast training", unit="s")
    start, step, shown, losses = time.perf_counter(), 0, 0, []
    while time.perf_counter() - start < seconds:
        idx = rng.integers(1, starts_max, size=batch)[:, None] + np.arange(WINDOW)
        pred, _ = model(x_all[idx][..., None])
        errors, dpred = nn.mse_loss(pred, target[idx], reduction="none")
        loss = float(np.sum(errors * mask)) * float(norm)           # MSE over the scored steps
        model.backward(dpred * mask * norm)
        fastrnn.clip_grad_norm(model.grads, max_norm=1.0)
        opt.step(model.grads)
        model.zero_grad()
        losses.append(loss)
        step += 1
        elapsed = time.perf_counter() - start
        if int(elapsed) > shown:
            bar.update(int(elapsed) - shown, loss=f"{np.mean(losses[-20:]):.4f}")
            shown = int(elapsed)
    bar.close()

    # forecasts for every month, the state carried through the whole series
    model.eval()
    pred, _ = model(x_all[None, :, None])
    forecast = co2[:, None] + pred[0] * scale                          # (T, HORIZON) ppm
    truth = ahead(co2)
    origins = np.arange(split - 1, len(co2) - HORIZON)                 # every forecast target held out
    naive = np.repeat(co2[origins, None], HORIZON, axis=1)
    seasonal = np.stack([co2[origins + h - SEASON * ((h - 1) // SEASON + 1)] for h in range(1, HORIZON + 1)], axis=1)
    forecasts = {"fastrnn GRU": forecast[origins], "naive": naive, "seasonal naive": seasonal}
    errors = {name: float(np.mean(np.abs(f - truth[origins]))) for name, f in forecasts.items()}
    by_horizon = {name: np.mean(np.abs(f - truth[origins]), axis=0) for name, f in forecasts.items()}
    print(f"held-out mean absolute error (ppm) over {len(origins)} forecast origins x 1-{HORIZON} months ahead:")
    for name, e in errors.items():
        print(f"  {name:15s} {e:6.3f}   (1 month ahead {by_horizon[name][0]:.3f}, "
              f"6 months {by_horizon[name][5]:.3f}, 12 months {by_horizon[name][11]:.3f})")
    beats = errors["fastrnn GRU"] < min(errors["naive"], errors["seasonal naive"])
    print("the GRU beats both baselines" if beats else "the GRU does NOT beat both baselines")

    png = os.path.join(out, "forecast.png")
    plt = pyplot()
    if plt is not None:
        h = 6
        when = years[origins + h]
        fig, ax = plt.subplots(figsize=(11, 4.5))
        ax.plot(when, truth[origins, h - 1], color="black", linewidth=1.5, label="observed")
        ax.plot(when, forecast[origins, h - 1], color="tab:blue", label=f"fastrnn GRU, {h} months ahead")
        ax.plot(when, naive[:, h - 1], color="tab:orange", label=f"naive (last value), {h} months ahead")
        ax.plot(when, seasonal[:, h - 1], color="tab:green", alpha=0.7, label="seasonal naive (a year before)")
        ax.set_xlabel("year")
        ax.set_ylabel("CO2 at Mauna Loa, ppm")
        ax.set_title(f"held-out tail; mean absolute error over 1-12 months ahead: GRU {errors['fastrnn GRU']:.2f}, "
                     f"naive {errors['naive']:.2f}, seasonal naive {errors['seasonal naive']:.2f} ppm")
        ax.legend()
        fig.tight_layout()
        fig.savefig(png, dpi=100)
        plt.close(fig)
        print(f"wrote {png}")
    path = os.path.join(out, "forecast.npz")
    fastrnn.save(path, model, extra={"demo": "forecast", "scale": float(scale)})
    return {"first_loss": float(np.mean(losses[:5])), "last_loss": float(np.mean(losses[-5:])),
            "errors": errors, "beats_baselines": beats, "plot": png, "steps": step}
