"""Sequence to sequence (N to M): reverse digit strings with an encoder GRU and
a decoder GRU, trained with teacher forcing.

    python examples/seq2seq.py [--seed 0] [--threads 2] [--quick] [--out DIR]

The encoder reads a batch of digit strings of different lengths (3 to 10; a
ragged batch, through `lengths`) and its final state starts the decoder,
which is fed the target shifted right (<s>, then the reversed digits:
teacher forcing) and trained to emit the next symbol, ending with </s>.  The
decoder's gradient with respect to its initial state flows back into the
encoder (its dh_0 is the encoder's dh_n).  At test time the decoder runs one
step at a time, feeding back its own most likely symbol (greedy decoding), on
strings never seen in training; the exact-match accuracy is printed.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

import fastrnn
from fastrnn import nn, optim

PAD, BOS, EOS = 10, 11, 12          # symbols 0-9 are the digits
VOCAB = 13
MIN_LEN, MAX_LEN = 3, 10


def random_strings(rng: np.random.Generator, n: int, exclude=frozenset()) -> list[tuple[int, ...]]:
    out = []
    while len(out) < n:
        s = tuple(rng.integers(0, 10, rng.integers(MIN_LEN, MAX_LEN + 1)).tolist())
        if s not in exclude:
            out.append(s)
    return out


def encode_batch(strings):
    """Padded arrays, batch-first: encoder input, its lengths, decoder input
    (<s> + reversed), decoder target (reversed + </s>, padded with -100)."""
    B, L = len(strings), max(len(s) for s in strings)
    src = np.full((B, L), PAD, dtype=np.int64)
    dec_in = np.full((B, L + 1), PAD, dtype=np.int64)
    target = np.full((B, L + 1), -100, dtype=np.int64)
    for i, s in enumerate(strings):
        rev = s[::-1]
        src[i, :len(s)] = s
        dec_in[i, 0] = BOS
        dec_in[i, 1:len(s) + 1] = rev
        target[i, :len(s)] = rev
        target[i, len(s)] = EOS
    lengths = np.array([len(s) for s in strings])
    return src, lengths, dec_in, target, lengths + 1


class Seq2Seq(nn.Module):
    def __init__(self, hidden: int = 128, embed: int = 32, seed: int = 0) -> None:
        super().__init__()
        self.src_embed = nn.Embedding(VOCAB, embed, seed=seed)
        self.encoder = fastrnn.GRU(embed, hidden, batch_first=True, seed=seed + 1)
        self.tgt_embed = nn.Embedding(VOCAB, embed, seed=seed + 2)
        self.decoder = fastrnn.GRU(embed, hidden, batch_first=True, seed=seed + 3)
        self.head = nn.Linear(hidden, VOCAB, seed=seed + 4)
        self._config = dict(hidden=hidden, embed=embed, seed=seed)

    def forward(self, src, src_lengths, dec_in, dec_lengths):
        _, h = self.encoder(self.src_embed(src), lengths=src_lengths)   # h: each string's final state
        out, _ = self.decoder(self.tgt_embed(dec_in), h, lengths=dec_lengths)
        return self.head(out)

    def backward(self, dlogits):
        dx, dh_0 = self.decoder.backward(self.head.backward(dlogits))
        self.tgt_embed.backward(dx)
        dx, _ = self.encoder.backward(None, dh_0)       # the decoder's dh_0 is the encoder's dh_n
        self.src_embed.backward(dx)

    def greedy(self, src, src_lengths, max_len: int) -> np.ndarray:
        """Decode one step at a time, feeding back the most likely symbol."""
        self.eval()
        _, h = self.encoder(self.src_embed(src), lengths=src_lengths)
        symbol = np.full((len(src), 1), BOS)
        out = np.empty((len(src), max_len), dtype=np.int64)
        for t in range(max_len):
            y, h = self.decoder(self.tgt_embed(symbol), h)
            symbol = self.head(y).argmax(axis=-1)
            out[:, t] = symbol[:, 0]
        self.train()
        return out


def exact_match(model: Seq2Seq, strings) -> float:
    src, lengths, _, _, _ = encode_batch(strings)
    decoded = model.greedy(src, lengths, MAX_LEN + 1)
    right = 0
    for s, row in zip(strings, decoded):
        want = list(s[::-1]) + [EOS]
        right += list(row[:len(want)]) == want
    return right / len(strings)


def main(seed: int = 0, threads: int | None = None, quick: bool = False, out: str | None = None,
         seconds: float = 120.0, batch: int = 64, hidden: int = 128) -> dict:
    if threads is not None:
        fastrnn.set_num_threads(threads)
    out = out or "fastrnn-demo-output"
    os.makedirs(out, exist_ok=True)
    if quick:
        seconds, hidden = 4.0, 32
    rng = np.random.default_rng(seed)
    test = random_strings(np.random.default_rng(seed + 1), 1000)
    held_out = frozenset(test)
    model = Seq2Seq(hidden=hidden, seed=seed)
    opt = optim.Adam(model.params, lr=3e-3)
    print(f"seq2seq: reverse digit strings of length {MIN_LEN}-{MAX_LEN}; encoder GRU -> decoder GRU "
          f"(hidden {hidden}), teacher forcing, batch {batch}, {seconds:g} s, {fastrnn.get_num_threads()} threads; "
          f"1000 held-out test strings")
    start, step, losses, report = time.perf_counter(), 0, [], 10.0
    while time.perf_counter() - start < seconds:
        src, src_len, dec_in, target, dec_len = encode_batch(random_strings(rng, batch, held_out))
        logits = model.forward(src, src_len, dec_in, dec_len)
        loss, dlogits = nn.cross_entropy(logits, target, ignore_index=-100)
        model.backward(dlogits)
        fastrnn.clip_grad_norm(model.grads, max_norm=1.0)
        opt.step(model.grads)
        model.zero_grad()
        losses.append(loss)
        step += 1
        if time.perf_counter() - start > report:
            print(f"  {time.perf_counter() - start:5.0f} s  step {step:5d}  loss {np.mean(losses[-50:]):.4f}  "
                  f"held-out exact match {exact_match(model, test[:200]):.1%}", flush=True)
            report += 10.0
    accuracy = exact_match(model, test)
    print(f"after {step} steps ({time.perf_counter() - start:.0f} s): exact match on 1000 held-out strings "
          f"{accuracy:.1%}")
    for s in test[:5]:
        src, lengths, _, _, _ = encode_batch([s])
        row = list(model.greedy(src, lengths, MAX_LEN + 1)[0])
        row = row[:row.index(EOS)] if EOS in row else row
        print(f"  {''.join(map(str, s)):>10s} -> {''.join(str(d) if d < 10 else '?' for d in row)}")
    path = os.path.join(out, "seq2seq.npz")
    fastrnn.save(path, model, optimizer=opt)
    return {"first_loss": float(np.mean(losses[:10])), "last_loss": float(np.mean(losses[-10:])),
            "accuracy": accuracy, "steps": step}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="a few seconds (for the tests)")
    parser.add_argument("--out", default=None, help="output directory")
    parser.add_argument("--seconds", type=float, default=120.0, help="training time")
    args = parser.parse_args()
    main(seed=args.seed, threads=args.threads, quick=args.quick, out=args.out, seconds=args.seconds)
