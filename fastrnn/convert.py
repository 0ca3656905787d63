"""Weights in and out of PyTorch, Keras and ONNX.

fastrnn's layers use PyTorch's names, shapes and gate orders, so PyTorch's
state_dict loads as it is (`layer.load_state_dict(module.state_dict())`);
the functions here add the other direction and the two formats that differ:

    framework  gate order     weights                     biases
    PyTorch    LSTM i f g o   weight_ih (G*H, I)          bias_ih, bias_hh (G*H,)
               GRU  r z n     weight_hh (G*H, H)
    Keras      LSTM i f c o   kernel (I, G*H) = W_ih.T    bias (G*H,) = b_ih + b_hh; GRU
               GRU  z r h     recurrent_kernel (H, G*H)   reset_after=True: (2, G*H) rows b_ih, b_hh
    ONNX       LSTM i o f c   W (D, G*H, I), R (D, G*H, H) B (D, 2*G*H) = [Wb, Rb]
               GRU  z r h

A GRU with the reset before the recurrent product (Keras's reset_after=False,
ONNX's linear_before_reset=0) loads as fastrnn.GRU(..., reset_after=False).

Nothing here imports a framework to read its weights: PyTorch modules and
tensors, Keras layers are read through their public methods (state_dict,
get_config, get_weights) and NumPy's array protocol.  `to_torch`, `to_keras`,
`to_onnx` and `from_onnx` import the library they target (the `convert`
extra installs them).
"""
from __future__ import annotations

import warnings
import os
from typing import TYPE_CHECKING, Any, Callable, Sequence, Union

import numpy as np
from numpy.typing import DTypeLike

from fastrnn.cells import GRUCell, LSTMCell, RNNCell
from fastrnn.layers import GRU, LSTM, RNN, _suffix

__all__ = ["from_torch", "to_torch", "from_keras", "from_keras_weights", "keras_weights", "to_keras",
           "to_onnx", "from_onnx"]

Layer = Union[RNN, LSTM, GRU]
Cell = Union[RNNCell, LSTMCell, GRUCell]
if TYPE_CHECKING:
    import onnx

# Gate blocks of one format in another's order: new[k] = old[ORDER[k]].
_KERAS_GRU = [1, 0, 2]          # PyTorch r, z, n <-> Keras z, r, h (its own inverse)
_ONNX_LSTM = [0, 3, 1, 2]       # PyTorch i, f, g, o -> ONNX i, o, f, c
_ONNX_LSTM_BACK = [0, 2, 3, 1]  # ONNX i, o, f, c -> PyTorch i, f, g, o
_ONNX_GRU = [1, 0, 2]           # PyTorch r, z, n <-> ONNX z, r, h


def _blocks(a: np.ndarray, order: Sequence[int] | None, axis: int = 0) -> np.ndarray:
    """a with its gate blocks along axis put in the given order."""
    if order is None:
        return a
    parts = np.split(a, len(order), axis=axis)
    return np.concatenate([parts[k] for k in order], axis=axis)


def _kind(layer: Layer) -> str:
    """'RNN', 'LSTM' or 'GRU' for a fastrnn layer, with a clear error for anything else."""
    if isinstance(layer, (LSTM, GRU, RNN)):
        return type(layer).__name__
    raise TypeError(f"expected a fastrnn RNN, LSTM or GRU layer, got {type(layer).__name__}")


def _layer_params(layer: Layer, k: int, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Copies of (weight_ih, weight_hh, bias_ih, bias_hh) of layer k, direction d (zeros without bias)."""
    s, p = _suffix(k, d), layer.params
    G = layer.gate_count * layer.hidden_size
    zeros = np.zeros(G, dtype=layer.dtype)
    return (p[f"weight_ih{s}"].copy(), p[f"weight_hh{s}"].copy(),
            p[f"bias_ih{s}"].copy() if layer.bias else zeros, p[f"bias_hh{s}"].copy() if layer.bias else zeros)


def _build(kind: str, input_size: int, hidden_size: int, num_layers: int, bidirectional: bool, bias: bool,
           dtype: DTypeLike, batch_first: bool, nonlinearity: str = "tanh", reset_after: bool = True) -> Layer:
    common: dict[str, Any] = dict(num_layers=num_layers, bias=bias, batch_first=batch_first, bidirectional=bidirectional,
                  dtype=dtype, seed=0)
    if kind == "RNN":
        return RNN(input_size, hidden_size, nonlinearity=nonlinearity, **common)
    if kind == "GRU":
        return GRU(input_size, hidden_size, reset_after=reset_after, **common)
    return LSTM(input_size, hidden_size, **common)


def _float_dtype(a: np.ndarray) -> np.dtype[Any]:
    return np.dtype(np.float64 if a.dtype == np.float64 else np.float32)


# --- PyTorch ------------------------------------------------------------------

_TORCH_LAYERS = {"RNN": RNN, "LSTM": LSTM, "GRU": GRU}
_TORCH_CELLS = {"RNNCell": RNNCell, "LSTMCell": LSTMCell, "GRUCell": GRUCell}


def from_torch(module: Any) -> Layer | Cell:
    """A fastrnn layer or cell equal to a torch.nn.RNN, LSTM, GRU, RNNCell,
    LSTMCell or GRUCell (read through its attributes and state_dict; torch is
    not imported).  float64 modules give float64 layers, others float32.
    An LSTM with proj_size is refused: fastrnn's LSTM has no projection."""
    name = type(module).__name__
    if name not in _TORCH_LAYERS and name not in _TORCH_CELLS:
        raise TypeError(f"from_torch takes a torch.nn.RNN, LSTM, GRU, RNNCell, LSTMCell or GRUCell, got {name}")
    state = {k: np.asarray(v.detach().cpu()) for k, v in module.state_dict().items()}
    dtype = _float_dtype(state["weight_ih" if name in _TORCH_CELLS else "weight_ih_l0"])
    args: dict[str, Any] = dict(bias=bool(module.bias), dtype=dtype)
    if name in ("RNN", "RNNCell"):
        args["nonlinearity"] = module.nonlinearity
    layer: Layer | Cell
    if name in _TORCH_CELLS:
        layer = _TORCH_CELLS[name](module.input_size, module.hidden_size, **args)
    else:
        if getattr(module, "proj_size", 0):
            raise ValueError(f"LSTM with proj_size={module.proj_size} is not supported: fastrnn's LSTM has no "
                             "projection of h (weight_hr)")
        layer = _TORCH_LAYERS[name](module.input_size, module.hidden_size, num_layers=module.num_layers,
                                    batch_first=bool(module.batch_first), dropout=float(module.dropout),
                                    bidirectional=bool(module.bidirectional), **args)
    layer.load_state_dict(state)
    return layer


def to_torch(layer: Layer | Cell) -> Any:
    """The torch.nn module (RNN, LSTM, GRU or a cell) equal to a fastrnn layer
    or cell, on the CPU, with the same dtype.  Imports torch.  The
    reset_after=False GRU has no PyTorch equivalent and is refused."""
    import torch

    if getattr(layer, "mode", None) == "GRU_RESET_BEFORE":
        raise ValueError("a GRU with reset_after=False has no PyTorch equivalent (torch.nn.GRU applies the "
                         "reset after the recurrent product)")
    name = type(layer).__name__
    layer_: Any = layer   # a layer or a cell: their attributes differ
    dtype = torch.float64 if layer.dtype == np.float64 else torch.float32
    args: dict[str, Any] = dict(bias=layer.bias, dtype=dtype)
    if name in ("RNN", "RNNCell"):
        args["nonlinearity"] = layer_.nonlinearity
    if name in _TORCH_CELLS:
        module = getattr(torch.nn, name)(layer.input_size, layer.hidden_size, **args)
    elif name in _TORCH_LAYERS:
        with warnings.catch_warnings():   # torch warns about dropout with one layer, as fastrnn did
            warnings.simplefilter("ignore", UserWarning)
            module = getattr(torch.nn, name)(layer.input_size, layer.hidden_size, num_layers=layer_.num_layers,
                                             batch_first=layer_.batch_first, dropout=layer_.dropout,
                                             bidirectional=layer_.bidirectional, **args)
    else:
        raise TypeError(f"to_torch takes a fastrnn RNN, LSTM, GRU or cell, got {name}")
    module.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    return module


# --- Keras ------------------------------------------------------------------------

_KERAS_KINDS = {"SimpleRNN": "RNN", "LSTM": "LSTM", "GRU": "GRU"}


def _keras_direction_params(kind: str, weights: Sequence[np.ndarray],
                            reset_after: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """One direction's Keras weights [kernel, recurrent_kernel(, bias)] ->
    (weight_ih, weight_hh, bias_ih, bias_hh or None when there is no bias)."""
    kernel, recurrent = np.asarray(weights[0]), np.asarray(weights[1])
    order = _KERAS_GRU if kind == "GRU" else None
    w_ih = _blocks(kernel.T, order)
    w_hh = _blocks(recurrent.T, order)
    if len(weights) == 2:
        return w_ih, w_hh, None, None
    bias = np.asarray(weights[2])
    if kind == "GRU" and reset_after:
        return w_ih, w_hh, _blocks(bias[0], order), _blocks(bias[1], order)
    return w_ih, w_hh, _blocks(bias, order), np.zeros_like(bias)


def from_keras_weights(kind: str, weights: Sequence[Any], *, nonlinearity: str = "tanh",
                       reset_after: bool | None = None, batch_first: bool = True) -> Layer:
    """A fastrnn layer from Keras weights, as `layer.get_weights()` returns them.

    kind: "SimpleRNN", "LSTM" or "GRU".  weights: one get_weights() list
    (kernel, recurrent_kernel and, with use_bias, bias; a Bidirectional
    layer's list has both directions', forward first), or a list of such
    lists, one per stacked Keras layer (num_layers).  nonlinearity: the
    SimpleRNN's activation.  reset_after: the GRU variant; None reads it from
    the bias shape ((2, 3H): True, (3H,): False; without bias it must be
    given).  batch_first: Keras works on (batch, time, features).

    Keras keeps one bias where PyTorch keeps two: it becomes bias_ih, and
    bias_hh is zero (except the reset_after GRU's, which Keras keeps apart)."""
    if kind not in _KERAS_KINDS:
        raise ValueError(f"kind must be one of {list(_KERAS_KINDS)}, got {kind!r}")
    fr_kind = _KERAS_KINDS[kind]
    if len(weights) and not isinstance(weights[0], (list, tuple)):   # one layer's list
        weights = [weights]
    stack = [[np.asarray(w) for w in layer_weights] for layer_weights in weights]
    if not stack:
        raise ValueError("from_keras_weights: no weights given")
    sizes = {len(w) for w in stack}
    if len(sizes) != 1 or sizes.pop() not in (2, 3, 4, 6):
        raise ValueError("from_keras_weights: each layer's weights must be [kernel, recurrent_kernel, bias] "
                         "(or without bias), twice for a Bidirectional layer; got lists of "
                         f"{[len(w) for w in stack]} arrays")
    n = len(stack[0])
    # 2: no bias; 3: bias; 4: bidirectional without bias; 6: bidirectional with bias
    bidirectional = n in (4, 6)
    bias = n in (3, 6)
    per_dir = n // 2 if bidirectional else n
    G = {"RNN": 1, "LSTM": 4, "GRU": 3}[fr_kind]
    H = stack[0][1].shape[0]
    if kind == "GRU":
        if bias:
            inferred = stack[0][2].ndim == 2
            if reset_after is not None and reset_after != inferred:
                raise ValueError(f"reset_after={reset_after} but the GRU bias has shape {stack[0][2].shape}")
            reset_after = inferred
        elif reset_after is None:
            raise ValueError("a GRU without bias does not tell reset_after: give it")
    D = 2 if bidirectional else 1
    for k, layer_weights in enumerate(stack):
        for d in range(D):
            want_in = stack[0][0].shape[0] if k == 0 else D * H
            expected: list[tuple[int, ...]] = [(want_in, G * H), (H, G * H)]
            if bias:
                expected.append((2, G * H) if kind == "GRU" and reset_after else (G * H,))
            got = [w.shape for w in layer_weights[d * per_dir:(d + 1) * per_dir]]
            if got != expected:
                raise ValueError(f"from_keras_weights: {kind} layer {k}{' backward' if d else ''} weights have "
                                 f"shapes {got}, expected {expected} (units={H})")
    layer = _build(fr_kind, stack[0][0].shape[0], H, len(stack), bidirectional, bias,
                   _float_dtype(stack[0][0]), batch_first, nonlinearity, bool(reset_after))
    state = {}
    for k, layer_weights in enumerate(stack):
        for d in range(D):
            w_ih, w_hh, b_ih, b_hh = _keras_direction_params(
                fr_kind, layer_weights[d * per_dir:(d + 1) * per_dir], bool(reset_after))
            s = _suffix(k, d)
            state[f"weight_ih{s}"], state[f"weight_hh{s}"] = w_ih, w_hh
            if b_ih is not None and b_hh is not None:
                state[f"bias_ih{s}"], state[f"bias_hh{s}"] = b_ih, b_hh
    layer.load_state_dict(state)
    return layer


def keras_weights(layer: Layer) -> list[list[np.ndarray]]:
    """The inverse of from_keras_weights: for each of the layer's num_layers,
    the list that `keras_layer.set_weights` takes (a Bidirectional wrapper's
    for a bidirectional layer).  The two PyTorch biases are summed into
    Keras's one, but for the reset_after GRU's, which Keras keeps apart."""
    kind = _kind(layer)
    order = _KERAS_GRU if kind == "GRU" else None
    reset_after = isinstance(layer, GRU) and layer.reset_after
    out = []
    for k in range(layer.num_layers):
        weights = []
        for d in range(layer.num_directions):
            w_ih, w_hh, b_ih, b_hh = _layer_params(layer, k, d)
            weights += [np.ascontiguousarray(_blocks(w_ih, order).T),
                        np.ascontiguousarray(_blocks(w_hh, order).T)]
            if layer.bias:
                if reset_after:
                    weights.append(np.stack([_blocks(b_ih, order), _blocks(b_hh, order)]))
                else:
                    weights.append(_blocks(b_ih + b_hh, order))
        out.append(weights)
    return out


def _keras_activation(value: Any) -> str:
    if isinstance(value, str):
        return value
    return getattr(value, "__name__", repr(value))


def _keras_layer_options(layer: Any) -> dict[str, Any]:
    """Check one Keras SimpleRNN/LSTM/GRU layer's config against what fastrnn
    computes; returns its kind, nonlinearity and reset_after."""
    name = type(layer).__name__
    if name not in _KERAS_KINDS:
        raise TypeError(f"expected a Keras SimpleRNN, LSTM, GRU or Bidirectional layer, got {name}")
    config = layer.get_config()
    activation = _keras_activation(config.get("activation", "tanh"))
    allowed = ("tanh", "relu") if name == "SimpleRNN" else ("tanh",)
    if activation not in allowed:
        raise ValueError(f"Keras {name} {config.get('name')!r}: activation {activation!r} is not supported "
                         f"(fastrnn's {name} uses {' or '.join(allowed)})")
    if name != "SimpleRNN":
        recurrent = _keras_activation(config.get("recurrent_activation", "sigmoid"))
        if recurrent != "sigmoid":
            raise ValueError(f"Keras {name} {config.get('name')!r}: recurrent_activation {recurrent!r} is not "
                             "supported (fastrnn's gates use sigmoid)")
    if config.get("dropout") or config.get("recurrent_dropout"):
        warnings.warn(f"Keras {name} {config.get('name')!r}: dropout and recurrent_dropout are not converted "
                      "(they act in training only; fastrnn has dropout between stacked layers)", UserWarning,
                      stacklevel=3)
    return dict(kind=name, nonlinearity=activation if name == "SimpleRNN" else "tanh",
                reset_after=bool(config.get("reset_after", True)), go_backwards=bool(config.get("go_backwards")),
                units=config.get("units"))


def from_keras(layers: Any) -> Layer:
    """A fastrnn layer equal to a Keras SimpleRNN, LSTM or GRU layer, a
    Bidirectional wrapper of one (merge_mode 'concat'), or a list of them
    stacked (one kind and size, each feeding the next: num_layers).  Keras is
    not imported; the layers are read through get_config and get_weights.
    The result is batch_first, as Keras is."""
    if not isinstance(layers, (list, tuple)):
        layers = [layers]
    if not layers:
        raise ValueError("from_keras: no layers given")
    options, weights = [], []
    for layer in layers:
        if type(layer).__name__ == "Bidirectional":
            if layer.merge_mode != "concat":
                raise ValueError(f"Bidirectional merge_mode {layer.merge_mode!r} is not supported: fastrnn "
                                 "concatenates the two directions ('concat')")
            forward, backward = (_keras_layer_options(layer.forward_layer),
                                 _keras_layer_options(layer.backward_layer))
            if forward["go_backwards"] or not backward["go_backwards"]:
                raise ValueError("Bidirectional: the forward layer must run forwards and the backward one "
                                 "backwards")
            if {key: forward[key] for key in ("kind", "nonlinearity", "reset_after", "units")} != \
                    {key: backward[key] for key in ("kind", "nonlinearity", "reset_after", "units")}:
                raise ValueError("Bidirectional: the forward and backward layers differ "
                                 f"({forward} vs {backward}); fastrnn's directions share one configuration")
            opts = dict(forward, bidirectional=True)
        else:
            opts = dict(_keras_layer_options(layer), bidirectional=False)
            if opts["go_backwards"]:
                raise ValueError(f"Keras {opts['kind']} with go_backwards=True (a reverse-only layer) is not "
                                 "supported: fastrnn runs forwards, or both ways with bidirectional=True")
        options.append(opts)
        weights.append(layer.get_weights())
    first = options[0]
    for k, opts in enumerate(options[1:], 1):
        for key in ("kind", "nonlinearity", "reset_after", "bidirectional", "units"):
            if opts[key] != first[key]:
                raise ValueError(f"from_keras: layer {k} has {key}={opts[key]!r} but layer 0 has "
                                 f"{first[key]!r}; stacked layers must be alike (convert them one by one)")
    return from_keras_weights(first["kind"], weights, nonlinearity=first["nonlinearity"],
                              reset_after=first["reset_after"] if first["kind"] == "GRU" else None)


def to_keras(layer: Layer, return_sequences: bool = True, return_state: bool = False) -> list[Any]:
    """Keras layers (SimpleRNN, LSTM or GRU; wrapped in Bidirectional when
    bidirectional), one per num_layers, built and holding the layer's weights.
    Imports keras.  With return_state, each returns [y, h(, c)...] as Keras
    does; stack them in keras.Sequential when it is False."""
    import keras

    kind = _kind(layer)
    cls = {"RNN": keras.layers.SimpleRNN, "LSTM": keras.layers.LSTM, "GRU": keras.layers.GRU}[kind]
    options: dict[str, Any] = dict(use_bias=layer.bias, return_sequences=return_sequences,
                                   return_state=return_state, dtype=layer.dtype.name)
    if kind == "RNN":
        options["activation"] = getattr(layer, "nonlinearity")
    if kind == "GRU":
        options["reset_after"] = getattr(layer, "reset_after")
    out = []
    for k, weights in enumerate(keras_weights(layer)):
        input_size = layer.input_size if k == 0 else layer.num_directions * layer.hidden_size
        keras_layer = cls(layer.hidden_size, **options)
        if layer.bidirectional:
            keras_layer = keras.layers.Bidirectional(keras_layer)
        keras_layer.build((None, None, input_size))
        keras_layer.set_weights(weights)
        out.append(keras_layer)
    return out


# --- ONNX ------------------------------------------------------------------------

_BATCH_FIRST_KEY = "fastrnn.batch_first"
_ONNX_ORDER = {"RNN": (None, None), "LSTM": (_ONNX_LSTM, _ONNX_LSTM_BACK), "GRU": (_ONNX_GRU, _ONNX_GRU)}


def to_onnx(layer: Layer, path: str | os.PathLike[str] | None = None, *, lengths: bool = False,
            initial_state: bool = False, opset: int = 17) -> onnx.ModelProto:
    """An ONNX model (onnx.ModelProto; also written to path when given) that
    computes the layer's forward: one RNN/LSTM/GRU node per stacked layer.

    Inputs: x, (T, B, input_size) or (B, T, input_size) with batch_first;
    with lengths=True, `lengths` (B,) int64 (ONNX's sequence_lens); with
    initial_state=True, h_0 (and for the LSTM c_0), (num_layers * D, B, H).
    Outputs: y and h_n (and c_n), as the layer returns them.  Imports onnx."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    kind = _kind(layer)
    is_lstm = kind == "LSTM"
    L, D, H, I = layer.num_layers, layer.num_directions, layer.hidden_size, layer.input_size
    elem = TensorProto.DOUBLE if layer.dtype == np.float64 else TensorProto.FLOAT
    order = _ONNX_ORDER[kind][0]
    direction = "bidirectional" if layer.bidirectional else "forward"
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    x_shape: list[str | int] = ["batch", "time", I] if layer.batch_first else ["time", "batch", I]
    inputs = [helper.make_tensor_value_info("x", elem, x_shape)]
    state_shape: list[str | int] = [L * D, "batch", H]
    if lengths:
        inputs.append(helper.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"]))
        nodes.append(helper.make_node("Cast", ["lengths"], ["sequence_lens"], to=TensorProto.INT32))
    if initial_state:
        inputs.append(helper.make_tensor_value_info("h_0", elem, state_shape))
        if is_lstm:
            inputs.append(helper.make_tensor_value_info("c_0", elem, state_shape))

    def const(name: str, value: Any) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    x = "x"
    if layer.batch_first:   # onnxruntime runs layout=0 only: transpose around the nodes
        nodes.append(helper.make_node("Transpose", ["x"], ["x_tb"], perm=[1, 0, 2]))
        x = "x_tb"
    h_outs, c_outs = [], []
    for k in range(L):
        W, R, Bs = [], [], []
        for d in range(D):
            w_ih, w_hh, b_ih, b_hh = _layer_params(layer, k, d)
            W.append(_blocks(w_ih, order))
            R.append(_blocks(w_hh, order))
            Bs.append(np.concatenate([_blocks(b_ih, order), _blocks(b_hh, order)]))
        node_inputs = [x, const(f"W_{k}", np.stack(W)), const(f"R_{k}", np.stack(R)),
                       const(f"B_{k}", np.stack(Bs)) if layer.bias else "",
                       "sequence_lens" if lengths else ""]
        if initial_state:
            states = ["h_0"] + (["c_0"] if is_lstm else [])
            for state in states:
                if L == 1:
                    node_inputs.append(state)
                else:
                    nodes.append(helper.make_node(
                        "Slice", [state, const(f"{state}_start_{k}", np.array([k * D])),
                                  const(f"{state}_end_{k}", np.array([(k + 1) * D])),
                                  const(f"{state}_axes_{k}", np.array([0]))], [f"{state}_{k}"]))
                    node_inputs.append(f"{state}_{k}")
        node_outputs = [f"Y_{k}", f"Y_h_{k}"] + ([f"Y_c_{k}"] if is_lstm else [])
        attrs: dict[str, Any] = dict(hidden_size=H, direction=direction)
        if kind == "RNN":
            attrs["activations"] = ["Tanh" if getattr(layer, "nonlinearity") == "tanh" else "Relu"] * D
        if kind == "GRU":
            attrs["linear_before_reset"] = 1 if getattr(layer, "reset_after") else 0
        nodes.append(helper.make_node(kind, node_inputs, node_outputs, name=f"{kind.lower()}_{k}", **attrs))
        # Y (T, D, B, H) -> (T, B, D * H), the next layer's input
        nodes.append(helper.make_node("Transpose", [f"Y_{k}"], [f"Y_tb_{k}"], perm=[0, 2, 1, 3]))
        nodes.append(helper.make_node("Reshape", [f"Y_tb_{k}", const(f"shape_{k}", np.array([0, 0, -1]))],
                                      [f"X_{k + 1}"]))
        x = f"X_{k + 1}"
        h_outs.append(f"Y_h_{k}")
        c_outs.append(f"Y_c_{k}")
    if layer.batch_first:
        nodes.append(helper.make_node("Transpose", [x], ["y"], perm=[1, 0, 2]))
    else:
        nodes.append(helper.make_node("Identity", [x], ["y"]))
    nodes.append(helper.make_node("Concat", h_outs, ["h_n"], axis=0))
    y_shape: list[str | int] = ["batch", "time", D * H] if layer.batch_first else ["time", "batch", D * H]
    outputs = [helper.make_tensor_value_info("y", elem, y_shape),
               helper.make_tensor_value_info("h_n", elem, state_shape)]
    if is_lstm:
        nodes.append(helper.make_node("Concat", c_outs, ["c_n"], axis=0))
        outputs.append(helper.make_tensor_value_info("c_n", elem, state_shape))
    graph = helper.make_graph(nodes, f"fastrnn_{kind.lower()}", inputs, outputs, inits)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, producer_name="fastrnn", opset_imports=opsets,
                              # the oldest IR the opset allows, so that older runtimes load it
                              ir_version=helper.find_min_ir_version_for(opsets))
    # the nodes run time-major between two Transposes: say so for from_onnx
    helper.set_model_props(model, {_BATCH_FIRST_KEY: str(layer.batch_first).lower()})
    onnx.checker.check_model(model)
    if path is not None:
        onnx.save(model, str(path))
    return model


_ONNX_DEFAULT_ACTIVATIONS = {"RNN": ["Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"]}


def _onnx_node_layer(node: Any, constant: Callable[[str, str, str], np.ndarray],
                     dtype_hint: Any = None) -> tuple[dict[str, Any], dict[tuple[str, int], np.ndarray]]:
    """One ONNX RNN/LSTM/GRU node -> (its options, its fastrnn parameters for one layer)."""
    from onnx import helper

    kind = node.op_type
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    label = f"ONNX {kind} node {node.name or node.output[0]!r}"
    direction = attrs.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction == "reverse":
        raise ValueError(f"{label}: direction 'reverse' (a reverse-only layer) is not supported: fastrnn runs "
                         "forwards, or both ways (bidirectional)")
    D = 2 if direction == "bidirectional" else 1
    for unsupported in ("clip", "activation_alpha", "activation_beta"):
        if unsupported in attrs:
            raise ValueError(f"{label}: attribute {unsupported!r} is not supported")
    if attrs.get("input_forget", 0):
        raise ValueError(f"{label}: attribute 'input_forget' (coupled input and forget gates) is not supported")
    activations = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])]
    defaults = _ONNX_DEFAULT_ACTIVATIONS[kind]
    nonlinearity = "tanh"
    if activations:
        per_direction = [activations[i:i + len(defaults)] for i in range(0, len(activations), len(defaults))]
        if kind == "RNN" and all(a == ["Relu"] for a in per_direction):
            nonlinearity = "relu"
        elif any(a != defaults for a in per_direction):
            raise ValueError(f"{label}: activations {activations} are not supported (fastrnn's {kind} uses "
                             f"{defaults}{' or Relu' if kind == 'RNN' else ''})")
    if attrs.get("layout", 0) not in (0, 1):
        raise ValueError(f"{label}: layout {attrs['layout']} is not an ONNX layout")
    inputs = list(node.input) + [""] * (8 - len(node.input))
    W, R = constant(inputs[1], label, "W"), constant(inputs[2], label, "R")
    B = constant(inputs[3], label, "B") if inputs[3] else None
    if kind == "LSTM" and inputs[7]:
        P = constant(inputs[7], label, "P (peepholes)")
        if np.any(P != 0):
            raise ValueError(f"{label}: peephole connections (input P) are not supported")
    G = {"RNN": 1, "LSTM": 4, "GRU": 3}[kind]
    if W.ndim != 3 or W.shape[0] != D or W.shape[1] % G:
        raise ValueError(f"{label}: W has shape {W.shape}, expected ({D}, {G}*hidden_size, input_size)")
    H = W.shape[1] // G
    if "hidden_size" in attrs and attrs["hidden_size"] != H:
        raise ValueError(f"{label}: hidden_size={attrs['hidden_size']} but W has {W.shape[1]} rows")
    if R.shape != (D, G * H, H):
        raise ValueError(f"{label}: R has shape {R.shape}, expected {(D, G * H, H)}")
    if B is not None and B.shape != (D, 2 * G * H):
        raise ValueError(f"{label}: B has shape {B.shape}, expected {(D, 2 * G * H)}")
    back = _ONNX_ORDER[kind][1]
    params: dict[tuple[str, int], np.ndarray] = {}
    for d in range(D):
        params[("weight_ih", d)] = _blocks(W[d], back)
        params[("weight_hh", d)] = _blocks(R[d], back)
        if B is not None:
            params[("bias_ih", d)] = _blocks(B[d, :G * H], back)
            params[("bias_hh", d)] = _blocks(B[d, G * H:], back)
    options = dict(kind=kind, D=D, H=H, input_size=W.shape[2], nonlinearity=nonlinearity,
                   reset_after=bool(attrs.get("linear_before_reset", 0)) if kind == "GRU" else True,
                   batch_first=attrs.get("layout", 0) == 1, bias=B is not None, dtype=_float_dtype(W))
    return options, params


def from_onnx(model: Any, node: str | None = None) -> Layer:
    """A fastrnn layer from the RNN, LSTM or GRU node(s) of an ONNX model
    (an onnx.ModelProto or a path).  A model whose recurrent nodes form one
    stack (each node's output feeding the next through Transpose, Reshape or
    Squeeze, as fastrnn's and PyTorch's exports do) gives one layer with
    num_layers nodes; otherwise name the node to import with node=.  Weights
    must be constants (initializers or Constant nodes).  Imports onnx.

    Refused, with a message naming them: peepholes, clip, input_forget,
    activations other than the layer's own, a reverse-only direction.  A node
    with layout=1 gives a batch_first layer, and so does a model that
    fastrnn exported from one (its metadata says so)."""
    import onnx
    from onnx import numpy_helper

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    graph = model.graph
    values = {init.name: init for init in graph.initializer}
    constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}

    def constant(name: str, label: str, what: str) -> np.ndarray:
        if name in values:
            return numpy_helper.to_array(values[name])
        if name in constants:
            attr = constants[name].attribute[0]
            if attr.name == "value":
                return numpy_helper.to_array(attr.t)
        raise ValueError(f"{label}: its {what} ({name!r}) is computed in the graph; only constant weights "
                         "(initializers or Constant nodes) can be imported")

    recurrent = [n for n in graph.node if n.op_type in ("RNN", "LSTM", "GRU")]
    if not recurrent:
        raise ValueError("from_onnx: the model has no RNN, LSTM or GRU node")
    names = [n.name or n.output[0] for n in recurrent]
    if node is not None:
        if node not in names:
            raise ValueError(f"from_onnx: no recurrent node named {node!r} (nodes: {names})")
        chain = [recurrent[names.index(node)]]
    else:
        stack = _stack_of(graph, recurrent)
        if stack is None:
            raise ValueError(f"from_onnx: the model's recurrent nodes {names} do not form one stack; import "
                             "them one at a time with node=NAME")
        chain = stack
    parts = [_onnx_node_layer(n, constant) for n in chain]
    first = parts[0][0]
    for k, (opts, _) in enumerate(parts[1:], 1):
        for key in ("kind", "D", "H", "nonlinearity", "reset_after", "batch_first", "bias"):
            if opts[key] != first[key]:
                raise ValueError(f"from_onnx: stacked node {k} has {key}={opts[key]!r} but node 0 has "
                                 f"{first[key]!r}; import the nodes one at a time with node=NAME")
        if opts["input_size"] != first["D"] * first["H"]:
            raise ValueError(f"from_onnx: stacked node {k} takes {opts['input_size']} inputs, not the previous "
                             f"node's {first['D'] * first['H']} outputs")
    batch_first = first["batch_first"] or any(
        p.key == _BATCH_FIRST_KEY and p.value == "true" for p in model.metadata_props)
    layer = _build(first["kind"], first["input_size"], first["H"], len(chain), first["D"] == 2, first["bias"],
                   first["dtype"], batch_first, first["nonlinearity"], first["reset_after"])
    state = {}
    for k, (_, params) in enumerate(parts):
        for (name, d), value in params.items():
            state[f"{name}{_suffix(k, d)}"] = value
    layer.load_state_dict(state)
    return layer


def _stack_of(graph: Any, recurrent: list[Any]) -> list[Any] | None:
    """The recurrent nodes in stack order when each feeds the next through
    shape-only nodes (the Y (T, D, B, H) -> (T, B, D*H) of a stacked
    export), else None."""
    if len(recurrent) == 1:
        return recurrent
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    shape_ops = {"Transpose", "Reshape", "Squeeze", "Identity"}

    def feeds(a: Any, b: Any) -> bool:
        """Whether a's output Y reaches b's input X through shape-only nodes."""
        frontier, seen = [a.output[0]], set()
        while frontier:
            name = frontier.pop()
            if name in seen:
                continue
            seen.add(name)
            for consumer in consumers.get(name, []):
                if consumer is b and consumer.input[0] == name:
                    return True
                if consumer.op_type in shape_ops and consumer.input[0] == name:
                    frontier.extend(consumer.output)
        return False

    fed = {id(b) for a in recurrent for b in recurrent if a is not b and feeds(a, b)}
    heads = [n for n in recurrent if id(n) not in fed]
    if len(heads) != 1:
        return None
    chain = heads
    while len(chain) < len(recurrent):
        following = [b for b in recurrent if b is not chain[-1] and feeds(chain[-1], b)]
        if len(following) != 1:
            return None
        chain.append(following[0])
    return chain
