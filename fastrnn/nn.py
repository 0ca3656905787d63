"""The pieces around the recurrent layers: Embedding, Linear, Dropout,
Sequential, and the losses (from fastrnn.losses).  Same style as the
recurrent layers: `forward` (or calling the module) keeps what `backward`
needs in training mode; `backward(dy)` adds into `grads` and returns the
gradient of the input; PyTorch's parameter names, shapes and initialisation.

    model = Sequential(Embedding(65, 32), LSTM(32, 256, batch_first=True), Linear(256, 65))
    logits = model(ids)                      # (B, T, 65)
    loss, dlogits = cross_entropy(logits, targets)
    model.backward(dlogits)
"""
from __future__ import annotations

from typing import Any, Iterator, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from fastrnn._kernels import recurrence as _recurrence
from fastrnn._checks import as_float_array, check_bool, check_dtype, check_probability, check_size, make_rng
from fastrnn._module import Module
from fastrnn._threads import get_num_threads
from fastrnn.losses import binary_cross_entropy_with_logits, cross_entropy, mse_loss

__all__ = ["Module", "Linear", "Embedding", "Dropout", "Sequential",
           "mse_loss", "cross_entropy", "binary_cross_entropy_with_logits"]

Seed = Union[int, np.random.Generator, None]


def _no_forward(module: Module) -> ValueError:
    why = "it is in eval mode" if not module.training else "forward has not been called since the last backward"
    return ValueError(f"{type(module).__name__}.backward: no stored forward pass to differentiate ({why}); "
                      "call it in training mode (.train()) before backward")


class Linear(Module):
    dtype: np.dtype[Any]

    """y = x @ weight.T + bias on the last axis of x (any number of leading
    axes).  weight (out_features, in_features), bias (out_features), both
    uniform in +-1/sqrt(in_features) as in PyTorch."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: DTypeLike = np.float32,
                 seed: Seed = None) -> None:
        super().__init__(check_dtype(dtype))
        self.in_features = check_size("in_features", in_features)
        self.out_features = check_size("out_features", out_features)
        self.bias = check_bool("bias", bias)
        self._config = dict(in_features=self.in_features, out_features=self.out_features, bias=self.bias,
                            dtype=self.dtype.name)
        rng = make_rng(seed)
        k = 1.0 / np.sqrt(self.in_features)
        self._add_param("weight", rng.uniform(-k, k, (self.out_features, self.in_features)))
        if self.bias:
            self._add_param("bias", rng.uniform(-k, k, self.out_features))
        self._no_bias = np.empty(0, dtype=self.dtype)
        self._x: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"Linear({self.in_features}, {self.out_features}{'' if self.bias else ', bias=False'})"

    def _drop_tape(self) -> None:
        self._x = None

    def __call__(self, x: ArrayLike) -> np.ndarray:
        return self.forward(x)

    def forward(self, x: ArrayLike) -> np.ndarray:
        """x (..., in_features) -> (..., out_features)"""
        user_x = x
        x = as_float_array("x", x, self.dtype)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"x: the last dimension must be in_features={self.in_features}, got shape {x.shape}")
        lead = x.shape[:-1]
        x2 = np.ascontiguousarray(x.reshape(-1, self.in_features))
        y = np.empty((x2.shape[0], self.out_features), dtype=self.dtype)
        if x2.shape[0]:
            _recurrence.linear_forward(y, x2, self._params["weight"],
                                       self._params["bias"] if self.bias else self._no_bias, get_num_threads())
        if self.training:   # backward reads x: keep it safe from changes in place
            self._x = x2.copy() if np.may_share_memory(x2, user_x) else x2
        return y.reshape(*lead, self.out_features)

    def backward(self, dy: ArrayLike) -> np.ndarray:
        """dy (..., out_features) -> dx (..., in_features); adds into grads."""
        if self._x is None:
            raise _no_forward(self)
        dy = as_float_array("dy", dy, self.dtype)
        x2 = self._x
        if dy.shape[-1:] != (self.out_features,) or dy.size // self.out_features != x2.shape[0]:
            raise ValueError(f"dy must have the shape of the output (..., {self.out_features}) with "
                             f"{x2.shape[0]} rows, got {dy.shape}")
        lead = dy.shape[:-1]
        dy2 = np.ascontiguousarray(dy.reshape(-1, self.out_features))
        dx = np.empty_like(x2)
        if x2.shape[0]:
            _recurrence.linear_backward(dx, self._grads["weight"], self._grads["bias"] if self.bias else self._no_bias,
                                        dy2, x2, self._params["weight"], get_num_threads())
        self._x = None
        return dx.reshape(*lead, self.in_features)


class Embedding(Module):
    dtype: np.dtype[Any]

    """Token ids -> vectors: weight (num_embeddings, embedding_dim), normal(0, 1)
    as in PyTorch.  backward adds each output row's gradient into the row of
    its id.  With padding_idx, that row starts at zero and gets no gradient."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 dtype: DTypeLike = np.float32, seed: Seed = None) -> None:
        super().__init__(check_dtype(dtype))
        self.num_embeddings = check_size("num_embeddings", num_embeddings)
        self.embedding_dim = check_size("embedding_dim", embedding_dim)
        if padding_idx is not None:
            padding_idx = check_size("padding_idx", padding_idx, minimum=-self.num_embeddings)
            if padding_idx >= self.num_embeddings:
                raise ValueError(f"padding_idx must be below num_embeddings={self.num_embeddings}, got {padding_idx}")
            padding_idx %= self.num_embeddings
        self.padding_idx = padding_idx
        self._config = dict(num_embeddings=self.num_embeddings, embedding_dim=self.embedding_dim,
                            padding_idx=padding_idx, dtype=self.dtype.name)
        weight = make_rng(seed).standard_normal((self.num_embeddings, self.embedding_dim))
        if padding_idx is not None:
            weight[padding_idx] = 0
        self._add_param("weight", weight)
        self._ids: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"Embedding({self.num_embeddings}, {self.embedding_dim})"

    def _drop_tape(self) -> None:
        self._ids = None

    def __call__(self, ids: ArrayLike) -> np.ndarray:
        return self.forward(ids)

    def forward(self, token_ids: ArrayLike) -> np.ndarray:
        """token_ids: integer array of any shape -> (*token_ids.shape, embedding_dim)"""
        ids = np.asarray(token_ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"ids must be an integer array, got dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_embeddings):
            bad = ids[(ids < 0) | (ids >= self.num_embeddings)].flat[0]
            raise ValueError(f"ids must be between 0 and num_embeddings - 1 = {self.num_embeddings - 1}, got {bad}")
        out: np.ndarray = np.take(self._params["weight"], ids, axis=0)
        if self.training:
            self._ids = ids.copy()
        return out

    def backward(self, dy: ArrayLike) -> None:
        """Adds dy (*ids.shape, embedding_dim) into the rows of grads["weight"]
        of the ids; returns None (ids have no gradient)."""
        if self._ids is None:
            raise _no_forward(self)
        dy = as_float_array("dy", dy, self.dtype)
        expected = self._ids.shape + (self.embedding_dim,)
        if dy.shape != expected:
            raise ValueError(f"dy must have shape {expected} (the output's), got {dy.shape}")
        ids = self._ids.reshape(-1)
        rows = dy.reshape(-1, self.embedding_dim)
        if self.padding_idx is not None:
            keep = ids != self.padding_idx
            ids, rows = ids[keep], rows[keep]
        np.add.at(self._grads["weight"], ids, rows)
        self._ids = None
        return None


class Dropout(Module):
    """Zeroes each element with probability p in training mode, scaling the
    others by 1 / (1 - p); does nothing in eval mode."""

    def __init__(self, p: float = 0.5, seed: Seed = None) -> None:
        super().__init__()
        self.p = check_probability("p", p)
        self._config = dict(p=self.p)
        self._rng = make_rng(seed)
        self._mask: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"Dropout(p={self.p})"

    def _drop_tape(self) -> None:
        self._mask = None

    def __call__(self, x: ArrayLike) -> np.ndarray:
        return self.forward(x)

    def forward(self, x: ArrayLike) -> np.ndarray:
        a: np.ndarray = np.asarray(x)
        if a.dtype.kind != "f":
            raise TypeError(f"x must be a floating-point array, got dtype {a.dtype}")
        if not self.training or self.p == 0:
            self._mask = None if not self.training else np.ones(1, dtype=a.dtype)
            return a
        if self.p >= 1:
            self._mask = np.zeros(a.shape, dtype=a.dtype)
        else:
            keep: np.ndarray = self._rng.random(a.shape) >= self.p
            self._mask = keep.astype(a.dtype) / a.dtype.type(1 - self.p)
        out: np.ndarray = a * self._mask
        return out

    def backward(self, dy: ArrayLike) -> np.ndarray:
        if self._mask is None:
            raise _no_forward(self)
        dx: np.ndarray = np.asarray(dy) * self._mask
        self._mask = None
        return dx


class Sequential(Module):
    """Modules applied one after the other.  A module that returns a tuple (a
    recurrent layer returns its output and its final state) passes its first
    element on; backward goes through them in reverse, passing on the first
    element of what each backward returns (None, from an Embedding, ends it)."""

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        for m in modules:
            if not isinstance(m, Module):
                raise TypeError(f"Sequential takes fastrnn modules, got {type(m).__name__}")
        self.layers = list(modules)

    def __repr__(self) -> str:
        inner = "\n".join(f"  ({i}): {m!r}" for i, m in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"

    def children(self) -> Iterator[tuple[str, Module]]:
        """Named "0", "1", ... as in torch.nn.Sequential, so that state dicts match."""
        for i, m in enumerate(self.layers):
            yield str(i), m

    def __getitem__(self, i: int) -> Module:
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)

    def get_config(self) -> dict[str, Any]:
        from fastrnn.io import module_config
        return {"layers": [module_config(m) for m in self.layers]}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Sequential":
        from fastrnn.io import build_module
        return cls(*[build_module(c) for c in config["layers"]])

    def __call__(self, x: Any) -> Any:
        return self.forward(x)

    def forward(self, x: Any) -> Any:
        for m in self.layers:
            layer: Any = m   # every module a Sequential holds is callable
            x = layer(x)
            if isinstance(x, tuple):
                x = x[0]
        return x

    def backward(self, dy: Any) -> Any:
        for m in reversed(self.layers):
            layer: Any = m
            dy = layer.backward(dy)
            if isinstance(dy, tuple):
                dy = dy[0]
            if dy is None:
                break
        return dy
