"""charlm: a character-level LSTM language model on four Shakespeare plays.

Embedding -> LSTM -> Linear, trained with Adam, gradient clipping and
truncated backpropagation through time: the text is cut into B parallel
streams read in chunks of T characters, the final state of each chunk is the
initial state of the next (its gradient is cut there: the state is a plain
array).  Reports the validation cross-entropy (nats per character; guessing
uniformly among the 73 characters costs log(73) = 4.29), saves the model, and
generates text from a prompt, one character at a time (one-to-many).

    fastrnn demo charlm [--minutes 5] [--quick]
    mpirun -n 2 fastrnn demo charlm [--quick]          (data-parallel: fastrnn.mpi)
    fastrnn sample fastrnn-demo-output/charlm.npz --prompt "HAMLET." --length 400
"""
from __future__ import annotations

import contextlib
import gzip
import math
import os
import time
from typing import Any

import numpy as np

import fastrnn
from fastrnn import mpi, nn, optim
from fastrnn.demos._common import Progress, data_path, setup


def load_text() -> str:
    with data_path("shakespeare.txt.gz").open("rb") as f:
        return gzip.decompress(f.read()).decode("ascii")


def streams(ids: np.ndarray, batch: int) -> np.ndarray:
    """(batch, length): the id sequence cut into batch consecutive streams."""
    length = len(ids) // batch
    return ids[:batch * length].reshape(batch, length)


def make_model(vocab: int, embed: int, hidden: int, layers: int, seed: int) -> nn.Sequential:
    return nn.Sequential(nn.Embedding(vocab, embed, seed=seed),
                         fastrnn.LSTM(embed, hidden, num_layers=layers, batch_first=True,
                                      dropout=0.2 if layers > 1 else 0.0, seed=seed + 1),
                         nn.Dropout(0.2, seed=seed + 2),
                         nn.Linear(hidden, vocab, seed=seed + 3))


def run_chunk(model: nn.Sequential, x: np.ndarray, hx: Any) -> tuple[np.ndarray, Any]:
    """logits (B, T, V) and the final state of one chunk."""
    layers: list[Any] = model.layers   # Embedding, LSTM, Dropout, Linear
    embed, lstm, drop, head = layers
    out, state = lstm(embed(x), hx)
    return head(drop(out)), state


def evaluate(model: nn.Sequential, data: np.ndarray, chunk: int) -> float:
    """Mean cross-entropy (nats/char) over a (B, L) array of streams, the state
    carried along each stream."""
    model.eval()
    hx, total, count = None, 0.0, 0
    for start in range(0, data.shape[1] - 1, chunk):
        x = data[:, start:start + chunk]
        y = data[:, start + 1:start + chunk + 1]
        x = x[:, :y.shape[1]]
        logits, hx = run_chunk(model, x, hx)
        loss, _ = nn.cross_entropy(logits, y)
        total += loss * y.size
        count += y.size
    model.train()
    return total / count


def sample(model: nn.Sequential, chars: str, prompt: str, length: int, temperature: float = 0.8, seed: int = 0) -> str:
    """prompt followed by length generated characters: the prompt primes the
    state, then each sampled character is fed back (one step at a time)."""
    index = {c: i for i, c in enumerate(chars)}
    unknown = sorted({c for c in prompt if c not in index})
    if unknown:
        raise ValueError(f"prompt has characters the model does not know: {''.join(unknown)!r}")
    rng = np.random.default_rng(seed)
    model.eval()
    ids = np.array([[index[c] for c in prompt or "\n"]])
    logits, hx = run_chunk(model, ids, None)
    out = []
    for _ in range(length):
        z = logits[0, -1].astype(np.float64) / max(temperature, 1e-6)
        p = np.exp(z - z.max())
        p /= p.sum()
        nxt = int(rng.choice(len(chars), p=p))
        out.append(chars[nxt])
        logits, hx = run_chunk(model, np.array([[nxt]]), hx)
    return prompt + "".join(out)


def main(seed: int = 0, threads: int | None = None, quick: bool = False, out: str | None = None,
         minutes: float = 5.0, hidden: int = 256, layers: int = 1, batch: int = 32, chunk: int = 100,
         lr: float = 3e-3) -> dict[str, Any]:
    # under mpirun: each rank trains on its share of the streams, gradients
    # averaged across ranks every step; rank 0 alone reports and saves
    comm = mpi.world()
    rank = comm.Get_rank() if comm is not None else 0
    if comm is not None and threads is None:
        threads = mpi.local_threads(comm)
    quiet = open(os.devnull, "w") if rank != 0 else None
    with contextlib.redirect_stdout(quiet) if quiet is not None else contextlib.nullcontext():
        try:
            return _train(comm, rank, seed, threads, quick, out, minutes, hidden, layers, batch, chunk, lr)
        finally:
            if quiet is not None:
                quiet.close()


def _train(comm: Any, rank: int, seed: int, threads: int | None, quick: bool, out: str | None,
           minutes: float, hidden: int, layers: int, batch: int, chunk: int, lr: float) -> dict[str, Any]:
    out = setup(seed, threads, out)
    text = load_text()
    chars = "".join(sorted(set(text)))
    raw = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    lookup = np.zeros(256, dtype=np.int64)
    lookup[np.frombuffer(chars.encode("ascii"), dtype=np.uint8)] = np.arange(len(chars))
    ids = lookup[raw]
    split = int(len(ids) * 0.9)
    train, valid = streams(ids[:split], batch), streams(ids[split:], 16)
    if quick:
        minutes, hidden, train, valid = 0.1, 64, train[:, :4000], valid[:, :400]

    model = make_model(len(chars), 32, hidden, layers, seed + rank)   # dropout differs by rank
    mpi.broadcast_parameters(model, comm)                              # the parameters do not
    ranks = comm.Get_size() if comm is not None else 1
    train = train[mpi.shard(batch, comm)]
    opt = optim.Adam(model.params, lr=lr)
    params = sum(p.size for p in model.params.values())
    print(f"charlm: {len(text):,} characters ({len(chars)} distinct), {split:,} to train on; "
          f"Embedding({len(chars)}, 32) -> LSTM(32, {hidden}, num_layers={layers}) -> Dropout(0.2) -> "
          f"Linear({hidden}, {len(chars)}), {params:,} parameters; batch {batch} x {chunk} characters; "
          f"{fastrnn.get_num_threads()} threads" + (f" x {ranks} MPI ranks" if ranks > 1 else "")
          + f"; {minutes:g} minutes")
    print(f"uniform guessing: {math.log(len(chars)):.2f} nats/char")
    budget = minutes * 60
    steps_per_epoch = math.ceil((train.shape[1] - 1) / chunk)
    history = [(0.0, 0, evaluate(model, valid, chunk))]
    best = (history[0][2], model.state_dict())
    first_loss = loss = None
    start = time.perf_counter()
    seen = step = shown = 0
    bar = Progress(total=max(1, int(budget)), desc="charlm training", unit="s")
    while True:
        hx = None   # each pass over the text starts from a zero state
        for begin in range(0, train.shape[1] - 1, chunk):
            y = train[:, begin + 1:begin + chunk + 1]
            x = train[:, begin:begin + y.shape[1]]
            logits, hx = run_chunk(model, x, hx)   # hx: the previous chunk's final state
            loss, dlogits = nn.cross_entropy(logits, y)
            model.backward(dlogits)                # no gradient flows into hx: BPTT truncated here
            mpi.allreduce_gradients(model, comm, weight=y.size)
            fastrnn.clip_grad_norm(model.grads, max_norm=5.0)
            opt.step(model.grads)
            model.zero_grad()
            step += 1
            seen += y.size * ranks
            first_loss = loss if first_loss is None else first_loss
            elapsed = time.perf_counter() - start
            if comm is not None:   # every rank stops at the same step: rank 0's clock decides
                elapsed = comm.bcast(elapsed, root=0)
            if int(elapsed) > shown or step % 10 == 0:
                bar.update(int(elapsed) - shown, loss=f"{loss:.3f}", chars_per_s=f"{seen / elapsed:,.0f}")
                shown = int(elapsed)
            if step % steps_per_epoch == 0 or elapsed >= budget:
                history.append((elapsed, seen, evaluate(model, valid, chunk)))
                note = ""
                if history[-1][2] < best[0]:
                    best = (history[-1][2], model.state_dict())
                else:   # no better than before: smaller steps
                    opt.config["lr"] /= 2
                    note = f", learning rate down to {opt.config['lr']:.2g}"
                bar.write(f"  {elapsed:6.1f} s  {seen:,} characters  validation {history[-1][2]:.3f} "
                          f"nats/char{note}")
            if elapsed >= budget:
                break
        if elapsed >= budget:
            break
    bar.close()
    model.load_state_dict(best[1])   # the best model seen
    final = best[0]
    print(f"validation cross-entropy {final:.3f} nats/char (best of {len(history) - 1} evaluations) after "
          f"{time.perf_counter() - start:.0f} s, {step} steps, {seen:,} characters "
          f"({seen / (time.perf_counter() - start):,.0f} chars/s)")
    path = os.path.join(out, "charlm.npz")
    if rank == 0:
        fastrnn.save(path, model, optimizer=opt, extra={"demo": "charlm", "chars": chars})
    print(f"saved {path}")
    text_out = sample(model, chars, "HAMLET.\n", 300 if not quick else 40, seed=seed)
    print("sample, temperature 0.8:\n" + text_out)
    return {"first_loss": first_loss, "last_loss": loss, "validation": final, "history": history,
            "model": path, "sample": text_out}


def sample_command(path: str, prompt: str, length: int, temperature: float, seed: int) -> str:
    checkpoint = fastrnn.load_checkpoint(path)
    chars = (checkpoint.extra or {}).get("chars")
    if not isinstance(chars, str):
        raise ValueError(f"{path}: not a charlm model (no character list saved with it)")
    if not isinstance(checkpoint.model, nn.Sequential):
        raise ValueError(f"{path}: not a charlm model (a {type(checkpoint.model).__name__}, not a Sequential)")
    return sample(checkpoint.model, chars, prompt, length, temperature, seed)
