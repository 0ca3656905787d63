"""The README's examples run as written."""
import os
import re

import numpy as np

import fastrnn
from conftest import require

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


def python_blocks():
    with open(README) as f:
        return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


def test_readme_example_runs():
    require("torch")
    blocks = python_blocks()
    assert blocks, "no python example in the README"
    exec(compile(blocks[0], "README.md", "exec"), {})


def test_readme_conversion_examples_run(tmp_path, monkeypatch):
    """The PyTorch, Keras and ONNX snippets, in order, given the objects
    they start from."""
    torch, keras = require("torch"), require("keras")
    onnxruntime = require("onnxruntime")
    blocks = [b for b in python_blocks() if "fastrnn.convert" in b]
    assert len(blocks) == 3
    keras_gru = keras.layers.GRU(32)
    keras_gru.build((None, None, 10))
    keras_layers = [keras.layers.GRU(32, return_sequences=True)]
    keras_layers[0].build((None, None, 10))
    rng = np.random.default_rng(0)
    namespace = dict(
        fastrnn=fastrnn, torch=torch, keras=keras, onnxruntime=onnxruntime,
        torch_lstm=torch.nn.LSTM(10, 32, num_layers=2), keras_gru=keras_gru, keras_layers=keras_layers,
        lstm=fastrnn.LSTM(10, 32, num_layers=2), x=rng.standard_normal((6, 3, 10)).astype(np.float32),
        lengths=np.array([6, 2, 4]), h_0=np.zeros((2, 3, 32), np.float32), c_0=np.zeros((2, 3, 32), np.float32))
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert isinstance(namespace["lstm"], fastrnn.LSTM) and namespace["y"].shape == (6, 3, 32)
