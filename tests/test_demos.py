"""Each demo (and examples/seq2seq.py) in --quick mode: it runs, its loss goes
down, it writes what it says; the sample command; truncated BPTT."""
import importlib.util
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import fastrnn
from conftest import subprocess_env
from fastrnn.__main__ import main as cli

HERE = os.path.dirname(os.path.abspath(__file__))


def test_charlm_quick(tmp_path, capsys):
    from fastrnn.demos import charlm
    result = charlm.main(quick=True, out=str(tmp_path))
    assert result["last_loss"] < result["first_loss"]
    assert result["validation"] < math.log(73)           # better than uniform guessing
    assert os.path.exists(result["model"])
    text = charlm.sample_command(result["model"], "KING.\n", 60, 0.8, 0)
    assert text.startswith("KING.\n") and len(text) == len("KING.\n") + 60
    assert cli(["sample", result["model"], "--prompt", "O", "--length", "20"]) == 0
    assert cli(["sample", result["model"], "--prompt", "\u00e9", "--length", "5"]) == 1
    assert "characters the model does not know" in capsys.readouterr().err


def test_forecast_quick(tmp_path):
    from fastrnn.demos import forecast
    result = forecast.main(quick=True, out=str(tmp_path))
    assert result["last_loss"] < result["first_loss"]
    assert set(result["errors"]) == {"fastrnn GRU", "naive", "seasonal naive"}
    pytest.importorskip("matplotlib")
    assert os.path.exists(result["plot"])


def test_memory_quick(tmp_path):
    from fastrnn.demos import memory
    result = memory.main(quick=True, out=str(tmp_path))
    for cell in ("RNN", "LSTM"):
        assert result[cell]["last_loss"] < result[cell]["first_loss"]
        assert result[cell]["grad_norms"].shape == (memory.T,)
    # vanishing gradients through the untrained vanilla RNN
    g = result["RNN"]["initial_grad_norms"]
    assert g[0] < 1e-6 * g[-1]


def test_seq2seq_example_quick(tmp_path):
    spec = importlib.util.spec_from_file_location("seq2seq", os.path.join(HERE, os.pardir, "examples", "seq2seq.py"))
    seq2seq = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seq2seq)
    result = seq2seq.main(quick=True, out=str(tmp_path))
    assert result["last_loss"] < result["first_loss"]
    assert 0 <= result["accuracy"] <= 1


def test_cli_runs_a_demo(tmp_path):
    out = subprocess.run([sys.executable, "-m", "fastrnn", "demo", "forecast", "--quick", "--out", str(tmp_path)],
                         capture_output=True, text=True, cwd=str(tmp_path), env=subprocess_env())
    assert out.returncode == 0, out.stderr
    assert "held-out mean absolute error" in out.stdout


def test_truncated_bptt_carries_the_state():
    """A long sequence fed in chunks, the final state of each carried into the
    next, gives the outputs of one call over the whole sequence; each chunk's
    backward stops at its edge (no gradient into the carried state)."""
    rng = np.random.default_rng(0)
    lstm = fastrnn.LSTM(3, 5, batch_first=True, dtype=np.float64, seed=1)
    x = rng.standard_normal((2, 30, 3))
    whole, _ = lstm.eval()(x)
    lstm.train()
    hx, parts = None, []
    for start in range(0, 30, 7):
        y, hx = lstm(x[:, start:start + 7], hx)
        parts.append(y)
        dx, (dh_0, dc_0) = lstm.backward(np.ones_like(y))
        assert dx.shape == x[:, start:start + 7].shape and dh_0.shape == (1, 2, 5)
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole, rtol=1e-12)
