"""What every fastrnn layer, cell and model has: named parameters with
PyTorch's names and shapes, their gradients, the training flag, and a config
from which it can be rebuilt.

A composite model is a subclass of Module whose attributes are modules (or
lists of modules): its parameters are theirs, named by the attribute path, as
in PyTorch ("encoder.weight_ih_l0", "layers.0.weight")."""
from __future__ import annotations

import os
from typing import Any, Iterator, Mapping, TypeVar

import numpy as np

M = TypeVar("M", bound="Module")


class Module:
    """Parameters and gradients as dicts of ndarrays, keyed like PyTorch's
    state_dict.  `params` and `grads` hold the live arrays (an optimiser
    updates them in place); `state_dict()` returns copies."""

    def __init__(self, dtype: Any = None) -> None:
        self.dtype = None if dtype is None else np.dtype(dtype)
        self.training = True
        self._params: dict[str, np.ndarray] = {}
        self._grads: dict[str, np.ndarray] = {}

    def _add_param(self, name: str, value: np.ndarray) -> None:
        self._params[name] = np.ascontiguousarray(value, dtype=self.dtype)
        self._grads[name] = np.zeros_like(self._params[name])

    # --- the tree of modules -------------------------------------------------

    def children(self) -> Iterator[tuple[str, "Module"]]:
        """(name, module) for every module held in an attribute (lists and
        tuples of modules give name.0, name.1, ...), in assignment order."""
        for name, value in vars(self).items():
            if name.startswith("_"):
                continue
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, Module):
                        yield f"{name}.{i}", item

    def _named(self, which: str) -> dict[str, np.ndarray]:
        own: dict[str, np.ndarray] = getattr(self, which)
        children = list(self.children())
        if not children:
            return own
        out = dict(own)
        for prefix, child in children:
            for name, value in child._named(which).items():
                out[f"{prefix}.{name}"] = value
        return out

    @property
    def params(self) -> dict[str, np.ndarray]:
        """The parameters themselves (not copies), in PyTorch's order."""
        return self._named("_params")

    @property
    def grads(self) -> dict[str, np.ndarray]:
        """Gradients of the parameters, same keys and shapes; backward adds into them."""
        return self._named("_grads")

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g.fill(0)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters, with PyTorch's names and shapes."""
        return {name: value.copy() for name, value in self.params.items()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Copy parameters in from a mapping of name -> array-like (ndarrays,
        lists, CPU tensors).  Every key must be present and no other; shapes
        must match.  Nothing is changed unless everything checks out."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping of name -> array, got {type(state_dict).__name__}")
        params = self.params
        missing = [k for k in params if k not in state_dict]
        unexpected = [k for k in state_dict if k not in params]
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing keys {missing}")
            if unexpected:
                parts.append(f"unexpected keys {unexpected}")
            raise ValueError(f"load_state_dict: {'; '.join(parts)} (expected {list(params)})")
        arrays = {}
        for name, target in params.items():
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
            np.copyto(params[name], value, casting="unsafe")

    # --- modes -----------------------------------------------------------------

    def train(self: M, mode: bool = True) -> M:
        """Training mode: forward keeps what backward needs.  Returns self."""
        self.training = bool(mode)
        if not self.training:
            self._drop_tape()
        for _, child in self.children():
            child.train(mode)
        return self

    def eval(self: M) -> M:
        """Inference mode: forward keeps nothing.  Returns self."""
        return self.train(False)

    def _drop_tape(self) -> None:  # overridden by classes that keep forward state
        pass

    # --- saving ------------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments, JSON-serialisable: the module is
        rebuilt as type(self)(**config) when loaded.  Composite models define
        it for fastrnn.load to rebuild them."""
        config = getattr(self, "_config", None)
        if config is None:
            raise NotImplementedError(f"{type(self).__name__} defines no get_config(): pass the model to "
                                      f"fastrnn.load(path, model=...) to load its parameters into it")
        return dict(config)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Save as .npz: parameters and config (see fastrnn.save)."""
        from fastrnn.io import save
        save(path, self)
