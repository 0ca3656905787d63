"""Batch inference on Dask: a recurrent layer over a dask array of sequences
chunked along the batch axis, each chunk a task on a worker.

    import dask.array as da, fastrnn, fastrnn.dask
    x = da.from_zarr("sequences.zarr")                  # (T, B, I), chunks (T, b, I)
    y, h_n = fastrnn.dask.apply(layer, x)               # dask arrays, nothing computed yet
    y.to_zarr("outputs.zarr")                           # or dask.compute(y, h_n)

Sequences are independent, so each chunk of the batch is one forward of the
layer, in eval mode, on the worker that holds it; the results are exactly
those of one forward over the whole batch.  The layer travels to the workers
as its config and parameters (rebuilt there, never pickled as an object), once
per worker.  Needs dask (`pip install "dask[array]"`; distributed for a cluster).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from fastrnn._module import Module
from fastrnn.io import build_module, module_config

__all__ = ["apply"]


def _worker_threads(threads: Optional[int]) -> int:
    """Kernel threads for one task: `threads` if given; else the process's
    default (OMP_NUM_THREADS, which dask's nanny sets to 1 in the worker
    processes it starts) shared among the tasks a worker runs at once."""
    import fastrnn
    if threads is not None:
        return threads
    try:
        from distributed import get_worker
        slots = int(get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError):   # not on a distributed worker
        slots = 1
    return max(1, fastrnn.get_num_threads() // max(1, slots))


def _run_chunk(spec: dict[str, Any], state: dict[str, np.ndarray], x: np.ndarray,
               lengths: Optional[np.ndarray], threads: Optional[int]) -> tuple[np.ndarray, ...]:
    """One chunk of the batch on a worker: (y, h_n[, c_n])."""
    import fastrnn
    layer: Any = build_module(spec)
    layer.load_state_dict(state)
    layer.eval()
    fastrnn.set_num_threads(_worker_threads(threads))
    y, state_n = layer(x, None, lengths)
    return (y,) + (state_n if isinstance(state_n, tuple) else (state_n,))


def apply(layer: Module, x: Any, lengths: Any = None, *, threads: Optional[int] = None) -> tuple[Any, ...]:
    """Run `layer` (an RNN, LSTM or GRU) over the dask array x: (T, B, I), or
    (B, T, I) for a batch_first layer, chunked along the batch axis (other
    axes are brought to one chunk).  lengths: a dask or NumPy array (B,) of
    sequence lengths, or None.  threads: kernel threads per task (default:
    see _worker_threads).

    Returns dask arrays (y, h_n), or (y, h_n, c_n) for an LSTM, chunked like
    x along the batch axis.  Compute them together (dask.compute(y, h_n)) so
    that each chunk runs once."""
    import dask
    import dask.array as da

    config: dict[str, Any] = getattr(layer, "get_config", dict)()
    if "hidden_size" not in config or "num_layers" not in config:
        raise TypeError(f"apply takes a fastrnn RNN, LSTM or GRU layer, got {type(layer).__name__}")
    if not isinstance(x, da.Array):
        x = da.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"x must be a 3-D dask array, got {x.ndim}-D with shape {x.shape}")
    batch_axis = 0 if config["batch_first"] else 1
    chunks = {a: -1 for a in range(3) if a != batch_axis}
    x = x.rechunk(chunks)
    if lengths is not None:
        lengths = da.asarray(lengths)
        if lengths.shape != (x.shape[batch_axis],):
            raise ValueError(f"lengths must have shape ({x.shape[batch_axis]},), got {lengths.shape}")
        lengths = lengths.rechunk((x.chunks[batch_axis],))

    spec = dask.delayed(module_config(layer), pure=True)
    state = dask.delayed(layer.state_dict(), pure=True)
    T, H = x.shape[1 - batch_axis], config["hidden_size"]
    D = 2 if config["bidirectional"] else 1
    S = config["num_layers"] * D
    dtype = np.dtype(config["dtype"])
    n_states = 3 if type(layer).__name__ == "LSTM" else 2
    x_blocks = x.to_delayed().ravel()
    len_blocks = lengths.to_delayed().ravel() if lengths is not None else [None] * len(x_blocks)
    outputs: list[list[Any]] = [[] for _ in range(n_states)]
    for xb, lb, b in zip(x_blocks, len_blocks, x.chunks[batch_axis]):
        result = dask.delayed(_run_chunk, pure=True, nout=n_states)(spec, state, xb, lb, threads)
        y_shape = (b, T, D * H) if batch_axis == 0 else (T, b, D * H)
        outputs[0].append(da.from_delayed(result[0], y_shape, dtype=dtype))
        for k in range(1, n_states):
            outputs[k].append(da.from_delayed(result[k], (S, b, H), dtype=dtype))
    return (da.concatenate(outputs[0], axis=batch_axis),) + tuple(
        da.concatenate(parts, axis=1) for parts in outputs[1:])
