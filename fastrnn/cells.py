"""Single-step cells, RNNCell, LSTMCell and GRUCell, for generation and for
loops written by hand.  PyTorch's names (weight_ih, weight_hh, bias_ih,
bias_hh), shapes and gate orders.

A cell in training mode keeps each forward step on a stack, and `backward`
takes the most recent one: calling forward T times and then backward T times
(latest step first, carrying dh back) is backpropagation through time of the
loop.  In eval mode nothing is kept (use it for generation).

The step runs the same compiled kernel as the layers, on a sequence of one step.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Optional, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from fastrnn._kernels import recurrence as _recurrence
from fastrnn._checks import (as_float_array, check_bool, check_dtype, check_shape, check_size, kept_zeros,
                             make_rng)
from fastrnn._module import Module
from fastrnn._threads import get_num_threads
from fastrnn.layers import _full_steps

__all__ = ["RNNCell", "LSTMCell", "GRUCell"]

Seed = Union[int, np.random.Generator, None]


class _Step:
    """What a training forward step keeps for its backward."""
    __slots__ = ("batched", "x", "gates", "saved", "h_prev", "c_0", "thread")

    def __init__(self, batched: bool, x: np.ndarray, gates: np.ndarray, saved: np.ndarray,
                 h_prev: np.ndarray, c_0: np.ndarray) -> None:
        self.batched, self.x, self.gates, self.saved, self.h_prev, self.c_0 = (
            batched, x, gates, saved, h_prev, c_0)
        self.thread = threading.get_ident()


class _CellBase(Module):
    dtype: np.dtype[Any]

    def __init__(self, mode: str, input_size: int, hidden_size: int, bias: bool, dtype: DTypeLike,
                 seed: Seed) -> None:
        super().__init__(check_dtype(dtype))
        self.mode = mode
        self.input_size = check_size("input_size", input_size)
        self.hidden_size = check_size("hidden_size", hidden_size)
        self.bias = check_bool("bias", bias)
        self._config = dict(input_size=self.input_size, hidden_size=self.hidden_size, bias=self.bias,
                            dtype=self.dtype.name)
        if mode.startswith("RNN"):
            self._config["nonlinearity"] = "tanh" if mode == "RNN_TANH" else "relu"
        if mode.startswith("GRU"):
            self._config["reset_after"] = mode == "GRU"
        self._cell = _recurrence.CELLS[mode]
        G, H = _recurrence.GATES[self._cell], self.hidden_size
        rng = make_rng(seed)
        k = 1.0 / np.sqrt(H)
        self._add_param("weight_ih", rng.uniform(-k, k, (G * H, self.input_size)))
        self._add_param("weight_hh", rng.uniform(-k, k, (G * H, H)))
        if self.bias:
            self._add_param("bias_ih", rng.uniform(-k, k, G * H))
            self._add_param("bias_hh", rng.uniform(-k, k, G * H))
        self._zero_bias = np.zeros(G * H, dtype=self.dtype)
        self._no_rows = np.empty((0, H), dtype=self.dtype)
        self._no_bias = np.empty(0, dtype=self.dtype)
        self._zeros = self._no_rows   # see _zero_state
        self._steps: list[_Step] = []
        self._training_lock = threading.Lock()   # training steps from several threads: one at a time

    def __repr__(self) -> str:
        extra = "" if self.bias else ", bias=False"
        if self.mode == "RNN_RELU":
            extra += ", nonlinearity='relu'"
        if self.mode == "GRU_RESET_BEFORE":
            extra += ", reset_after=False"
        if self.dtype != np.float32:
            extra += f", dtype={self.dtype.name}"
        return f"{type(self).__name__}({self.input_size}, {self.hidden_size}{extra})"

    def _drop_tape(self) -> None:
        self._steps.clear()

    def _check_input(self, x: ArrayLike) -> tuple[np.ndarray, bool]:
        x = as_float_array("x", x, self.dtype)
        if x.ndim not in (1, 2):
            raise ValueError(f"x must be 2-D (batch, input_size) or 1-D (input_size,) unbatched, "
                             f"got {x.ndim}-D with shape {x.shape}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"x: the last dimension must be input_size={self.input_size}, got {x.shape[-1]}")
        batched = x.ndim == 2
        x = x if batched else x[None, :]
        if x.shape[0] == 0:
            raise ValueError(f"x must hold at least one row, got shape {x.shape}")
        return np.ascontiguousarray(x), batched

    def _check_state(self, name: str, value: Optional[ArrayLike], B: int, batched: bool) -> np.ndarray:
        H = self.hidden_size
        if value is None:
            return self._zero_state(B)
        value = as_float_array(name, value, self.dtype)
        if batched:
            check_shape(name, value, (B, H), "batch, hidden_size")
            return np.ascontiguousarray(value)
        check_shape(name, value, (H,), "hidden_size for unbatched input")
        return np.ascontiguousarray(value[None, :])

    def _zero_state(self, B: int) -> np.ndarray:
        """Zeros (B, H), read-only, kept for the next step with the same B."""
        self._zeros = kept_zeros(self._zeros, (B, self.hidden_size), self.dtype)
        return self._zeros

    def _weights(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        p = self._params
        if self.bias:
            return p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"]
        return p["weight_ih"], p["weight_hh"], self._zero_bias, self._zero_bias

    def _step_forward(self, user_x: ArrayLike, hx: Optional[ArrayLike],
                      user_c: Optional[ArrayLike]) -> tuple[np.ndarray, np.ndarray]:
        with self._training_lock if self.training else contextlib.nullcontext():
            return self._step_forward_locked(user_x, hx, user_c)

    def _step_forward_locked(self, user_x: ArrayLike, hx: Optional[ArrayLike],
                             user_c: Optional[ArrayLike]) -> tuple[np.ndarray, np.ndarray]:
        x, batched = self._check_input(user_x)
        B, H, G = x.shape[0], self.hidden_size, _recurrence.GATES[self._cell]
        is_lstm = self.mode == "LSTM"
        h = self._check_state("h" if not is_lstm else "hx[0] (h)", hx, B, batched)
        c = self._check_state("hx[1] (c)", user_c, B, batched) if is_lstm else self._no_rows
        training, dtype = self.training, self.dtype
        if training:  # backward reads these: they must not change under it
            if np.may_share_memory(x, user_x):
                x = x.copy()
            if is_lstm and np.may_share_memory(c, user_c):
                c = c.copy()
        y = np.empty((B, H), dtype=dtype)
        h_new = np.empty((B, H), dtype=dtype)
        c_new = np.empty((B, H), dtype=dtype) if is_lstm else self._no_rows
        saved = np.empty((B, H), dtype=dtype) if training else self._no_rows
        # the RNN keeps no gates: its backward turns saved (h') into them
        gates = saved if training and G == 1 else np.empty((B, G * H) if training else (0, G * H), dtype=dtype)
        h_prev = np.empty((B, H), dtype=dtype) if training else self._no_rows
        w_ih, w_hh, b_ih, b_hh = self._weights()
        _recurrence.forward(self._cell, y, h_new, c_new, gates, saved, h_prev, x, w_ih, w_hh, b_ih, b_hh,
                            h, c, _full_steps(1, B), False, get_num_threads())
        if training:
            self._steps.append(_Step(batched, x, gates, saved, h_prev, c))
        if not batched:
            h_new, c_new = h_new[0], c_new[0] if is_lstm else c_new
        return h_new, c_new

    def _step_backward(self, dh: Optional[ArrayLike],
                       dc: Optional[ArrayLike]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with self._training_lock:
            return self._step_backward_locked(dh, dc)

    def _step_backward_locked(self, dh: Optional[ArrayLike],
                              dc: Optional[ArrayLike]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self._steps:
            why = "the cell is in eval mode" if not self.training else "every forward step has had its backward"
            raise ValueError(f"backward: no stored forward step to differentiate ({why}); call the cell "
                             "in training mode (cell.train()) before backward")
        step = self._steps[-1]
        if step.thread != threading.get_ident():
            raise RuntimeError("backward: the cell's latest training step ran in another thread; to train "
                               "from several threads, give each thread its own cell")
        B, H, is_lstm = step.x.shape[0], self.hidden_size, self.mode == "LSTM"
        dh = self._check_state("dh", dh, B, step.batched)
        dc = self._check_state("dc", dc, B, step.batched) if is_lstm else self._no_rows
        self._steps.pop()
        dtype, p, g = self.dtype, self._params, self._grads
        dx = np.empty_like(step.x)
        dh_prev = np.empty((B, H), dtype=dtype)
        dc_prev = np.empty((B, H), dtype=dtype) if is_lstm else self._no_rows
        if self.bias:
            db_ih, db_hh = g["bias_ih"], g["bias_hh"]
        else:
            db_ih = db_hh = self._no_bias
        # the gradient reaching h' is dh: pass it as that of the output, none via h_n
        _recurrence.backward(self._cell, dx, dh_prev, dc_prev, g["weight_ih"], g["weight_hh"],
                             db_ih, db_hh, step.gates, step.saved, step.h_prev, dh,
                             self._zero_state(B), dc, step.x, p["weight_ih"], p["weight_hh"],
                             step.c_0, _full_steps(1, B), False, False, get_num_threads())
        if not step.batched:
            dx, dh_prev = dx[0], dh_prev[0]
            dc_prev = dc_prev[0] if is_lstm else dc_prev
        return dx, dh_prev, dc_prev


class _HiddenStateCell(_CellBase):
    """A cell whose state is h alone (RNN, GRU)."""

    def __call__(self, x: ArrayLike, hx: Optional[ArrayLike] = None) -> np.ndarray:
        return self.forward(x, hx)

    def forward(self, x: ArrayLike, hx: Optional[ArrayLike] = None) -> np.ndarray:
        """x (B, input_size) or (input_size,); hx (B, hidden_size) or None (zeros). Returns h'."""
        return self._step_forward(x, hx, None)[0]

    def backward(self, dh: Optional[ArrayLike] = None) -> tuple[np.ndarray, np.ndarray]:
        """Backward of the latest forward step: dh the gradient of h'.
        Adds into `grads`; returns dx, dh_prev."""
        dx, dh_prev, _ = self._step_backward(dh, None)
        return dx, dh_prev


class RNNCell(_HiddenStateCell):
    """h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh), act tanh or relu."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 dtype: DTypeLike = np.float32, seed: Seed = None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size,
                         bias, dtype, seed)


class GRUCell(_HiddenStateCell):
    """GRU step, gates r, z, n (PyTorch's GRUCell); reset_after=False is the
    other GRU, as in fastrnn.GRU."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, dtype: DTypeLike = np.float32,
                 seed: Seed = None, reset_after: bool = True) -> None:
        mode = "GRU" if check_bool("reset_after", reset_after) else "GRU_RESET_BEFORE"
        super().__init__(mode, input_size, hidden_size, bias, dtype, seed)

    @property
    def reset_after(self) -> bool:
        return self.mode == "GRU"


class LSTMCell(_CellBase):
    """LSTM step, gates i, f, g, o (PyTorch's LSTMCell)."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, dtype: DTypeLike = np.float32,
                 seed: Seed = None) -> None:
        super().__init__("LSTM", input_size, hidden_size, bias, dtype, seed)

    def __call__(self, x: ArrayLike,
                 hx: Optional[tuple[ArrayLike, ArrayLike]] = None) -> tuple[np.ndarray, np.ndarray]:
        return self.forward(x, hx)

    def forward(self, x: ArrayLike,
                hx: Optional[tuple[ArrayLike, ArrayLike]] = None) -> tuple[np.ndarray, np.ndarray]:
        """x (B, input_size) or (input_size,); hx a tuple (h, c) or None (zeros).
        Returns (h', c')."""
        if hx is None:
            h, c = None, None
        elif isinstance(hx, (tuple, list)) and len(hx) == 2:
            h, c = hx
        else:
            raise TypeError(f"hx for LSTMCell must be a tuple (h, c), got {type(hx).__name__}")
        return self._step_forward(x, h, c)

    def backward(self, dh: Optional[ArrayLike] = None,
                 dc: Optional[ArrayLike] = None) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Backward of the latest forward step: dh, dc the gradients of h', c'.
        Adds into `grads`; returns dx, (dh_prev, dc_prev)."""
        dx, dh_prev, dc_prev = self._step_backward(dh, dc)
        return dx, (dh_prev, dc_prev)
