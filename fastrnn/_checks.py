"""Argument checks shared by the public classes.  Every message names the
argument, what was expected and what was received."""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_size(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_dtype(dtype: Any) -> np.dtype[Any]:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt  # type: ignore[no-any-return]


def check_bool(name: str, value: object) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def check_probability(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in [0, 1], got {type(value).__name__} {value!r}")
    p = float(value)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return p


def make_rng(seed: object) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or (isinstance(seed, numbers.Integral) and not isinstance(seed, bool)):
        return np.random.default_rng(None if seed is None else int(seed))
    raise TypeError(f"seed must be None, an int or a numpy.random.Generator, got {type(seed).__name__}")


def as_float_array(name: str, value: object, dtype: np.dtype[Any]) -> np.ndarray:
    """value as an ndarray of dtype (no copy when it already is one).  Only
    real floating inputs are accepted: integers, booleans, complex numbers and
    objects are refused rather than silently converted."""
    try:
        arr = np.asarray(value)
    except Exception as exc:  # e.g. a tensor that requires grad
        raise TypeError(f"{name} must be a float array, could not convert {type(value).__name__}: {exc}") from None
    if arr.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating-point array (float32 or float64), got dtype {arr.dtype}")
    return arr.astype(dtype, copy=False)


def check_shape(name: str, arr: np.ndarray, expected: tuple[int, ...], what: str = "") -> None:
    if arr.shape != tuple(expected):
        extra = f" ({what})" if what else ""
        raise ValueError(f"{name} must have shape {tuple(expected)}{extra}, got {arr.shape}")


def check_lengths(lengths: object, T: int, B: int) -> np.ndarray:
    """lengths (B,) of integers with 1 <= lengths[b] <= T."""
    try:
        arr = np.asarray(lengths)
    except Exception as exc:
        raise TypeError(f"lengths must be an integer array, could not convert {type(lengths).__name__}: {exc}") from None
    if arr.dtype.kind not in "iu":
        raise TypeError(f"lengths must be an integer array, got dtype {arr.dtype}")
    if arr.shape != (B,):
        raise ValueError(f"lengths must have shape ({B},) (one length per sequence of the batch), got {arr.shape}")
    if B and (arr.min() < 1 or arr.max() > T):
        bad = arr[(arr < 1) | (arr > T)][0]
        raise ValueError(f"lengths must be between 1 and the sequence length T={T}, got {int(bad)}")
    return arr.astype(np.intp)


def kept_zeros(kept: np.ndarray, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
    """`kept` if it has this shape, else new read-only zeros of it: the zero
    state a layer or a cell keeps for the calls that give none (a short
    sequence, or a generation loop's step, notices the microseconds of new
    ones)."""
    if kept.shape == shape:
        return kept
    zeros = np.zeros(shape, dtype=dtype)
    zeros.flags.writeable = False
    return zeros
