"""Gradient clipping, with PyTorch's semantics (torch.nn.utils.clip_grad_norm_
and clip_grad_value_), on ndarrays, in place."""
from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, Mapping, Union

import numpy as np

__all__ = ["clip_grad_norm", "clip_grad_value"]

Grads = Union[Mapping[str, np.ndarray], np.ndarray, Iterable[Any]]


def _arrays(grads: Grads) -> list[np.ndarray]:
    """The gradient arrays in grads: a dict of arrays (a layer's .grads), an
    array, or an iterable of arrays and dicts."""
    if isinstance(grads, np.ndarray):
        items: list[Any] = [grads]
    elif isinstance(grads, Mapping):
        items = list(grads.values())
    else:
        try:
            items = []
            for item in grads:
                items.extend(item.values() if isinstance(item, Mapping) else [item])
        except TypeError:
            raise TypeError(f"grads must be a dict of arrays, an array, or an iterable of arrays or dicts, "
                            f"got {type(grads).__name__}") from None
    for a in items:
        if not isinstance(a, np.ndarray) or a.dtype.kind != "f":
            what = f"array of dtype {a.dtype}" if isinstance(a, np.ndarray) else type(a).__name__
            raise TypeError(f"grads: every gradient must be a floating-point ndarray (clipped in place), got {what}")
    return items


def _check_number(name: str, value: object, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not value >= minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def clip_grad_norm(grads: Grads, max_norm: float, norm_type: float = 2.0,
                   error_if_nonfinite: bool = False) -> float:
    """Scale all gradients together so that their joint norm is at most
    max_norm.  The norm is that of the vector of every element of every
    array (norm_type p > 0, or inf for the largest absolute value); the scale
    is max_norm / (norm + 1e-6), capped at 1.  Returns the norm before
    clipping.  A non-finite norm raises RuntimeError if error_if_nonfinite,
    otherwise it propagates into the gradients as PyTorch's does."""
    arrays = _arrays(grads)
    max_norm = _check_number("max_norm", max_norm)
    if isinstance(norm_type, str) and norm_type.lower() == "inf":
        norm_type = math.inf
    norm_type = _check_number("norm_type", norm_type, minimum=0.0)
    if norm_type == 0.0:
        raise ValueError("norm_type must be > 0 (or inf), got 0")
    if not arrays:
        return 0.0
    # norms accumulate in float64 whatever the gradients' precision
    if math.isinf(norm_type):
        norms = [float(np.max(np.abs(a))) if a.size else 0.0 for a in arrays]
        total = max(norms)
        if any(math.isnan(n) for n in norms):
            total = math.nan
    else:
        # sums of powers without BLAS: np.linalg.norm's dot would wake NumPy's
        # BLAS threads, which then spin on the cores the next kernel call needs
        if norm_type == 2.0:
            sums = [float(np.sum(np.square(a, dtype=np.float64))) for a in arrays]
            total = math.sqrt(sum(sums))
        else:
            sums = [float(np.sum(np.abs(a).astype(np.float64) ** norm_type)) for a in arrays]
            total = sum(sums) ** (1.0 / norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"The total norm of order {norm_type} of the gradients is non-finite ({total}), "
                           "so it cannot be clipped; pass error_if_nonfinite=False to clip anyway")
    scale = max_norm / (total + 1e-6)
    scale = min(scale, 1.0) if not math.isnan(scale) else scale
    if scale != 1.0:
        with np.errstate(invalid="ignore"):  # inf * 0 -> nan, intended (as PyTorch)
            for a in arrays:
                a *= a.dtype.type(scale)
    return total


def clip_grad_value(grads: Grads, clip_value: float) -> None:
    """Clip every gradient element into [-clip_value, clip_value], in place."""
    arrays = _arrays(grads)
    clip_value = _check_number("clip_value", clip_value)
    for a in arrays:
        np.clip(a, -clip_value, clip_value, out=a)
