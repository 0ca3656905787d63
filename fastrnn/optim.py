"""Optimisers over dicts of parameters and gradients, with PyTorch's update
formulas (torch.optim.SGD, Adam, AdamW):

    opt = Adam(model.params, lr=1e-3)
    ...
    model.backward(dloss)
    opt.step(model.grads)     # updates the parameter arrays in place
    model.zero_grad()

The state (step count, moment estimates) goes in and out with state_dict()
and load_state_dict(), and is saved with the model by fastrnn.save."""
from __future__ import annotations

import math
import numbers
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["Optimizer", "SGD", "Adam", "AdamW"]


def _number(name: str, value: object, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    number = float(value)
    if not number >= minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return number


class Optimizer:
    """Base class: params is a dict name -> ndarray (the live arrays)."""

    def __init__(self, params: Mapping[str, np.ndarray], **config: Any) -> None:
        if not isinstance(params, Mapping) or not params:
            raise TypeError("params must be a non-empty dict of name -> ndarray (a module's .params)")
        for name, p in params.items():
            if not isinstance(p, np.ndarray) or p.dtype.kind != "f":
                raise TypeError(f"params[{name!r}] must be a floating-point ndarray, got {type(p).__name__}")
        self.params = dict(params)
        self.config = config
        self.steps = 0
        self.state: dict[str, dict[str, np.ndarray]] = {name: {} for name in self.params}

    def _grads(self, grads: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [k for k in self.params if k not in grads]
        if missing:
            raise ValueError(f"step: grads lack {missing}")
        out: dict[str, np.ndarray] = {}
        for name, p in self.params.items():
            g = np.asarray(grads[name])
            if g.shape != p.shape:
                raise ValueError(f"step: grads[{name!r}] must have shape {p.shape}, got {g.shape}")
            out[name] = g
        return out

    def step(self, grads: Mapping[str, np.ndarray]) -> None:
        grads = self._grads(grads)
        self.steps += 1
        for name, p in self.params.items():
            self._update(name, p, grads[name].astype(p.dtype, copy=False), self.state[name])

    def _update(self, name: str, p: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return dict(self.config)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Arrays only: "steps", and "<param>/<buffer>" for every buffer."""
        out = {"steps": np.asarray(self.steps, dtype=np.int64)}
        for name, buffers in self.state.items():
            for key, value in buffers.items():
                out[f"{name}/{key}"] = value.copy()
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """The inverse of state_dict; checked before anything changes."""
        if "steps" not in state:
            raise ValueError("optimizer state lacks 'steps'")
        steps = np.asarray(state["steps"])
        if steps.shape != () or steps.dtype.kind not in "iu" or int(steps) < 0:
            raise ValueError(f"optimizer state 'steps' must be a non-negative integer, got {steps!r}")
        new: dict[str, dict[str, np.ndarray]] = {name: {} for name in self.params}
        for key, value in state.items():
            if key == "steps":
                continue
            name, _, buffer = key.rpartition("/")
            if name not in self.params or buffer not in self._buffers:
                raise ValueError(f"optimizer state has an unknown entry {key!r}")
            value = np.asarray(value)
            if value.shape != self.params[name].shape or value.dtype.kind != "f":
                raise ValueError(f"optimizer state {key!r} must be a float array of shape "
                                 f"{self.params[name].shape}, got {value.dtype} {value.shape}")
            new[name][buffer] = value.astype(self.params[name].dtype, copy=True)
        self.steps = int(steps)
        self.state = new

    _buffers: tuple[str, ...] = ()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.config.items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent with PyTorch's momentum, dampening,
    Nesterov momentum and L2 weight decay (added to the gradient)."""
    _buffers = ("momentum_buffer",)

    def __init__(self, params: Mapping[str, np.ndarray], lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, maximize: bool = False) -> None:
        lr, momentum = _number("lr", lr), _number("momentum", momentum)
        dampening, weight_decay = _number("dampening", dampening), _number("weight_decay", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening = 0")
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                         nesterov=bool(nesterov), maximize=bool(maximize))

    def _update(self, name: str, p: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray]) -> None:
        c = self.config
        if c["maximize"]:
            g = -g
        if c["weight_decay"]:
            g = g + c["weight_decay"] * p
        if c["momentum"]:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = np.array(g, dtype=p.dtype, copy=True)
            else:
                buf *= c["momentum"]
                buf += (1 - c["dampening"]) * g
            g = g + c["momentum"] * buf if c["nesterov"] else buf
        p -= p.dtype.type(c["lr"]) * g


class Adam(Optimizer):
    """Adam (Kingma & Ba) as torch.optim.Adam: L2 weight decay added to the
    gradient; optional AMSGrad."""
    _buffers = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _decoupled = False

    def __init__(self, params: Mapping[str, np.ndarray], lr: float = 1e-3, betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, maximize: bool = False) -> None:
        lr, eps, weight_decay = _number("lr", lr), _number("eps", eps), _number("weight_decay", weight_decay)
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2 and all(0 <= b < 1 for b in betas)):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        super().__init__(params, lr=lr, betas=[float(betas[0]), float(betas[1])], eps=eps,
                         weight_decay=weight_decay, amsgrad=bool(amsgrad), maximize=bool(maximize))

    def _update(self, name: str, p: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray]) -> None:
        c = self.config
        beta1, beta2 = c["betas"]
        if c["maximize"]:
            g = -g
        if c["weight_decay"]:
            if self._decoupled:
                p *= p.dtype.type(1 - c["lr"] * c["weight_decay"])
            else:
                g = g + c["weight_decay"] * p
        if "exp_avg" not in state:
            state["exp_avg"] = np.zeros_like(p)
            state["exp_avg_sq"] = np.zeros_like(p)
            if c["amsgrad"]:
                state["max_exp_avg_sq"] = np.zeros_like(p)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * g * g
        t = self.steps
        bias_correction1 = 1 - beta1 ** t
        bias_correction2 = 1 - beta2 ** t
        if c["amsgrad"]:
            np.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
            v = state["max_exp_avg_sq"]
        denom = np.sqrt(v) / p.dtype.type(math.sqrt(bias_correction2)) + p.dtype.type(c["eps"])
        p -= p.dtype.type(c["lr"] / bias_correction1) * (m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as
    torch.optim.AdamW: p *= 1 - lr * weight_decay before the Adam step.
    Default weight_decay 0.01, as PyTorch's."""
    _decoupled = True

    def __init__(self, params: Mapping[str, np.ndarray], lr: float = 1e-3, betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, amsgrad: bool = False, maximize: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize)


OPTIMIZERS = {cls.__name__: cls for cls in (SGD, Adam, AdamW)}
