"""Saving and loading models as one .npz file: the parameters, the model's
config as JSON, and optionally an optimiser's state and extra JSON data.

    fastrnn.save("model.npz", model, optimizer=opt, extra={"vocab": chars})
    model = fastrnn.load("model.npz")
    checkpoint = fastrnn.load_checkpoint("model.npz")   # .model, .optimizer, .extra

Never pickle: arrays are read with allow_pickle=False, and a model is rebuilt
only from classes registered here (fastrnn's own, and the user's through
fastrnn.register) - a file names a class, it never makes Python import or run
anything.  Every array's header is checked against the shape the model
expects before its data is read.  A truncated, corrupted or tampered file
raises ValueError.
"""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastrnn._module import Module

__all__ = ["save", "load", "load_checkpoint", "register", "Checkpoint"]

FORMAT = "fastrnn"
FORMAT_VERSION = 1
_REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    """Make a Module subclass loadable by name (usable as a decorator).  The
    class needs get_config() (its constructor's arguments as JSON-friendly
    values) or a classmethod from_config(config)."""
    if not (isinstance(cls, type) and issubclass(cls, Module)):
        raise TypeError(f"register takes a subclass of fastrnn.nn.Module, got {cls!r}")
    _REGISTRY[cls.__name__] = cls
    return cls


def _builtins() -> None:
    if _REGISTRY.get("LSTM") is not None:
        return
    from fastrnn.cells import GRUCell, LSTMCell, RNNCell
    from fastrnn.layers import GRU, LSTM, RNN
    from fastrnn.nn import Dropout, Embedding, Linear, Sequential
    for cls in (RNN, LSTM, GRU, RNNCell, LSTMCell, GRUCell, Linear, Embedding, Dropout, Sequential):
        _REGISTRY[cls.__name__] = cls


def module_config(module: Module) -> dict[str, Any]:
    """{"class": name, "config": its get_config()}"""
    return {"class": type(module).__name__, "config": module.get_config()}


def build_module(spec: Any) -> Module:
    """The inverse of module_config, for registered classes only."""
    _builtins()
    if not isinstance(spec, dict) or not isinstance(spec.get("class"), str) \
            or not isinstance(spec.get("config"), dict):
        raise ValueError(f"a module is described by {{'class': name, 'config': {{...}}}}, got {spec!r:.200}")
    cls = _REGISTRY.get(spec["class"])
    if cls is None:
        raise ValueError(f"unknown module class {spec['class']!r}: register it with fastrnn.register, "
                         "or pass the model to load(path, model=...)")
    try:
        if hasattr(cls, "from_config"):
            return cls.from_config(spec["config"])  # type: ignore[no-any-return]
        return cls(**spec["config"])  # type: ignore[no-any-return]
    except MemoryError:
        raise ValueError(f"the config of {spec['class']} asks for more memory than there is: "
                         f"{spec['config']!r:.200}") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"invalid config for {spec['class']}: {exc}") from None


def save(path: str | os.PathLike[str], model: Module, optimizer: Any = None,
         extra: dict[str, Any] | None = None) -> None:
    """Write model (parameters and config), optionally optimizer (its class,
    config and state) and extra (any JSON-serialisable dict) to path."""
    if not isinstance(model, Module):
        raise TypeError(f"model must be a fastrnn module, got {type(model).__name__}")
    try:
        spec = module_config(model)
    except NotImplementedError:
        spec = {"class": type(model).__name__, "config": None}
    params = model.params
    header = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "fastrnn_version": _version(),
        "model": spec,
        "params": {name: list(value.shape) for name, value in params.items()},
        "optimizer": None,
        "extra": extra,
    }
    arrays = {f"param/{name}": value for name, value in params.items()}
    if optimizer is not None:
        state = optimizer.state_dict()
        header["optimizer"] = {"class": type(optimizer).__name__, "config": optimizer.get_config(),
                               "params": list(optimizer.params), "state": sorted(state)}
        arrays.update({f"optim/{key}": value for key, value in state.items()})
    try:
        text = json.dumps(header)
    except TypeError as exc:
        raise TypeError(f"save: the config or extra data is not JSON-serialisable: {exc}") from None
    arrays["header"] = np.array(text)
    with open(os.fspath(path), "wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]


@dataclass
class Checkpoint:
    model: Module
    optimizer: Any = None
    extra: dict[str, Any] | None = field(default=None)


def load(path: str | os.PathLike[str], model: Module | None = None) -> Module:
    """The model saved at path: rebuilt from its config, or `model` (of the
    same structure) with the saved parameters loaded into it."""
    return load_checkpoint(path, model).model


def load_checkpoint(path: str | os.PathLike[str], model: Module | None = None) -> Checkpoint:
    """Model, optimizer (rebuilt over the model's parameters, its state
    restored; None if none was saved) and extra data saved at path."""
    name = os.fspath(path)
    # whatever a damaged file makes the zip or .npy readers raise (BadZipFile,
    # EOFError, KeyError, NotImplementedError for an unknown zip version,
    # tokenize's TokenError from a mangled .npy header, ...) becomes a
    # ValueError; found by fuzzing (tests/test_reliability.py)
    try:
        archive = zipfile.ZipFile(name)
    except (FileNotFoundError, IsADirectoryError, PermissionError, MemoryError):
        raise
    except Exception as exc:
        raise ValueError(f"{name}: not a fastrnn model file (not a readable .npz archive: {exc})") from None
    with archive:
        try:
            return _read(name, archive, model)
        except MemoryError:
            raise
        except ValueError as exc:
            if str(exc).startswith(name):
                raise
            raise ValueError(f"{name}: {exc}") from None
        except Exception as exc:
            raise ValueError(f"{name}: damaged fastrnn model file ({type(exc).__name__}: {exc})") from None


def _version() -> str:
    from fastrnn import __version__
    return __version__


def _read_array(archive: zipfile.ZipFile, key: str, shape: tuple[int, ...] | None, kinds: str) -> np.ndarray:
    """One array of the archive, its header checked (shape, dtype kind, no
    object dtype) before its data is read."""
    member = key + ".npy"
    try:
        info = archive.getinfo(member)
    except KeyError:
        raise ValueError(f"array {key!r} is missing") from None
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            got_shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            got_shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"array {key!r} has an unknown .npy version {version}")
        if dtype.hasobject or dtype.kind not in kinds:
            raise ValueError(f"array {key!r} has dtype {dtype}, expected kind {kinds!r}")
        if shape is not None and tuple(got_shape) != tuple(shape):
            raise ValueError(f"array {key!r} has shape {tuple(got_shape)}, expected {tuple(shape)}")
        count = int(np.prod(got_shape, dtype=np.int64))
        if count * dtype.itemsize > info.file_size:
            raise ValueError(f"array {key!r} is truncated")
        data = f.read(count * dtype.itemsize)
        if len(data) != count * dtype.itemsize:
            raise ValueError(f"array {key!r} is truncated")
    array = np.frombuffer(data, dtype=dtype)
    return array.reshape(got_shape, order="F" if fortran else "C")


def _read(name: str, archive: zipfile.ZipFile, model: Module | None) -> Checkpoint:
    header_array = _read_array(archive, "header", (), "U")
    try:
        header = json.loads(str(header_array[()]))
    except json.JSONDecodeError as exc:
        raise ValueError(f"its header is not valid JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError("not a fastrnn model file (no fastrnn header)")
    if header.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"format version {header.get('format_version')!r}; this fastrnn reads {FORMAT_VERSION}")
    declared = header.get("params")
    if not isinstance(declared, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and all(isinstance(d, int) and d >= 0 for d in v)
            for k, v in declared.items()):
        raise ValueError("its header's parameter list is malformed")

    if model is None:
        spec = header.get("model")
        if isinstance(spec, dict) and spec.get("config") is None:
            raise ValueError(f"it holds a {spec.get('class')!r} saved without a config: pass "
                             "load(path, model=...) to load its parameters into a model")
        model = build_module(spec)
    elif not isinstance(model, Module):
        raise TypeError(f"model must be a fastrnn module, got {type(model).__name__}")
    params = model.params
    if set(declared) != set(params):
        missing = sorted(set(params) - set(declared))
        unexpected = sorted(set(declared) - set(params))
        raise ValueError(f"its parameters do not match the model's: missing {missing}, unexpected {unexpected}")
    values = {}
    for pname, target in params.items():
        if tuple(declared[pname]) != target.shape:
            raise ValueError(f"parameter {pname!r} is declared {tuple(declared[pname])}, the model has {target.shape}")
        values[pname] = _read_array(archive, f"param/{pname}", target.shape, "f")
    for pname, value in values.items():
        if not np.all(np.isfinite(value)):
            pass  # non-finite weights are loaded as they are (a model may have diverged)
        np.copyto(params[pname], value, casting="same_kind")

    optimizer = None
    spec = header.get("optimizer")
    if spec is not None:
        from fastrnn.optim import OPTIMIZERS
        if not isinstance(spec, dict) or spec.get("class") not in OPTIMIZERS \
                or not isinstance(spec.get("config"), dict) or not isinstance(spec.get("state"), list) \
                or spec.get("params") != list(params):
            raise ValueError("its optimizer entry is malformed")
        try:
            optimizer = OPTIMIZERS[spec["class"]](params, **spec["config"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"invalid optimizer config: {exc}") from None
        state = {}
        for key in spec["state"]:
            if not isinstance(key, str):
                raise ValueError("its optimizer entry is malformed")
            if key == "steps":
                state[key] = _read_array(archive, "optim/steps", (), "iu")
            else:
                pname = key.rpartition("/")[0]
                if pname not in params:
                    raise ValueError(f"optimizer state {key!r} names no parameter")
                state[key] = _read_array(archive, f"optim/{key}", params[pname].shape, "f")
        optimizer.load_state_dict(state)
    extra = header.get("extra")
    if extra is not None and not isinstance(extra, dict):
        raise ValueError("its extra data is malformed")
    return Checkpoint(model, optimizer, extra)
