import importlib
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests/reference.py

import fastrnn  # noqa: E402

CLASSES = {"RNN_TANH": fastrnn.RNN, "RNN_RELU": fastrnn.RNN, "LSTM": fastrnn.LSTM, "GRU": fastrnn.GRU,
           "GRU_RESET_BEFORE": fastrnn.GRU}
CELL_CLASSES = {"RNN_TANH": fastrnn.RNNCell, "RNN_RELU": fastrnn.RNNCell, "LSTM": fastrnn.LSTMCell,
                "GRU": fastrnn.GRUCell, "GRU_RESET_BEFORE": fastrnn.GRUCell}
MODES = list(CLASSES)
TORCH_MODES = ["RNN_TANH", "RNN_RELU", "LSTM", "GRU"]   # PyTorch has no GRU_RESET_BEFORE


def _mode_kwargs(mode, kwargs):
    if mode.startswith("RNN"):
        kwargs["nonlinearity"] = "tanh" if mode == "RNN_TANH" else "relu"
    if mode == "GRU_RESET_BEFORE":
        kwargs["reset_after"] = False
    return kwargs


def make_layer(mode, input_size, hidden_size, dtype=np.float64, **kwargs):
    """A fastrnn layer of the given mode ("RNN_TANH", "RNN_RELU", "LSTM", "GRU", "GRU_RESET_BEFORE")."""
    return CLASSES[mode](input_size, hidden_size, dtype=dtype, **_mode_kwargs(mode, kwargs))


def make_cell(mode, input_size, hidden_size, dtype=np.float64, **kwargs):
    return CELL_CLASSES[mode](input_size, hidden_size, dtype=dtype, **_mode_kwargs(mode, kwargs))


def run_layer(layer, x, hx=None, lengths=None):
    """forward -> (y, h_n, c_n or None)"""
    y, state = layer(x, hx, lengths=lengths)
    if isinstance(state, tuple):
        return y, state[0], state[1]
    return y, state, None


def backward_layer(layer, dy, dh_n, dc_n=None):
    """backward -> (dx, dh_0, dc_0 or None)"""
    if layer.mode == "LSTM":
        dx, (dh_0, dc_0) = layer.backward(dy, dh_n, dc_n)
        return dx, dh_0, dc_0
    dx, dh_0 = layer.backward(dy, dh_n)
    return dx, dh_0, None


def require(module: str):
    """Import a framework the tests compare against (torch, keras, onnx,
    onnxruntime): skip the test module when it is missing, but fail with
    FASTRNN_REQUIRE_FRAMEWORKS=1 (set by .ci/run), so that CI never passes by
    skipping."""
    if module == "keras":   # Keras 3 runs on PyTorch here
        os.environ.setdefault("KERAS_BACKEND", "torch")
    if os.environ.get("FASTRNN_REQUIRE_FRAMEWORKS") == "1":
        return importlib.import_module(module)
    return pytest.importorskip(module)


def subprocess_env():
    """Environment for a child Python that imports the same fastrnn as the
    tests (installed, or built in place in the source tree)."""
    return dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(fastrnn.__file__))))


def pytest_configure(config):
    config.addinivalue_line("markers", "torch: parity tests against PyTorch")
