"""Do the kernels release the GIL?  Two Python threads each run their own
layer (one kernel thread each, fastrnn.set_num_threads(1)); with the GIL
held the pair would take twice as long as one alone.  Prints the median time
of one layer alone, of the two layers in two threads, and their ratio.

    python bench/gil.py [--repeats N]
"""
import argparse
import threading
import time

import numpy as np

import fastrnn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args()
    fastrnn.set_num_threads(1)
    rng = np.random.default_rng(0)
    layers = [fastrnn.LSTM(128, 256, seed=i).eval() for i in range(2)]
    xs = [rng.standard_normal((200, 16, 128)).astype(np.float32) for _ in range(2)]
    alone, pair = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        layers[0](xs[0])
        alone.append(time.perf_counter() - start)
        threads = [threading.Thread(target=layers[i], args=(xs[i],)) for i in range(2)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        pair.append(time.perf_counter() - start)
    a, p = float(np.median(alone)), float(np.median(pair))
    print(f"LSTM(128, 256), T=200, B=16, 1 kernel thread each: one layer {a * 1e3:.1f} ms, "
          f"two layers in two Python threads {p * 1e3:.1f} ms, ratio {p / a:.2f} (2.00 if the GIL were held)")


if __name__ == "__main__":
    main()
