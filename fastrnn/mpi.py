"""Data-parallel training with MPI (mpi4py): every rank holds a replica of the
model, computes gradients on its shard of the batch, and the gradients are
averaged across ranks in one Allreduce of one buffer; then every rank clips
and steps identically, so the replicas stay equal.

    from fastrnn import mpi
    comm = mpi.world()                                  # None when not under mpirun
    mpi.broadcast_parameters(model, comm)               # every replica starts from rank 0's
    rows = mpi.shard(len(x), comm)                      # this rank's rows of the batch
    ... forward and backward on x[rows] ...
    mpi.allreduce_gradients(model, comm, weight=n)      # n: what this rank's loss averaged over
    fastrnn.clip_grad_norm(model.grads, 1.0); opt.step(model.grads)

Run with `mpirun -n 2 python train.py`.  With weight = the number of
elements each rank's mean loss covers, the averaged gradient is exactly the
gradient of the mean loss over the whole batch (to rounding), whatever the
shard sizes.  Needs mpi4py and an MPI library (`pip install mpi4py mpich`).
"""
from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from fastrnn._module import Module

__all__ = ["world", "under_mpirun", "shard", "broadcast_parameters", "allreduce_gradients", "local_threads"]

# set by the launchers of MPICH (hydra), Open MPI and PMIx-based ones
_LAUNCHER_VARIABLES = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")


def under_mpirun() -> bool:
    """Whether this process was started by an MPI launcher (without importing MPI)."""
    return any(name in os.environ for name in _LAUNCHER_VARIABLES)


def world() -> Any:
    """MPI.COMM_WORLD when this process runs under an MPI launcher with more
    than one rank, else None (a single process: nothing to do)."""
    if not under_mpirun():
        return None
    from mpi4py import MPI
    return MPI.COMM_WORLD if MPI.COMM_WORLD.Get_size() > 1 else None


def shard(n: int, comm: Any) -> slice:
    """This rank's contiguous part of n rows (the first n % size ranks get one more)."""
    if comm is None:
        return slice(0, n)
    rank, size = comm.Get_rank(), comm.Get_size()
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def local_threads(comm: Any) -> int:
    """Kernel threads for this rank: the usable cores shared among the ranks
    on this machine, so that they do not oversubscribe it."""
    import fastrnn
    if comm is None:
        return fastrnn.get_num_threads()
    from mpi4py import MPI
    on_node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        # a launcher that binds each rank to its cores has already shared them out
        bound = cores < (os.cpu_count() or cores)
        return max(1, cores if bound else cores // on_node.Get_size())
    finally:
        on_node.Free()


def _flat(arrays: list[np.ndarray], extra: int = 0) -> np.ndarray:
    dtype = np.result_type(*arrays) if arrays else np.dtype(np.float64)
    return np.empty(sum(a.size for a in arrays) + extra, dtype=dtype)


def broadcast_parameters(model: Module, comm: Any, root: int = 0) -> None:
    """Copy root's parameters into every rank's model (one Bcast)."""
    if comm is None:
        return
    params = list(model.params.values())
    buf = _flat(params)
    if comm.Get_rank() == root:
        np.concatenate([p.ravel() for p in params], out=buf)
    comm.Bcast(buf, root=root)
    offset = 0
    for p in params:
        p[...] = buf[offset:offset + p.size].reshape(p.shape)
        offset += p.size


def allreduce_gradients(model: Module, comm: Any, weight: Optional[float] = None) -> float:
    """Replace every rank's gradients by their average over the ranks, each
    rank's weighted by `weight` (default 1: equal shards), in one Allreduce
    of one buffer (the gradients and the weight).  Returns the total weight."""
    w = 1.0 if weight is None else float(weight)
    if comm is None:
        return w
    from mpi4py import MPI
    grads = list(model.grads.values())
    buf = _flat(grads, extra=1)
    offset = 0
    for g in grads:
        np.multiply(g.ravel(), w, out=buf[offset:offset + g.size], casting="unsafe")
        offset += g.size
    buf[-1] = w
    comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
    total = float(buf[-1])
    offset = 0
    for g in grads:
        np.divide(buf[offset:offset + g.size].reshape(g.shape), total, out=g, casting="unsafe")
        offset += g.size
    return total
