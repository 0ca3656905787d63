"""Recurrent layers: RNN (tanh or ReLU), LSTM and GRU, stacked, bidirectional,
with ragged batches through `lengths`.

Names, shapes, gate orders and semantics are PyTorch's (torch.nn.RNN, LSTM,
GRU), so that weights move between the two without conversion.  Differences:
arrays are NumPy's, and the backward pass is explicit, `layer.backward(dy)`,
accumulating into `layer.grads`.

This module validates, converts and allocates; the compiled kernels in
fastrnn._recurrence run one (layer, direction) over the whole sequence each.
"""
from __future__ import annotations

import contextlib
import functools
import threading
import warnings
from typing import Any, Optional, Sequence, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from fastrnn._kernels import recurrence as _recurrence
from fastrnn._checks import (as_float_array, check_bool, check_dtype, check_lengths, kept_zeros,
                             check_probability, check_shape, check_size, make_rng)
from fastrnn._module import Module
from fastrnn._threads import get_num_threads

__all__ = ["RNN", "LSTM", "GRU"]

Seed = Union[int, np.random.Generator, None]
# per layer: (input (N, I_k), per direction (gates, saved, h_prev), dropout mask or None)
_LayerTape = tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray, np.ndarray]], Optional[np.ndarray]]


class Packing:
    """Where each (time, sequence) of a padded (T, B, .) batch lives in the
    packed rows the kernels work on: sequences sorted by length, longest
    first; the rows of time t are the sequences still running at t."""

    @staticmethod
    def of(T: int, B: int, lengths: np.ndarray | None) -> "Packing":
        """The packing of a batch: without lengths, one shared per (T, B)."""
        return Packing(T, B, lengths) if lengths is not None else _full_packing(T, B)

    def __init__(self, T: int, B: int, lengths: np.ndarray | None = None) -> None:
        self.T, self.B = T, B
        packed = None if lengths is None else _recurrence.pack_lengths(lengths, T)
        if packed is None:
            self.order: np.ndarray | None = None   # no reordering, every step full
            self.batch_sizes = _full_steps(T, B)
            self.N = T * B
            self._rows_tb: np.ndarray | None = None   # packed row r is row r of (T*B, .)
            self._rows_bt: np.ndarray | None = None   # computed when first needed
            self._pad_rows: np.ndarray | None = None
            return
        # the rows of a padded array each packed row is, time-major (T*B, .)
        # and batch-major (B*T, .), and the padded rows past the ends
        self.order, self.batch_sizes, self._rows_tb, self._rows_bt, self._pad_rows = packed
        self.N = self._rows_tb.shape[0]

    def rows_of(self, a: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(a2d, rows): a 2-D view of the (T, B, F) array a (no copy) and the
        row of it holding each packed row (None: the packed rows are a2d's
        rows themselves); (None, None) when a has no such view."""
        T, B, F = a.shape
        if a.flags.c_contiguous:
            return a.reshape(T * B, F), self._rows_tb
        batch_major = a.transpose(1, 0, 2)
        if batch_major.flags.c_contiguous:   # batch_first input, seen as (T, B, F)
            if self._rows_bt is None:
                r = np.arange(T * B, dtype=np.intp)
                self._rows_bt = (r % B) * T + r // B
            return batch_major.reshape(B * T, F), self._rows_bt
        return None, None

    def pack(self, a: np.ndarray) -> np.ndarray:
        """(T, B, F) with any strides -> (N, F) contiguous."""
        a2d, rows = self.rows_of(a)
        if a2d is None:
            a = np.ascontiguousarray(a)
            a2d, rows = a.reshape(self.T * self.B, a.shape[2]), self._rows_tb
        return a2d if rows is None else np.take(a2d, rows, axis=0)

    def padded_output(self, width: int, dtype: np.dtype[Any]) -> tuple[np.ndarray, np.ndarray | None]:
        """A (T*B, width) array for a layer's output written in place by the
        kernel, and the rows it writes (None: all, in order)."""
        out = np.empty((self.T * self.B, width), dtype=dtype)
        if self._rows_tb is None or self._pad_rows is None:   # every step full
            return out, None
        _recurrence.zero_rows(out, self._pad_rows)
        return out, self._rows_tb

    def unpack(self, packed: np.ndarray) -> np.ndarray:
        """(N, F) -> (T, B, F), zeros past each sequence's end."""
        if self._rows_tb is None or self._pad_rows is None:   # every step full
            return packed.reshape(self.T, self.B, packed.shape[1])
        out = np.empty((self.T * self.B, packed.shape[1]), dtype=packed.dtype)
        _recurrence.zero_rows(out, self._pad_rows)
        _recurrence.scatter_rows(out, self._rows_tb, packed)
        return out.reshape(self.T, self.B, packed.shape[1])

    def to_packed(self, state: np.ndarray) -> np.ndarray:
        """(S, B, H) in batch order -> (S, B, H) contiguous in packed order."""
        if self.order is None:
            return np.ascontiguousarray(state)
        return np.take(state, self.order, axis=1)

    def from_packed(self, state: np.ndarray) -> np.ndarray:
        if self.order is None:
            return state
        out = np.empty_like(state)
        out[:, self.order] = state
        return out


class _Tape:
    """What a training forward keeps for its backward."""

    def __init__(self, packing: Packing, batched: bool, out_shape: tuple[int, ...], layers: list[_LayerTape],
                 h_0: np.ndarray, c_0: np.ndarray | None) -> None:
        self.packing = packing
        self.batched = batched
        self.out_shape = out_shape   # shape of the output as returned
        self.layers = layers
        self.h_0 = h_0               # initial states, packed order (the RNN's backward reads them)
        self.c_0 = c_0               # LSTM initial cell state, packed order
        self.thread = threading.get_ident()   # only this thread's backward may consume it


class _RNNBase(Module):
    dtype: np.dtype[Any]

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, dtype: DTypeLike = np.float32, seed: Seed = None) -> None:
        super().__init__(check_dtype(dtype))
        self.mode = mode
        self.input_size = check_size("input_size", input_size)
        self.hidden_size = check_size("hidden_size", hidden_size)
        self.num_layers = check_size("num_layers", num_layers)
        self.bias = check_bool("bias", bias)
        self.batch_first = check_bool("batch_first", batch_first)
        self.dropout = check_probability("dropout", dropout)
        self.bidirectional = check_bool("bidirectional", bidirectional)
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn("dropout acts between recurrent layers, so with num_layers=1 it does nothing "
                          f"(dropout={self.dropout})", UserWarning, stacklevel=3)
        self._config = dict(input_size=self.input_size, hidden_size=self.hidden_size,
                            num_layers=self.num_layers, bias=self.bias, batch_first=self.batch_first,
                            dropout=self.dropout, bidirectional=self.bidirectional, dtype=self.dtype.name)
        if mode.startswith("RNN"):
            self._config["nonlinearity"] = "tanh" if mode == "RNN_TANH" else "relu"
        if mode.startswith("GRU"):
            self._config["reset_after"] = mode == "GRU"
        self._rng = make_rng(seed)
        self._cell = _recurrence.CELLS[mode]
        G, H, D = _recurrence.GATES[self._cell], self.hidden_size, self.num_directions
        # PyTorch's default: every parameter uniform in +-1/sqrt(hidden_size)
        k = 1.0 / np.sqrt(H)
        for layer in range(self.num_layers):
            layer_input = self.input_size if layer == 0 else D * H
            for d in range(D):
                s = _suffix(layer, d)
                self._add_param(f"weight_ih{s}", self._rng.uniform(-k, k, (G * H, layer_input)))
                self._add_param(f"weight_hh{s}", self._rng.uniform(-k, k, (G * H, H)))
                if self.bias:
                    self._add_param(f"bias_ih{s}", self._rng.uniform(-k, k, G * H))
                    self._add_param(f"bias_hh{s}", self._rng.uniform(-k, k, G * H))
        # parameter names of each (layer, direction), in the order the kernels take them
        self._names = [tuple(f"{name}{_suffix(layer, d)}" for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
                       for layer in range(self.num_layers) for d in range(D)]
        self._zero_bias = np.zeros(G * H, dtype=self.dtype)
        self._no_gates = np.empty((0, G * H), dtype=self.dtype)
        self._no_rows = np.empty((0, H), dtype=self.dtype)
        self._no_bias = np.empty(0, dtype=self.dtype)
        self._zeros = np.zeros((self.num_layers * D, 0, H), dtype=self.dtype)   # see _zero_state
        self._tape: _Tape | None = None
        # the workspace arrays (gates, saved, h_prev) of the last tape, once
        # its backward has consumed it or a new forward has replaced it: the
        # next training forward of the same shape reuses them
        self._spare: list[np.ndarray] = []
        # training calls (forward keeping a tape, backward adding into grads)
        # from several threads run one at a time; eval-mode calls share the
        # layer freely (they write nothing to it)
        self._training_lock = threading.Lock()
        self._replaced: set[int] = set()   # threads whose unused tape another thread's forward replaced

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def gate_count(self) -> int:
        return _recurrence.GATES[self._cell]

    def __repr__(self) -> str:
        args = [str(self.input_size), str(self.hidden_size)]
        if self.num_layers != 1:
            args.append(f"num_layers={self.num_layers}")
        if self.mode == "RNN_RELU":
            args.append("nonlinearity='relu'")
        if self.mode == "GRU_RESET_BEFORE":
            args.append("reset_after=False")
        for name, default in (("bias", True), ("batch_first", False), ("dropout", 0.0),
                              ("bidirectional", False)):
            if getattr(self, name) != default:
                args.append(f"{name}={getattr(self, name)}")
        if self.dtype != np.float32:
            args.append(f"dtype={self.dtype.name}")
        return f"{type(self).__name__}({', '.join(args)})"

    def _drop_tape(self) -> None:
        self._tape = None
        self._spare = []

    def _retire(self, tape: _Tape | None) -> None:
        """Keep a finished tape's workspace arrays for the next forward."""
        if tape is not None:
            self._spare = [a for _, directions, _ in tape.layers for kept in directions
                           for a in {id(a): a for a in kept}.values()]

    def load_state_dict(self, state_dict: Any) -> None:
        projection = [k for k in getattr(state_dict, "keys", lambda: [])() if str(k).startswith("weight_hr")]
        if projection:
            raise ValueError(f"load_state_dict: {projection[0]} is the projection of an LSTM with proj_size, "
                             "which fastrnn's LSTM does not have (it computes h without projection)")
        super().load_state_dict(state_dict)

    # --- argument checks ----------------------------------------------------

    def _check_input(self, x: ArrayLike) -> tuple[np.ndarray, bool]:
        x = as_float_array("x", x, self.dtype)
        if x.ndim == 2:
            batched = False
            x = x[:, None, :]
        elif x.ndim == 3:
            batched = True
            if self.batch_first:
                x = x.transpose(1, 0, 2)
        else:
            layout = "(B, T, input_size)" if self.batch_first else "(T, B, input_size)"
            raise ValueError(f"x must be 3-D {layout} or 2-D (T, input_size) unbatched, got {x.ndim}-D "
                             f"with shape {x.shape}")
        if x.shape[2] != self.input_size:
            raise ValueError(f"x: the last dimension must be input_size={self.input_size}, got {x.shape[2]}")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"x must hold at least one step of one sequence, got shape {x.shape}")
        return x, batched

    def _check_state(self, name: str, value: Optional[ArrayLike], B: int, batched: bool) -> np.ndarray:
        """A state (L*D, B, H), or (L*D, H) unbatched, as (L*D, B, H)."""
        S, H = self.num_layers * self.num_directions, self.hidden_size
        if value is None:
            return self._zero_state(B)
        value = as_float_array(name, value, self.dtype)
        if batched:
            check_shape(name, value, (S, B, H), "num_layers * num_directions, batch, hidden_size")
            return value
        check_shape(name, value, (S, H), "num_layers * num_directions, hidden_size for unbatched input")
        return value[:, None, :]

    def _zero_state(self, B: int) -> np.ndarray:
        """Zeros (L*D, B, H), read-only: the state (or its gradient) not given,
        kept for the next call with the same B (four in a training step)."""
        self._zeros = kept_zeros(self._zeros, (self.num_layers * self.num_directions, B, self.hidden_size),
                                 self.dtype)
        return self._zeros

    def _check_hx(self, hx: Any, B: int, batched: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if self.mode == "LSTM":
            if hx is None:
                zeros = self._zero_state(B)
                return zeros, zeros
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"hx for LSTM must be a tuple (h_0, c_0), got {type(hx).__name__}")
            return (self._check_state("hx[0] (h_0)", hx[0], B, batched),
                    self._check_state("hx[1] (c_0)", hx[1], B, batched))
        if isinstance(hx, (tuple, list)):
            raise TypeError(f"hx for {type(self).__name__} must be an array h_0, got {type(hx).__name__}")
        return self._check_state("hx (h_0)", hx, B, batched), None

    def _params_of(self, layer: int, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        w_ih, w_hh, b_ih, b_hh = self._names[layer * self.num_directions + d]
        p = self._params
        if self.bias:
            return p[w_ih], p[w_hh], p[b_ih], p[b_hh]
        return p[w_ih], p[w_hh], self._zero_bias, self._zero_bias

    def _grads_of(self, layer: int, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        w_ih, w_hh, b_ih, b_hh = self._names[layer * self.num_directions + d]
        g = self._grads
        if self.bias:
            return g[w_ih], g[w_hh], g[b_ih], g[b_hh]
        return g[w_ih], g[w_hh], self._no_bias, self._no_bias

    def _dropout_mask(self, shape: tuple[int, ...]) -> np.ndarray:
        if self.dropout >= 1.0:
            return np.zeros(shape, dtype=self.dtype)
        keep = self._rng.random(shape) >= self.dropout
        mask: np.ndarray = keep.astype(self.dtype) * self.dtype.type(1.0 / (1.0 - self.dropout))
        return mask

    # --- forward ---------------------------------------------------------------

    def _forward(self, x: ArrayLike, hx: Any,
                 lengths: Optional[ArrayLike]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The forward of every layer: (y, h_n, c_n or None), see forward."""
        with self._training_lock if self.training else _NO_LOCK:
            return self._forward_locked(x, hx, lengths)

    def _forward_locked(self, x: ArrayLike, hx: Any,
                        lengths: Optional[ArrayLike]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        x3d, batched = self._check_input(x)
        T, B = x3d.shape[0], x3d.shape[1]
        h_0, c_0 = self._check_hx(hx, B, batched)
        lengths_arr = None
        if lengths is not None:
            if not batched:
                raise ValueError("lengths needs batched input (T, B, input_size); unbatched input is one "
                                 "sequence of length T")
            lengths_arr = check_lengths(lengths, T, B)

        training, is_lstm = self.training, self.mode == "LSTM"
        packing = Packing.of(T, B, lengths_arr)
        if self._tape is not None and self._tape.thread != threading.get_ident():
            self._replaced.add(self._tape.thread)
        self._retire(self._tape)
        self._tape = None   # a new forward replaces the last one's, even if it does not complete
        # the first layer's input rows: packed, or (inference on a ragged
        # batch) read by the kernel in place, at the rows x_rows names
        x2d, x_rows = (None, None) if training or packing.order is None else packing.rows_of(x3d)
        inp = packing.pack(x3d) if x2d is None else x2d
        h_0 = packing.to_packed(h_0)
        if c_0 is not None:
            c_0 = packing.to_packed(c_0)
        if training:
            # backward reads these: they must not change under it
            if np.may_share_memory(inp, x):
                inp = inp.copy()
            if self.gate_count == 1 and hx is not None and np.may_share_memory(h_0, hx):
                h_0 = h_0.copy()
            if c_0 is not None and hx is not None and np.may_share_memory(c_0, hx[1]):
                c_0 = c_0.copy()

        N, H, D, G = packing.N, self.hidden_size, self.num_directions, self.gate_count
        dtype, threads, no_rows = self.dtype, get_num_threads(), self._no_rows
        h_n = np.empty((self.num_layers * D, B, H), dtype=dtype)
        c_n = np.empty_like(h_n) if is_lstm else None
        no_gates = self._no_gates
        L = self.num_layers
        ragged = int(packing.batch_sizes[-1]) != B
        spare, self._spare = self._spare, []

        def workspace(width: int) -> np.ndarray:
            """An (N, width) array: one the last tape left, or a new one.
            Reusing them saves the page faults of fresh memory (measured:
            LSTM forward+backward at B=8, T=200, H=128 took 8.9 ms instead of
            5.6 when fresh pages were slow to come, after PyTorch had run)."""
            for i, a in enumerate(spare):
                if a.shape == (N, width):
                    return spare.pop(i)
            return np.empty((N, width), dtype=dtype)

        # every buffer first, so that a call too big for memory fails before any work
        try:
            outputs: list[tuple[np.ndarray, np.ndarray | None]] = []
            tapes: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = []
            for layer in range(L):
                if layer == L - 1:   # straight into the padded output
                    outputs.append(packing.padded_output(D * H, dtype))
                elif training or layer < 2:
                    outputs.append((np.empty((N, D * H), dtype=dtype), None))
                else:   # inference: two buffers in turn
                    outputs.append(outputs[layer - 2])
                if training:
                    # the RNN keeps no gates: its backward turns saved (h') into them; nor, over
                    # sequences of equal lengths, the states before each step, which are h' too
                    # (see _recurrence.pack_prev; with unequal lengths, its blocks of steps left
                    # one thread waiting for the other: measured 4% slower at B=32, T=100, H=128)
                    tapes.append([(saved, saved, workspace(H) if ragged else no_rows) if G == 1 else
                                  (workspace(G * H), saved, workspace(H))
                                  for saved in (workspace(H) for _ in range(D))])
        except MemoryError:
            rows = T * B if packing.order is not None else N
            count = rows * D * H + (L - 1 if training else min(L - 1, 2)) * N * D * H
            if training:
                count += L * D * N * H * (G + 1 if G > 1 else 1 + ragged)
            raise MemoryError(f"{type(self).__name__}.forward needs {_size(count * dtype.itemsize)} for its "
                              f"output{' and what backward keeps' if training else ''} (T={T}, B={B}); "
                              "nothing was computed, the layer is unchanged") from None
        layers: list[_LayerTape] = []
        for layer in range(L):
            y, y_rows = outputs[layer]
            directions = tapes[layer] if training else []
            for d in range(D):
                i = layer * D + d
                gates, saved, h_prev = directions[d] if training else (no_gates, no_rows, no_rows)
                w_ih, w_hh, b_ih, b_hh = self._params_of(layer, d)
                _recurrence.forward(
                    self._cell, y if D == 1 else y[:, d * H:(d + 1) * H], h_n[i], _row(c_n, i, no_rows),
                    gates, saved, h_prev, inp, w_ih, w_hh, b_ih, b_hh,
                    h_0[i], _row(c_0, i, no_rows), packing.batch_sizes, d == 1, threads, y_rows,
                    x_rows if layer == 0 else None)
            mask = None
            if training and self.dropout > 0 and layer < self.num_layers - 1:
                mask = self._dropout_mask(y.shape)
            if training:
                layers.append((inp, directions, mask))
            inp = y if mask is None else y * mask

        out = inp.reshape(T, B, D * H)
        if batched and self.batch_first:
            out = out.transpose(1, 0, 2)
        h_n = packing.from_packed(h_n)
        if c_n is not None:
            c_n = packing.from_packed(c_n)
        if not batched:
            out, h_n = out[:, 0], h_n[:, 0]
            if c_n is not None:
                c_n = c_n[:, 0]
        self._tape = _Tape(packing, batched, out.shape, layers, h_0, c_0) if training else None
        return out, h_n, c_n

    # --- backward --------------------------------------------------------------

    def _backward(self, dy: Optional[ArrayLike], dh_n: Optional[ArrayLike],
                  dc_n: Optional[ArrayLike]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        with self._training_lock:
            return self._backward_locked(dy, dh_n, dc_n)

    def _backward_locked(self, dy: Optional[ArrayLike], dh_n: Optional[ArrayLike],
                         dc_n: Optional[ArrayLike]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        tape = self._tape
        me = threading.get_ident()
        if me in self._replaced and (tape is None or tape.thread != me):
            self._replaced.discard(me)
            raise RuntimeError("backward: this thread's training forward was replaced by another thread's "
                               "forward on the same layer; to train from several threads, give each thread "
                               "its own layer (copy the parameters with load_state_dict)")
        if tape is None:
            why = "the layer is in eval mode" if not self.training else "forward has not been called since " \
                  "the last backward"
            raise ValueError(f"backward: no stored forward pass to differentiate ({why}); call the layer "
                             "in training mode (layer.train()) before backward")
        if tape.thread != me:
            raise RuntimeError("backward: the layer's last training forward ran in another thread, so this "
                               "thread's forward was replaced by it; to train from several threads, give each "
                               "thread its own layer (copy the parameters with load_state_dict)")
        packing, batched, is_lstm = tape.packing, tape.batched, self.mode == "LSTM"
        L, D, H, B = self.num_layers, self.num_directions, self.hidden_size, packing.B
        dtype = self.dtype
        dy_rows = None
        if dy is None:
            d_out = np.zeros((packing.N, D * H), dtype=dtype)
        else:
            dy3d = as_float_array("dy", dy, dtype)
            check_shape("dy", dy3d, tape.out_shape, "the shape of the output y")
            if not batched:
                dy3d = dy3d[:, None, :]
            elif self.batch_first:
                dy3d = dy3d.transpose(1, 0, 2)
            dy2d, dy_rows = packing.rows_of(dy3d)   # read in place when its layout allows
            d_out = packing.pack(dy3d) if dy2d is None else dy2d
        # the gradients not given: zeros, already in any order
        dh_n_packed = self._zero_state(B) if dh_n is None else \
            packing.to_packed(self._check_state("dh_n", dh_n, B, batched))
        dc_n_packed = None
        if is_lstm:
            dc_n_packed = self._zero_state(B) if dc_n is None else \
                packing.to_packed(self._check_state("dc_n", dc_n, B, batched))

        # every check passed: from here on the layer's grads change, and the
        # kernels consume the tape's buffers (even if interrupted by Ctrl-C)
        self._tape = None
        threads, no_rows = get_num_threads(), self._no_rows
        # every buffer first, so that a call too big for memory fails before any gradient changes:
        # the input gradient of each layer.  With one direction, a layer's input gradient is written
        # over its input (the tape's own copy, read last by the weight gradients; measured: RNN at
        # B=64, T=50, I=H=512, 6.5 MB less at the peak of forward+backward); with two, whose
        # second direction still reads the input after the first one's dx, the layers above the
        # first take two buffers in turn
        try:
            dh_0 = np.empty((L * D, B, H), dtype=dtype)
            dc_0 = np.empty_like(dh_0) if is_lstm else None
            dxs = [] if D == 1 else [np.empty_like(tape.layers[0][0])] + [
                np.empty((packing.N, D * H), dtype=dtype) for _ in range(min(L - 1, 2))]
        except MemoryError:
            count = (1 + is_lstm) * L * D * B * H
            if D > 1:
                count += packing.N * (tape.layers[0][0].shape[1] + min(L - 1, 2) * D * H)
            self._tape = tape   # unused: backward can be called again
            raise MemoryError(f"{type(self).__name__}.backward needs {_size(count * dtype.itemsize)} for the "
                              "input gradients; nothing was computed, the gradients are unchanged") from None
        for layer in reversed(range(L)):
            inp, directions, _ = tape.layers[layer]
            dx = inp if D == 1 else dxs[0] if layer == 0 else dxs[1 + (layer - 1) % 2]
            for d in range(D):
                i = layer * D + d
                gates, saved, h_prev = directions[d]
                w_ih, w_hh, _, _ = self._params_of(layer, d)
                dw_ih, dw_hh, db_ih, db_hh = self._grads_of(layer, d)
                _recurrence.backward(
                    self._cell, dx, dh_0[i], _row(dc_0, i, no_rows),
                    dw_ih, dw_hh, db_ih, db_hh, gates, saved, h_prev,
                    d_out if D == 1 else d_out[:, d * H:(d + 1) * H], dh_n_packed[i], _row(dc_n_packed, i, no_rows),
                    inp, w_ih, w_hh, _row(tape.c_0, i, no_rows),
                    packing.batch_sizes, d == 1, d == 1, threads,
                    dy_rows if layer == L - 1 else None, tape.h_0[i])
            mask = tape.layers[layer - 1][2] if layer > 0 else None
            if mask is not None:
                dx *= mask
            d_out = dx
        self._retire(tape)

        dx = packing.unpack(d_out)
        if batched and self.batch_first:
            dx = dx.transpose(1, 0, 2)
        dh_0 = packing.from_packed(dh_0)
        if dc_0 is not None:
            dc_0 = packing.from_packed(dc_0)
        if not batched:
            dx, dh_0 = dx[:, 0], dh_0[:, 0]
            if dc_0 is not None:
                dc_0 = dc_0[:, 0]
        return dx, dh_0, dc_0


_NO_LOCK = contextlib.nullcontext()   # reusable


def _full_steps(T: int, B: int) -> np.ndarray:
    """batch_sizes of a batch without lengths: B at each of the T steps.
    Cached for short sequences, where np.full's microsecond shows; a long
    one gets its own array (a cache of those could hold megabytes)."""
    return _full_steps_cached(T, B) if T <= 4096 else np.full(T, B, dtype=np.intp)


@functools.lru_cache(maxsize=64)
def _full_packing(T: int, B: int) -> Packing:
    """The packing of a batch without lengths, shared: nothing in it changes
    once made (but the batch-major rows, which it computes on first use),
    and making one costs microseconds that a short sequence notices."""
    return Packing(T, B)


@functools.lru_cache(maxsize=64)
def _full_steps_cached(T: int, B: int) -> np.ndarray:
    sizes = np.full(T, B, dtype=np.intp)
    sizes.flags.writeable = False
    return sizes


def _suffix(layer: int, direction: int) -> str:
    return f"_l{layer}" + ("_reverse" if direction == 1 else "")


def _size(nbytes: int) -> str:
    return f"{nbytes} bytes ({nbytes / 2**30:.2f} GiB)"


def _row(states: np.ndarray | None, i: int, absent: np.ndarray) -> np.ndarray:
    """states[i], or `absent` for a cell without that state (c: not an LSTM)."""
    return absent if states is None else states[i]


class _HiddenStateRNN(_RNNBase):
    """A layer whose state is h alone (RNN, GRU)."""

    def __call__(self, x: ArrayLike, hx: Optional[ArrayLike] = None,
                 lengths: Optional[ArrayLike] = None) -> tuple[np.ndarray, np.ndarray]:
        return self.forward(x, hx, lengths)

    def forward(self, x: ArrayLike, hx: Optional[ArrayLike] = None,
                lengths: Optional[ArrayLike] = None) -> tuple[np.ndarray, np.ndarray]:
        """x (T, B, input_size), or (B, T, input_size) with batch_first, or
        (T, input_size) unbatched; hx the initial state h_0 (zeros when None);
        lengths (B,) the length of each sequence of a padded batch.

        Returns y (T, B, D * hidden_size) and h_n (L * D, B, hidden_size).
        With lengths, y is zero past each sequence's end and h_n is the state
        at its last step."""
        out, h_n, _ = self._forward(x, hx, lengths)
        return out, h_n

    def backward(self, dy: Optional[ArrayLike] = None,
                 dh_n: Optional[ArrayLike] = None) -> tuple[np.ndarray, np.ndarray]:
        """Backpropagation through time of the last forward: dy the gradient
        of y (None: zero), dh_n that of h_n.  Adds the parameter gradients into
        `grads`; returns dx, dh_0."""
        dx, dh_0, _ = self._backward(dy, dh_n, None)
        return dx, dh_0


class RNN(_HiddenStateRNN):
    """Elman RNN: h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), act tanh or relu."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, dtype: DTypeLike = np.float32, seed: Seed = None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size,
                         num_layers, bias, batch_first, dropout, bidirectional, dtype, seed)


class GRU(_HiddenStateRNN):
    """GRU, gates r, z, n: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),
    h' = (1 - z) * n + z * h.

    reset_after=False is the other GRU (Keras's reset_after=False, ONNX's
    linear_before_reset=0, the 2014 paper's): the reset multiplies h before
    the recurrent product, n = tanh(W_in x + b_in + W_hn (r * h) + b_hn).
    Same parameters, different numbers: PyTorch's GRU is reset_after=True."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 dtype: DTypeLike = np.float32, seed: Seed = None, reset_after: bool = True) -> None:
        mode = "GRU" if check_bool("reset_after", reset_after) else "GRU_RESET_BEFORE"
        super().__init__(mode, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype, seed)

    @property
    def reset_after(self) -> bool:
        return self.mode == "GRU"


class LSTM(_RNNBase):
    """LSTM, gates i, f, g, o: c' = f * c + i * g, h' = o * tanh(c')."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 dtype: DTypeLike = np.float32, seed: Seed = None) -> None:
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype, seed)

    def __call__(self, x: ArrayLike, hx: Optional[Sequence[ArrayLike]] = None,
                 lengths: Optional[ArrayLike] = None) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        return self.forward(x, hx, lengths)

    def forward(self, x: ArrayLike, hx: Optional[Sequence[ArrayLike]] = None,
                lengths: Optional[ArrayLike] = None) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """x (T, B, input_size), or (B, T, input_size) with batch_first, or
        (T, input_size) unbatched; hx the initial state (h_0, c_0) (zeros when
        None); lengths (B,) the length of each sequence of a padded batch.

        Returns y (T, B, D * hidden_size) and (h_n, c_n), each (L * D, B,
        hidden_size).  With lengths, y is zero past each sequence's end and
        h_n, c_n are the states at its last step."""
        out, h_n, c_n = self._forward(x, hx, lengths)
        assert c_n is not None
        return out, (h_n, c_n)

    def backward(self, dy: Optional[ArrayLike] = None, dh_n: Optional[ArrayLike] = None,
                 dc_n: Optional[ArrayLike] = None) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Backpropagation through time of the last forward: dy the gradient
        of y (None: zero), dh_n and dc_n those of h_n and c_n.  Adds the
        parameter gradients into `grads`; returns dx, (dh_0, dc_0)."""
        dx, dh_0, dc_0 = self._backward(dy, dh_n, dc_n)
        assert dc_0 is not None
        return dx, (dh_0, dc_0)
