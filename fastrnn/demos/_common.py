"""What the demos share: a progress bar (tqdm when installed, plain lines
otherwise), plots (matplotlib when installed), the data files, arguments."""
from __future__ import annotations

import os
import sys
import time
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import fastrnn

DATA = "fastrnn.demos.data"


def data_path(name: str) -> Traversable:
    """A file shipped in fastrnn/demos/data (see SOURCES.md there)."""
    return resources.files(DATA).joinpath(name)


def setup(seed: int, threads: int | None, out: str | None) -> str:
    if threads is not None:
        fastrnn.set_num_threads(threads)
    out = out or "fastrnn-demo-output"
    os.makedirs(out, exist_ok=True)
    return out


class Progress:
    """tqdm if it is installed, else a line every few seconds."""

    def __init__(self, total: int, desc: str, unit: str = "step") -> None:
        self.start = time.perf_counter()
        try:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stdout)
        except ImportError:
            self.bar = None
            self.desc, self.total, self.n, self.last, self.postfix = desc, total, 0, 0.0, ""

    def update(self, n: int = 1, **postfix: Any) -> None:
        if self.bar is not None:
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(n)
            return
        self.n += n
        now = time.perf_counter() - self.start
        if now - self.last >= 5 or self.n >= self.total:
            self.last = now
            fields = " ".join(f"{k}={v}" for k, v in postfix.items())
            print(f"{self.desc}: {self.n}/{self.total} [{now:.0f} s] {fields}", flush=True)

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def pyplot() -> Any:
    """matplotlib.pyplot with a file-only backend, or None (with a note)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        print("(matplotlib is not installed: no plot; pip install 'fastrnn[demo]')")
        return None
