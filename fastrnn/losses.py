"""Losses: each returns (value, gradient of the value with respect to its
first argument), with PyTorch's definitions (torch.nn.functional) and
reduction "mean" by default ("sum"; "none" gives per-element values and
per-element gradients).  Computed in the inputs' precision, the reductions
accumulated in float64."""
from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["mse_loss", "cross_entropy", "binary_cross_entropy_with_logits"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _floats(name: str, value: ArrayLike) -> np.ndarray:
    a: np.ndarray = np.asarray(value)
    if a.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating-point array, got dtype {a.dtype}")
    return a


def mse_loss(input: ArrayLike, target: ArrayLike, reduction: str = "mean") -> tuple[Any, np.ndarray]:
    """mean((input - target)^2) -> (loss, dinput)"""
    _check_reduction(reduction)
    x = _floats("input", input)
    t = np.asarray(target, dtype=x.dtype)
    if t.shape != x.shape:
        raise ValueError(f"target must have the shape of input {x.shape}, got {t.shape}")
    diff = x - t
    if reduction == "none":
        return diff * diff, 2 * diff
    scale = 1.0 / max(diff.size, 1) if reduction == "mean" else 1.0
    loss = float(np.sum(np.square(diff, dtype=np.float64))) * scale
    return loss, (2 * scale) * diff


def cross_entropy(logits: ArrayLike, target: ArrayLike, weight: ArrayLike | None = None, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0,
                  mask: ArrayLike | None = None) -> tuple[Any, np.ndarray]:
    """Cross-entropy of softmax(logits) over the LAST axis against integer
    class targets -> (loss, dlogits).

    logits (..., C); target (...) integers in [0, C), or ignore_index (those
    elements count for nothing); weight (C,) class weights; label_smoothing as
    PyTorch's; mask (...) per-element weights (0 drops an element, e.g. a
    padded step).  "mean" divides by the summed weights of the elements
    counted (PyTorch's convention), or by their number without weights."""
    _check_reduction(reduction)
    x = _floats("logits", logits)
    if x.ndim < 1:
        raise ValueError("logits must have a class axis (the last one)")
    C = x.shape[-1]
    t = np.asarray(target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"target must be an integer array of class indices, got dtype {t.dtype}")
    if t.shape != x.shape[:-1]:
        raise ValueError(f"target must have shape {x.shape[:-1]} (logits without the class axis), got {t.shape}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    valid = t != ignore_index
    if np.any(valid & ((t < 0) | (t >= C))):
        bad = t[valid & ((t < 0) | (t >= C))].flat[0]
        raise ValueError(f"target must be in [0, {C}) or ignore_index={ignore_index}, got {bad}")
    w_class = None
    if weight is not None:
        w_class = np.asarray(weight, dtype=np.float64)
        if w_class.shape != (C,):
            raise ValueError(f"weight must have shape ({C},), got {w_class.shape}")
    safe_t = np.where(valid, t, 0)

    # log-softmax, stable
    z = x - np.max(x, axis=-1, keepdims=True)
    e = np.exp(z)
    sum_e = np.sum(e, axis=-1, keepdims=True)
    logp = z - np.log(sum_e)
    p = e / sum_e

    # per-element weight: class weight of the target, times the mask, zero if ignored
    w = valid.astype(np.float64)
    if w_class is not None:
        w = w * w_class[safe_t]
    if mask is not None:
        m = np.asarray(mask, dtype=np.float64)
        if m.shape != t.shape:
            raise ValueError(f"mask must have shape {t.shape} (one weight per element), got {m.shape}")
        w = w * m

    nll = -np.take_along_axis(logp, safe_t[..., None], axis=-1)[..., 0]
    target_dist = None
    if label_smoothing > 0:
        # PyTorch: (1 - eps) * nll + eps * mean over classes of -logp (class-weighted when weights are given)
        if w_class is None:
            smooth = -np.mean(logp, axis=-1)
        else:
            smooth = -np.sum(logp * w_class, axis=-1) / C
        per_elem = (1 - label_smoothing) * nll * w
        per_elem = per_elem + label_smoothing * smooth * (valid * (1 if mask is None else m))
    else:
        per_elem = nll * w

    # gradient of each element's (weighted) loss w.r.t. its logits
    onehot = np.zeros_like(p)
    np.put_along_axis(onehot, safe_t[..., None], 1.0, axis=-1)
    if label_smoothing > 0:
        wv = (valid * (1 if mask is None else m))[..., None]
        if w_class is None:
            target_dist = (1 - label_smoothing) * onehot * w[..., None] + label_smoothing / C * wv
        else:
            target_dist = ((1 - label_smoothing) * onehot * w[..., None]
                           + label_smoothing / C * w_class * wv)
        grad = p * target_dist.sum(axis=-1, keepdims=True) - target_dist
    else:
        grad = (p - onehot) * w[..., None]

    if reduction == "none":
        return per_elem.astype(x.dtype), grad.astype(x.dtype)
    if reduction == "mean":
        denom = float(np.sum(w)) if (w_class is not None or mask is not None) else float(np.sum(valid))
        scale = 1.0 / denom if denom > 0 else float("nan")
    else:
        scale = 1.0
    loss = float(np.sum(per_elem, dtype=np.float64)) * scale
    return loss, (grad * scale).astype(x.dtype)


def binary_cross_entropy_with_logits(logits: ArrayLike, target: ArrayLike, weight: ArrayLike | None = None,
                                     pos_weight: ArrayLike | None = None,
                                     reduction: str = "mean") -> tuple[Any, np.ndarray]:
    """-[pos_weight * t * log(sigmoid(x)) + (1 - t) * log(1 - sigmoid(x))],
    computed stably from the logits x -> (loss, dlogits)."""
    _check_reduction(reduction)
    x = _floats("logits", logits)
    t = np.asarray(target, dtype=x.dtype)
    if t.shape != x.shape:
        raise ValueError(f"target must have the shape of logits {x.shape}, got {t.shape}")
    pw = 1.0 if pos_weight is None else np.asarray(pos_weight, dtype=x.dtype)
    # log(sigmoid(x)) = -softplus(-x), log(1 - sigmoid(x)) = -softplus(x)
    softplus_neg = np.logaddexp(0, -x)
    softplus_pos = np.logaddexp(0, x)
    loss = pw * t * softplus_neg + (1 - t) * softplus_pos
    sig = np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))
    grad = sig * (pw * t + 1 - t) - pw * t
    if weight is not None:
        wt = np.asarray(weight, dtype=x.dtype)
        loss = loss * wt
        grad = grad * wt
    if reduction == "none":
        return loss.astype(x.dtype), grad.astype(x.dtype)
    scale = 1.0 / max(x.size, 1) if reduction == "mean" else 1.0
    return float(np.sum(loss, dtype=np.float64)) * scale, (grad * scale).astype(x.dtype)
