"""Does a forward slow down on subnormal (denormal) numbers?  Times an
eval-mode forward of each cell on normal inputs and on inputs whose every
element is subnormal (float32 1e-41, float64 1e-310), alternating the two,
and prints the median of each and their ratio (issue: <= 2x).

    python bench/denormals.py [--repeats N]
"""
import argparse
import time

import numpy as np

import fastrnn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    T, B, I, H = 100, 32, 128, 128
    print(f"T={T} B={B} I={I} H={H}, {fastrnn.get_num_threads()} threads, median of {args.repeats}")
    print(f"{'cell':6s} {'dtype':8s} {'normal ms':>10s} {'subnormal ms':>13s} {'ratio':>6s}")
    for dtype, tiny in ((np.float32, 1e-41), (np.float64, 1e-310)):
        for name, cls in (("RNN", fastrnn.RNN), ("LSTM", fastrnn.LSTM), ("GRU", fastrnn.GRU)):
            layer = cls(I, H, dtype=dtype, seed=0).eval()
            rng = np.random.default_rng(0)
            normal = rng.standard_normal((T, B, I)).astype(dtype)
            subnormal = (np.sign(normal) * dtype(tiny)).astype(dtype)
            assert 0 < abs(subnormal[0, 0, 0]) < np.finfo(dtype).tiny
            times = {"normal": [], "subnormal": []}
            for _ in range(args.repeats):
                for key, x in (("normal", normal), ("subnormal", subnormal)):
                    start = time.perf_counter()
                    layer(x)
                    times[key].append(time.perf_counter() - start)
            a, b = (float(np.median(times[k])) * 1e3 for k in ("normal", "subnormal"))
            print(f"{name:6s} {np.dtype(dtype).name:8s} {a:10.3f} {b:13.3f} {b / a:6.2f}")


if __name__ == "__main__":
    main()
