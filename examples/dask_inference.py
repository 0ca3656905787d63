"""Inference over a dataset of sequences bigger than memory, with Dask.

The sequences live on disk as a NumPy .npy file (T, B, I); each task of a
cluster of worker processes maps its chunk of the batch from the file, runs a
trained GRU on it (fastrnn.dask.apply) and writes its outputs into another
.npy file on disk: no process ever holds more than a few chunks, and only file
names travel through the task graph.  Size it with --sequences (the
default writes 0.8 GB of input and 0.8 GB of output); check a few sequences
against a plain forward at the end.

    python examples/dask_inference.py [--sequences 100000] [--workers 2] [--chunk 5000] [--dir DIR]
"""
import argparse
import os
import tempfile
import time

import numpy as np

import fastrnn
import fastrnn.dask


def write_dataset(path: str, T: int, B: int, I: int, chunk: int) -> np.memmap:
    """Random sequences written chunk by chunk (never whole in memory)."""
    data = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(T, B, I))
    rng = np.random.default_rng(0)
    for start in range(0, B, chunk):
        stop = min(B, start + chunk)
        data[:, start:stop] = rng.standard_normal((T, stop - start, I), dtype=np.float32)
    data.flush()
    return np.load(path, mmap_mode="r")


def read_chunk(path: str, start: int, stop: int) -> np.ndarray:
    """Sequences [start, stop) of the .npy file at path (in a worker)."""
    return np.ascontiguousarray(np.load(path, mmap_mode="r")[:, start:stop])


class NpyTarget:
    """A da.store target that workers write into by file name: it pickles
    as its path, not as the array (a memmap would travel as a copy)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __setitem__(self, key: tuple, value: np.ndarray) -> None:
        out = np.load(self.path, mmap_mode="r+")
        out[key] = value
        out.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequences", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=5_000, help="sequences per task")
    parser.add_argument("--dir", default=None, help="where the memmaps go (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fastrnn-dask-") as scratch:
        run(args, args.dir or scratch)


def run(args: argparse.Namespace, folder: str) -> None:
    import dask
    import dask.array as da
    from distributed import Client, LocalCluster

    T, B, I, H = args.steps, args.sequences, 16, 32
    x_path, y_path = os.path.join(folder, "x.npy"), os.path.join(folder, "y.npy")
    x = write_dataset(x_path, T, B, I, args.chunk)
    print(f"input: {x.shape} float32, {x.nbytes / 2**30:.2f} GiB on disk in {folder}")
    layer = fastrnn.GRU(I, H, num_layers=2, seed=0).eval()   # stands for a trained model

    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster):
        chunks = [da.from_delayed(dask.delayed(read_chunk)(x_path, start, min(B, start + args.chunk)),
                                  (T, min(B, start + args.chunk) - start, I), dtype=np.float32)
                  for start in range(0, B, args.chunk)]
        y, h_n = fastrnn.dask.apply(layer, da.concatenate(chunks, axis=1))
        out = np.lib.format.open_memmap(y_path, mode="w+", dtype=np.float32, shape=y.shape)
        del out   # created (sparse) here, filled by the workers
        start = time.perf_counter()
        da.store(y, NpyTarget(y_path), lock=False)   # each chunk written by the worker that made it
        took = time.perf_counter() - start
    out = np.load(y_path, mmap_mode="r")
    print(f"output: {y.shape}, {out.nbytes / 2**30:.2f} GiB, in {took:.1f} s with {args.workers} workers "
          f"({B / took:,.0f} sequences/s)")

    picks = np.random.default_rng(1).choice(B, size=min(B, 8), replace=False)
    want, _ = layer(np.ascontiguousarray(x[:, picks]))
    same = np.array_equal(np.asarray(out[:, picks]), want)
    print(f"{len(picks)} sequences checked against a plain forward: {'identical' if same else 'DIFFERENT'}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
