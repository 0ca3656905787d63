"""What every fastrnn layer and cell has: named parameters with PyTorch's
names and shapes, their gradients, and the training flag."""
from __future__ import annotations

from typing import Mapping

import numpy as np


class Module:
    """Parameters and gradients as dicts of ndarrays, keyed like PyTorch's
    state_dict.  `params` and `grads` are the live arrays (an optimiser updates
    them in place); `state_dict()` returns copies."""

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype
        self.training = True
        self._params: dict[str, np.ndarray] = {}
        self._grads: dict[str, np.ndarray] = {}

    def _add_param(self, name: str, value: np.ndarray) -> None:
        self._params[name] = np.ascontiguousarray(value, dtype=self.dtype)
        self._grads[name] = np.zeros_like(self._params[name])

    @property
    def params(self) -> dict[str, np.ndarray]:
        """The parameters themselves (not copies), in PyTorch's order."""
        return self._params

    @property
    def grads(self) -> dict[str, np.ndarray]:
        """Gradients of the parameters, same keys and shapes; backward adds into them."""
        return self._grads

    def zero_grad(self) -> None:
        for g in self._grads.values():
            g.fill(0)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters, with PyTorch's names and shapes."""
        return {name: value.copy() for name, value in self._params.items()}

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Copy parameters in from a mapping of name -> array-like (ndarrays,
        lists, CPU tensors).  Every key must be present and no other; shapes
        must match.  Nothing is changed unless everything checks out."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping of name -> array, got {type(state_dict).__name__}")
        missing = [k for k in self._params if k not in state_dict]
        unexpected = [k for k in state_dict if k not in self._params]
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing keys {missing}")
            if unexpected:
                parts.append(f"unexpected keys {unexpected}")
            raise ValueError(f"load_state_dict: {'; '.join(parts)} (expected {list(self._params)})")
        arrays = {}
        for name, target in self._params.items():
            try:
                value = np.asarray(state_dict[name])
            except Exception as exc:
                raise TypeError(f"load_state_dict: {name}: cannot convert {type(state_dict[name]).__name__} "
                                f"to an array: {exc}") from None
            if value.dtype.kind not in "iuf":
                raise TypeError(f"load_state_dict: {name} must be a real numeric array, got dtype {value.dtype}")
            if value.shape != target.shape:
                raise ValueError(f"load_state_dict: {name} must have shape {target.shape}, got {value.shape}")
            arrays[name] = value
        for name, value in arrays.items():
            np.copyto(self._params[name], value, casting="unsafe")

    def train(self, mode: bool = True):
        """Training mode: forward keeps what backward needs.  Returns self."""
        self.training = bool(mode)
        if not self.training:
            self._drop_tape()
        return self

    def eval(self):
        """Inference mode: forward keeps nothing.  Returns self."""
        return self.train(False)

    def _drop_tape(self) -> None:  # overridden by classes that keep forward state
        pass
