"""Conversions to and from PyTorch, Keras and ONNX, checked against the real
libraries: the same random input (ragged where the format allows) through the
source and through the converted layer, outputs and final states within
1e-5 (float32); round trips fastrnn -> X -> fastrnn exact; and a test that
a swapped pair of gates is caught by these very comparisons."""
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fastrnn
from conftest import require, subprocess_env
from fastrnn import convert

torch = require("torch")
keras = require("keras")
onnx = require("onnx")
ort = require("onnxruntime")

TOL = 1e-5
KINDS = ["RNN_TANH", "RNN_RELU", "LSTM", "GRU", "GRU_RESET_BEFORE"]
SHAPES = [(1, False), (1, True), (2, False), (2, True)]   # (num_layers, bidirectional)


def fastrnn_layer(kind, I, H, **kwargs):
    if kind.startswith("RNN"):
        return fastrnn.RNN(I, H, nonlinearity="tanh" if kind == "RNN_TANH" else "relu", **kwargs)
    if kind.startswith("GRU"):
        return fastrnn.GRU(I, H, reset_after=kind == "GRU", **kwargs)
    return fastrnn.LSTM(I, H, **kwargs)


def randomise(layer, rng, scale=0.6):
    """Weights larger than the default init, so that every gate matters."""
    layer.load_state_dict({k: rng.uniform(-scale, scale, v.shape) for k, v in layer.params.items()})
    return layer


def states_of(state):
    return list(state) if isinstance(state, tuple) else [state]


def max_error(got, want):
    return max(float(np.abs(np.asarray(g) - np.asarray(w)).max()) for g, w in zip(got, want))


def test_convert_imports_no_framework(tmp_path):
    code = ("import sys, fastrnn, fastrnn.convert; "
            "print(sorted(m for m in ('torch', 'keras', 'onnx', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tmp_path, env=subprocess_env()).stdout
    assert out.strip() == "[]"


# --- PyTorch --------------------------------------------------------------------

def torch_module(kind, I, H, num_layers, bidirectional, batch_first=False):
    args = dict(num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first)
    if kind.startswith("RNN"):
        return torch.nn.RNN(I, H, nonlinearity="tanh" if kind == "RNN_TANH" else "relu", **args)
    return getattr(torch.nn, kind)(I, H, **args)


def torch_outputs(module, x, lengths, batch_first):
    with torch.no_grad():
        packed = torch.nn.utils.rnn.pack_padded_sequence(torch.from_numpy(x), torch.from_numpy(lengths),
                                                         batch_first=batch_first, enforce_sorted=False)
        out, state = module(packed)
        T = x.shape[1] if batch_first else x.shape[0]
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=batch_first, total_length=T)
    return [y.numpy()] + [s.numpy() for s in states_of(state)]


@pytest.mark.parametrize("kind", ["RNN_TANH", "RNN_RELU", "LSTM", "GRU"])
@pytest.mark.parametrize("num_layers, bidirectional", SHAPES)
def test_from_torch(kind, num_layers, bidirectional):
    rng = np.random.default_rng(1)
    torch.manual_seed(num_layers * 2 + bidirectional)
    module = torch_module(kind, 5, 6, num_layers, bidirectional, batch_first=True)
    layer = convert.from_torch(module)
    assert layer.batch_first and layer.num_layers == num_layers and layer.bidirectional == bidirectional
    x = rng.standard_normal((4, 7, 5)).astype(np.float32)
    lengths = np.array([7, 3, 5, 1])
    y, state = layer(x, lengths=lengths)
    assert max_error([y] + states_of(state), torch_outputs(module, x, lengths, True)) <= TOL
    # back: the module from to_torch has exactly the same parameters
    back = convert.to_torch(layer)
    assert type(back) is type(module)
    for name, value in module.state_dict().items():
        assert torch.equal(back.state_dict()[name], value), name


def test_torch_state_dict_loads_as_it_is_and_cells():
    module = torch.nn.GRU(3, 4, num_layers=2, dtype=torch.float64)
    layer = fastrnn.GRU(3, 4, num_layers=2, dtype=np.float64)
    layer.load_state_dict(module.state_dict())      # tensors, read without torch
    for name, value in module.state_dict().items():
        np.testing.assert_array_equal(layer.params[name], value.numpy())
    assert convert.from_torch(module).dtype == np.float64
    x = np.random.default_rng(0).standard_normal((5, 3))
    for cls in (torch.nn.RNNCell, torch.nn.LSTMCell, torch.nn.GRUCell):
        cell = cls(3, 4)
        ours = convert.from_torch(cell)
        assert type(ours).__name__ == cls.__name__
        with torch.no_grad():
            want = cell(torch.from_numpy(x.astype(np.float32)))
        got = ours(x)
        assert max_error(states_of(got), states_of(want)) <= TOL
        for name, value in convert.to_torch(ours).state_dict().items():
            assert torch.equal(cell.state_dict()[name], value)


def test_torch_refusals():
    projected = torch.nn.LSTM(3, 4, proj_size=2)
    with pytest.raises(ValueError, match="proj_size"):
        convert.from_torch(projected)
    with pytest.raises(ValueError, match="weight_hr_l0 is the projection"):
        fastrnn.LSTM(3, 4).load_state_dict(projected.state_dict())
    with pytest.raises(ValueError, match="no PyTorch equivalent"):
        convert.to_torch(fastrnn.GRU(3, 4, reset_after=False))
    with pytest.raises(TypeError, match="from_torch takes"):
        convert.from_torch(torch.nn.Linear(3, 4))


# --- Keras -----------------------------------------------------------------------

def keras_layers(kind, I, H, num_layers, bidirectional, rng):
    """Keras layers with random weights, each returning sequences and states."""
    out = []
    for k in range(num_layers):
        args = dict(return_sequences=True, return_state=True)
        if kind.startswith("RNN"):
            layer = keras.layers.SimpleRNN(H, activation="tanh" if kind == "RNN_TANH" else "relu", **args)
        elif kind.startswith("GRU"):
            layer = keras.layers.GRU(H, reset_after=kind == "GRU", **args)
        else:
            layer = keras.layers.LSTM(H, **args)
        if bidirectional:
            layer = keras.layers.Bidirectional(layer)
        layer.build((None, None, I if k == 0 else (2 if bidirectional else 1) * H))
        layer.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(np.float32) for w in layer.get_weights()])
        out.append(layer)
    return out


def keras_run(layers, x, mask, is_lstm=False):
    """y and the final states as fastrnn orders them: (L * D, B, H) each.
    Keras returns [y, h, (c)] per direction, forward first."""
    h, c = [], []
    per_direction = 2 if is_lstm else 1
    for layer in layers:
        results = [np.asarray(r.detach().cpu()) for r in layer(x, mask=mask)]
        x, states = results[0], results[1:]
        h += states[::per_direction]
        c += states[1::per_direction] if is_lstm else []
    return [x, np.stack(h)] + ([np.stack(c)] if is_lstm else [])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_layers, bidirectional", SHAPES)
def test_from_keras(kind, num_layers, bidirectional):
    rng = np.random.default_rng(2)
    layers = keras_layers(kind, 5, 6, num_layers, bidirectional, rng)
    layer = convert.from_keras(layers if num_layers > 1 else layers[0])
    assert layer.batch_first and layer.num_layers == num_layers and layer.bidirectional == bidirectional
    B, T = 4, 7
    x = rng.standard_normal((B, T, 5)).astype(np.float32)
    lengths = np.array([7, 3, 5, 1])
    mask = np.arange(T)[None, :] < lengths[:, None]
    want = keras_run(layers, x, mask, kind == "LSTM")
    y, state = layer(x, lengths=lengths)
    # Keras carries the last output through masked steps, fastrnn writes zeros: compare the valid ones
    assert max_error([y[mask]] + states_of(state), [want[0][mask]] + want[1:]) <= TOL
    # Keras -> fastrnn -> Keras gives back the same weights
    for got, source in zip(convert.keras_weights(layer), layers):
        original = source.get_weights()
        assert len(got) == len(original)
        for g, w in zip(got, original):
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("kind", KINDS)
def test_to_keras_round_trip(kind):
    rng = np.random.default_rng(3)
    layer = randomise(fastrnn_layer(kind, 5, 6, num_layers=2, bidirectional=True, batch_first=True), rng)
    x = rng.standard_normal((3, 8, 5)).astype(np.float32)
    keras_model = keras.Sequential(convert.to_keras(layer))
    want = np.asarray(keras_model(x).detach().cpu())
    y, _ = layer(x)
    assert max_error([y], [want]) <= TOL
    back = convert.from_keras(convert.to_keras(layer))
    y_back, _ = back(x)
    np.testing.assert_array_equal(y_back, y)   # same function, bit for bit
    for name, value in layer.params.items():
        if name.startswith("weight") or kind == "GRU":
            np.testing.assert_array_equal(back.params[name], value)   # Keras keeps these as they are
        elif name.startswith("bias_ih"):   # Keras keeps b_ih + b_hh as one bias
            hh = name.replace("bias_ih", "bias_hh")
            np.testing.assert_array_equal(back.params[name], value + layer.params[hh])
            assert not back.params[hh].any()


def test_keras_refusals():
    sigmoid = keras.layers.SimpleRNN(4, activation="sigmoid")
    sigmoid.build((None, None, 3))
    with pytest.raises(ValueError, match="activation 'sigmoid'"):
        convert.from_keras(sigmoid)
    hard = keras.layers.LSTM(4, recurrent_activation="hard_sigmoid")
    hard.build((None, None, 3))
    with pytest.raises(ValueError, match="recurrent_activation 'hard_sigmoid'"):
        convert.from_keras(hard)
    backwards = keras.layers.GRU(4, go_backwards=True)
    backwards.build((None, None, 3))
    with pytest.raises(ValueError, match="go_backwards"):
        convert.from_keras(backwards)
    summed = keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True), merge_mode="sum")
    summed.build((None, None, 3))
    with pytest.raises(ValueError, match="merge_mode 'sum'"):
        convert.from_keras(summed)
    lstm, gru = keras.layers.LSTM(4), keras.layers.GRU(4)
    lstm.build((None, None, 3))
    gru.build((None, None, 4))
    with pytest.raises(ValueError, match="stacked layers must be alike"):
        convert.from_keras([lstm, gru])
    with pytest.raises(ValueError, match="shapes"):
        convert.from_keras_weights("LSTM", [np.zeros((3, 16)), np.zeros((4, 12)), np.zeros(16)])
    with pytest.raises(ValueError, match="reset_after"):
        convert.from_keras_weights("GRU", [np.zeros((3, 12)), np.zeros((4, 12))])


# --- ONNX --------------------------------------------------------------------------

def onnx_run(model, x, lengths=None, h_0=None, c_0=None):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {"x": x}
    for name, value in (("lengths", lengths), ("h_0", h_0), ("c_0", c_0)):
        if value is not None:
            feed[name] = value
    return session.run(None, feed)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_layers, bidirectional", SHAPES)
@pytest.mark.parametrize("batch_first", [False, True])
def test_to_onnx(kind, num_layers, bidirectional, batch_first):
    rng = np.random.default_rng(4)
    layer = randomise(fastrnn_layer(kind, 5, 6, num_layers=num_layers, bidirectional=bidirectional,
                                    batch_first=batch_first), rng).eval()
    B, T, S = 4, 7, num_layers * layer.num_directions
    x = rng.standard_normal((B, T, 5) if batch_first else (T, B, 5)).astype(np.float32)
    lengths = np.array([7, 3, 5, 1])
    h_0 = rng.standard_normal((S, B, 6)).astype(np.float32)
    c_0 = rng.standard_normal((S, B, 6)).astype(np.float32) if kind == "LSTM" else None
    model = convert.to_onnx(layer, lengths=True, initial_state=True)
    onnx.checker.check_model(model, full_check=True)
    y, state = layer(x, (h_0, c_0) if kind == "LSTM" else h_0, lengths=lengths)
    assert max_error([y] + states_of(state), onnx_run(model, x, lengths, h_0, c_0)) <= TOL
    # and the plain export: x in, y and states out
    plain = convert.to_onnx(layer)
    y, state = layer(x)
    assert max_error([y] + states_of(state), onnx_run(plain, x)) <= TOL
    # back, exactly
    back = convert.from_onnx(model)
    assert repr(back) == repr(layer)
    for name, value in layer.params.items():
        np.testing.assert_array_equal(back.params[name], value)


def test_onnx_file_and_no_bias(tmp_path):
    layer = fastrnn.LSTM(3, 4, bias=False, seed=1).eval()
    path = tmp_path / "lstm.onnx"
    convert.to_onnx(layer, path)
    back = convert.from_onnx(path)
    assert not back.bias
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    np.testing.assert_array_equal(back(x)[0], layer(x)[0])
    assert max_error([layer(x)[0]], onnx_run(onnx.load(str(path)), x)[:1]) <= TOL


@pytest.mark.parametrize("kind", ["RNN_TANH", "LSTM", "GRU"])
@pytest.mark.parametrize("num_layers, bidirectional", [(1, False), (2, False), (2, True)])
def test_from_pytorch_onnx_export(kind, num_layers, bidirectional, tmp_path):
    torch.manual_seed(0)
    module = torch_module(kind, 5, 6, num_layers, bidirectional).eval()
    x = torch.randn(7, 3, 5)
    path = tmp_path / "torch.onnx"
    with warnings.catch_warnings():   # PyTorch's notes about exporting RNNs
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(path), dynamo=False, input_names=["x"])
    layer = convert.from_onnx(path)
    assert layer.num_layers == num_layers and layer.bidirectional == bidirectional
    with torch.no_grad():
        want = module(x)
    y, state = layer(x.numpy())
    assert max_error([y] + states_of(state), [want[0]] + states_of(want[1])) <= TOL


def edited(model, change):
    """A copy of model with change(recurrent_node, model) applied."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    node = next(n for n in copy.graph.node if n.op_type in ("RNN", "LSTM", "GRU"))
    change(node, copy)
    return copy


def test_onnx_refusals():
    from onnx import helper, numpy_helper
    lstm = convert.to_onnx(fastrnn.LSTM(3, 4))
    cases = [
        ("clip", lambda n, m: n.attribute.append(helper.make_attribute("clip", 3.0))),
        ("input_forget", lambda n, m: n.attribute.append(helper.make_attribute("input_forget", 1))),
        ("activations", lambda n, m: n.attribute.append(
            helper.make_attribute("activations", ["Sigmoid", "Relu", "Tanh"]))),
        ("reverse", lambda n, m: n.attribute.append(helper.make_attribute("direction", "reverse"))),
    ]
    for what, change in cases:
        with pytest.raises(ValueError, match=what):
            convert.from_onnx(edited(lstm, change))

    def peepholes(value):
        def change(node, model):
            model.graph.initializer.append(numpy_helper.from_array(np.full((1, 12), value, np.float32), "P"))
            node.input.extend([""] * (7 - len(node.input)) + ["P"])
        return change
    with pytest.raises(ValueError, match="peephole"):
        convert.from_onnx(edited(lstm, peepholes(1.0)))
    convert.from_onnx(edited(lstm, peepholes(0.0)))   # zeros change nothing: accepted

    def computed_weights(node, model):
        node.input[1] = "x"
    with pytest.raises(ValueError, match="only constant weights"):
        convert.from_onnx(edited(lstm, computed_weights))

    two = onnx.compose.merge_models(convert.to_onnx(fastrnn.GRU(3, 4)), convert.to_onnx(fastrnn.GRU(3, 4)),
                                    io_map=[], prefix1="a_", prefix2="b_")
    with pytest.raises(ValueError, match="do not form one stack"):
        convert.from_onnx(two)
    assert convert.from_onnx(two, node="b_gru_0").hidden_size == 4


# --- the comparisons catch a gate-order mistake -------------------------------------

def test_a_swapped_pair_of_gates_is_caught(monkeypatch):
    """The tests above would fail if a converter put two gates' blocks in
    each other's place: run the same comparisons with the classic mistakes."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 6, 5)).astype(np.float32)

    # Keras's GRU orders z, r, h: forgetting the reorder
    layers = keras_layers("GRU", 5, 6, 1, False, rng)
    monkeypatch.setattr(convert, "_KERAS_GRU", [0, 1, 2])
    y, h = convert.from_keras(layers[0])(x)
    assert max_error([y, h], keras_run(layers, x, None)) > 100 * TOL
    monkeypatch.undo()
    y, h = convert.from_keras(layers[0])(x)
    assert max_error([y, h], keras_run(layers, x, None)) <= TOL

    # ONNX's LSTM orders i, o, f, c: exporting PyTorch's i, f, g, o with f and g swapped
    layer = randomise(fastrnn.LSTM(5, 6), rng).eval()
    y, state = layer(x)
    good = onnx_run(convert.to_onnx(layer), x)
    assert max_error([y] + states_of(state), good) <= TOL
    monkeypatch.setitem(convert._ONNX_ORDER, "LSTM", ([0, 3, 2, 1], convert._ONNX_LSTM_BACK))
    assert max_error([y] + states_of(state), onnx_run(convert.to_onnx(layer), x)) > 100 * TOL

    # and a layer whose r and z blocks were swapped by hand differs from PyTorch's
    module = torch_module("GRU", 5, 6, 1, False)
    state_dict = {k: v.numpy().copy() for k, v in module.state_dict().items()}
    for name in state_dict:
        state_dict[name][:6], state_dict[name][6:12] = state_dict[name][6:12].copy(), state_dict[name][:6].copy()
    swapped = fastrnn.GRU(5, 6)
    swapped.load_state_dict(state_dict)
    x_t = rng.standard_normal((6, 3, 5)).astype(np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x_t))
    assert max_error(list(swapped(x_t)), [want[0], want[1]]) > 100 * TOL
