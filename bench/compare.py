"""Side-by-side benchmark of fastrnn against NumPy by hand, PyTorch and onnxruntime.

    python bench/compare.py [--quick] [--threads 2] [--out bench/results]

For every cell (RNN tanh, GRU, LSTM) and size, the forward (eval mode) and the
forward+backward (training mode) of each contender, float32, one process, the
same weights and thread count; outputs are checked to agree first.  Contenders
are timed in rotation, round after round, each warmed up again after every
switch (another library's threads may still hold the cores), so that machine
drift hits all alike; the table shows medians over the rounds.

Also: a ragged batch with `lengths` against PyTorch's packed sequences, thread
scaling 1 vs 2 threads, and peak memory of forward+backward (each contender in
its own process).  The ceiling is the GFLOP/s of a large plain sgemm measured
in the same run (the faster of NumPy's BLAS and fastrnn's own product), at its
start, after each cell's rows and at its end; the targets use the highest
reading.  Each round of a row starts with a quick probe of the machine and
waits out a slow spell of the VM (see wait_for_machine).
Writes <out>/compare.json and <out>/compare.png.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import contenders as C  # noqa: E402

import fastrnn  # noqa: E402

FLOP_NOTE = "FLOPs: 2*T*B*G*H*(I+H) for a forward (G = 1 RNN, 3 GRU, 4 LSTM), 3x that for forward+backward"


# After a call, a library's worker threads keep spinning for a while, waiting
# for more work: measured here, NumPy's OpenBLAS worker burnt about 100 ms of
# CPU and onnxruntime's 40 ms while only fastrnn ran afterwards, and every such
# thread takes a core from whoever runs next.  So before each switch to another
# contender, everything sleeps until those threads have given up.
SETTLE_SECONDS = 0.25
WARMUP_SECONDS = 0.02

# A VM's vCPUs may share one physical core for seconds to minutes (seen here:
# a 2-thread sgemm at 30 GFLOP/s, its 1-thread speed, against 57-77 outside
# those spells).  Rows timed in such a spell report half the machine: ratios
# between contenders survive it (they are timed in rotation), GFLOP/s, the
# fraction of the ceiling and the thread scaling do not.  So each round of a
# row starts with a probe (a 1024^3 sgemm, 10-30 ms) and, while the probe reads below
# SLOW_FRACTION of the best reading of the run, waits, for at most
# MAX_WAIT_SECONDS a row; the waits are counted in the report.
SLOW_FRACTION = 0.6
MAX_WAIT_SECONDS = 120.0
machine_state = {"probes": 0, "slow_probes": 0, "seconds_waited": 0.0, "best_probe": 0.0, "gave_up": 0,
                 "slow_fraction": SLOW_FRACTION, "max_wait_seconds": MAX_WAIT_SECONDS}


def wait_for_machine(budget: list[float]) -> None:
    """Wait while the probe says the machine is in a slow spell; budget[0] is
    what is left of this row's allowance of waiting."""
    while True:
        gflops = C.probe_gflops()
        machine_state["probes"] += 1
        machine_state["best_probe"] = best = max(machine_state["best_probe"], gflops)
        if gflops >= SLOW_FRACTION * best:
            return
        machine_state["slow_probes"] += 1
        if budget[0] <= 0:
            machine_state["gave_up"] += 1
            return
        time.sleep(1.0)
        budget[0] -= 1.0
        machine_state["seconds_waited"] += 1.0


def time_rotating(calls: dict, rounds: int, sample_seconds: float) -> dict:
    """calls: name -> callable.  Returns name -> median seconds per call.
    Each round (after wait_for_machine) runs every call in turn (starting at a
    different one each round): a pause for the previous contender's threads to
    go idle, warm-up calls for WARMUP_SECONDS, then enough calls to fill
    sample_seconds."""
    inner = {}
    for name, fn in calls.items():  # calibrate
        time.sleep(SETTLE_SECONDS)
        fn()
        t0 = time.perf_counter()
        fn()
        once = max(time.perf_counter() - t0, 1e-6)
        inner[name] = max(1, int(sample_seconds / once))
    names = list(calls)
    samples = {name: [] for name in names}
    budget = [MAX_WAIT_SECONDS]
    for r in range(rounds):
        wait_for_machine(budget)
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn, n = calls[name], inner[name]
            time.sleep(SETTLE_SECONDS)
            warm_until = time.perf_counter() + WARMUP_SECONDS
            fn()
            while time.perf_counter() < warm_until:   # until its threads spin again
                fn()
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - t0) / n)
    return {name: float(np.median(v)) for name, v in samples.items()}


def targets(cell: str, size: str, mode: str) -> dict:
    """The issue's targets for one row: minimum ratios contender/fastrnn, and
    a minimum fraction of the ceiling (ratio targets are capped where they
    would need more than the ceiling)."""
    t = {}
    rnn_gru = cell in ("RNN", "GRU")
    if size == "stream":
        t["torch"] = 10.0 if rnn_gru else 5.0
    elif size == "small":
        t["torch"] = 3.0 if rnn_gru else 1.5
    else:
        t["torch"] = 2.0 if rnn_gru else 1.0
        if rnn_gru:
            t["torch_or_ceiling"] = 0.8  # >= 2x torch or >= 80% of the ceiling, whichever is less
        if cell == "LSTM" and mode == "fwd" and size in ("large", "wide"):
            t["ceiling"] = 0.85
    if mode == "fwd":
        t["ort"] = 1.0
    t["numpy"] = 5.0 if size in ("stream", "small", "medium") else 1.5
    return t


def check_row(row: dict, ceiling: float) -> list[str]:
    """Targets of a row that are not met, as text."""
    missed = []
    t = row["targets"]
    bound = row["flops"] / (ceiling * 1e9)  # the fastest any implementation could be
    for who in ("torch", "numpy", "ort"):
        if who not in t or row["ms"].get(who) is None:
            continue
        other = row["ms"][who] / 1e3
        need = min(t[who], other / bound)  # the ceiling bound applies where the ratio would need more
        ratio = row["ratio"][who]
        if who == "torch" and "torch_or_ceiling" in t and row["ceiling_fraction"] >= t["torch_or_ceiling"]:
            continue
        if ratio < need - 1e-9:
            digits = 2 if f"{ratio:.2f}" != f"{need:.2f}" else 3   # 1.496 < 1.500, not 1.50 < 1.50
            missed.append(f"{who} {ratio:.{digits}f}x < {need:.{digits}f}x")
    if "ceiling" in t and row["ceiling_fraction"] < t["ceiling"]:
        digits = 0 if f"{row['ceiling_fraction']:.0%}" != f"{t['ceiling']:.0%}" else 1   # 84.9% < 85.0%
        missed.append(f"ceiling {row['ceiling_fraction']:.{digits}%} < {t['ceiling']:.{digits}%}")
    return missed


ceiling_parts: list[dict] = []   # every reading of the ceiling: GFLOP/s of each library's product


def read_ceiling(seconds: float, readings: list) -> float:
    """One more reading of the ceiling (the faster library's GFLOP/s), printed."""
    parts = C.sgemm_ceilings(seconds)
    ceiling_parts.append(parts)
    print(f"ceiling{' read again' if readings else ''}: {max(parts.values()):.1f} GFLOP/s ("
          + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()) + ")", flush=True)
    return max(parts.values())


def main_grid(args, ceiling, readings):
    """The grid's rows, checked against `ceiling` as they come; after each
    cell's rows, one more reading of the ceiling joins `readings`."""
    rows = []
    for cell in args.cells:
        if cell != args.cells[0]:
            readings.append(read_ceiling(1.0, readings))
        for size in args.sizes:
            layer, x, dy = C.make_problem(cell, size)
            fast = C.fastrnn_contender(layer, x, dy)
            contenders = {"fastrnn": fast, "numpy": C.numpy_contender(cell, layer, x, dy)}
            if C.have("torch"):
                contenders["torch"] = C.torch_contender(cell, layer, x, dy)
            if C.have("onnxruntime") and C.have("torch"):
                contenders["ort"] = C.onnxruntime_contender(cell, layer, x, args.threads)
            reference = np.asarray(fast["output"]())
            for name, c in contenders.items():
                diff = float(np.abs(np.asarray(c["output"]()).reshape(reference.shape) - reference).max())
                if diff > 1e-4:
                    raise SystemExit(f"{cell} {size}: {name} disagrees with fastrnn by {diff:.2e}")
            for mode, key in (("fwd", "forward"), ("fwd+bwd", "train_step")):
                calls = {name: c[key] for name, c in contenders.items() if key in c}
                med = time_rotating(calls, args.rounds, args.sample)
                fl = C.flops(cell, size, backward=mode == "fwd+bwd")
                row = {"cell": cell, "size": size, "mode": mode, "shape": dict(zip("BTIH", C.SIZES[size])),
                       "flops": fl, "ms": {k: v * 1e3 for k, v in med.items()},
                       "ratio": {k: med[k] / med["fastrnn"] for k in med if k != "fastrnn"},
                       "gflops": fl / med["fastrnn"] / 1e9}
                row["ceiling_fraction"] = row["gflops"] / ceiling
                row["targets"] = targets(cell, size, mode)
                row["missed"] = check_row(row, ceiling)
                rows.append(row)
                print(format_row(row), flush=True)
    return rows


def format_header() -> str:
    return (f"{'cell':4} {'size':6} {'mode':7} | {'fastrnn':>9} {'numpy':>9} {'torch':>9} {'ort':>9} ms | "
            f"{'torch/f':>7} {'numpy/f':>7} {'ort/f':>6} | {'GFLOP/s':>7} {'ceil':>5} | targets")


def format_row(row) -> str:
    ms, ratio = row["ms"], row["ratio"]

    def cell_ms(k):
        return f"{ms[k]:9.3f}" if k in ms else f"{'-':>9}"

    def cell_ratio(k, w):
        return f"{ratio[k]:{w}.2f}" if k in ratio else f"{'-':>{w}}"

    status = "met" if not row["missed"] else "MISSED: " + "; ".join(row["missed"])
    return (f"{row['cell']:4} {row['size']:6} {row['mode']:7} | {cell_ms('fastrnn')} {cell_ms('numpy')} "
            f"{cell_ms('torch')} {cell_ms('ort')} ms | {cell_ratio('torch', 7)} {cell_ratio('numpy', 7)} "
            f"{cell_ratio('ort', 6)} | {row['gflops']:7.1f} {row['ceiling_fraction']:5.0%} | {status}")


def ragged(args):
    """B=32, T=100, I=H=128, lengths uniform in [T/4, T]: fastrnn with lengths
    against fastrnn padded (same T) and PyTorch's packed path."""
    results = []
    B, T, I, H = 32, 100, 128, 128
    lengths = np.random.default_rng(1).integers(T // 4, T + 1, size=B)
    for cell in args.cells:
        rng = np.random.default_rng(0)
        layer = getattr(fastrnn, cell)(I, H, seed=0)
        x = rng.standard_normal((T, B, I)).astype(np.float32)
        dy = rng.standard_normal((T, B, H)).astype(np.float32)
        dy[np.arange(T)[:, None] >= lengths[None, :]] = 0
        ragged_c = C.fastrnn_contender(layer, x, dy, lengths=lengths)
        padded_c = C.fastrnn_contender(layer, x, dy)
        contenders = {"fastrnn lengths": ragged_c, "fastrnn padded": padded_c}
        if C.have("torch"):
            contenders["torch packed"] = C.torch_contender(cell, layer, x, dy, lengths=lengths)
            diff = float(np.abs(contenders["torch packed"]["output"]() - ragged_c["output"]()).max())
            if diff > 1e-4:
                raise SystemExit(f"ragged {cell}: torch disagrees by {diff:.2e}")
        for mode, key in (("fwd", "forward"), ("fwd+bwd", "train_step")):
            med = time_rotating({k: c[key] for k, c in contenders.items()}, args.rounds, args.sample)
            r = {"cell": cell, "mode": mode, "ms": {k: v * 1e3 for k, v in med.items()},
                 "lengths_over_padded": med["fastrnn lengths"] / med["fastrnn padded"],
                 "sum_lengths_over_padded": float(lengths.sum()) / (B * T)}
            if "torch packed" in med:
                r["torch_over_fastrnn"] = med["torch packed"] / med["fastrnn lengths"]
            r["missed"] = []
            if r["lengths_over_padded"] > 0.8:
                r["missed"].append(f"lengths/padded {r['lengths_over_padded']:.2f} > 0.80")
            if r.get("torch_over_fastrnn", 99) < 3.0:
                r["missed"].append(f"torch packed {r['torch_over_fastrnn']:.2f}x < 3x")
            results.append(r)
            print(f"ragged {cell:4} {mode:7} | " + "  ".join(f"{k} {v:.3f} ms" for k, v in r["ms"].items())
                  + f" | lengths/padded {r['lengths_over_padded']:.2f} (work {r['sum_lengths_over_padded']:.2f})"
                  + (f" | torch/fastrnn {r['torch_over_fastrnn']:.2f}" if "torch_over_fastrnn" in r else "")
                  + (" | met" if not r["missed"] else " | MISSED: " + "; ".join(r["missed"])), flush=True)
    return results


def thread_scaling(args):
    results = []
    for cell in args.cells:
        for size in args.sizes:
            layer, x, dy = C.make_problem(cell, size)
            c = C.fastrnn_contender(layer, x, dy)
            for mode, key in (("fwd", "forward"), ("fwd+bwd", "train_step")):
                def with_threads(n, fn=c[key]):
                    def run():
                        fastrnn.set_num_threads(n)
                        return fn()
                    return run
                med = time_rotating({"1": with_threads(1), "2": with_threads(2)}, args.rounds, args.sample)
                fastrnn.set_num_threads(args.threads)
                r = {"cell": cell, "size": size, "mode": mode, "ms_1": med["1"] * 1e3, "ms_2": med["2"] * 1e3,
                     "speedup": med["1"] / med["2"]}
                r["missed"] = ([f"speedup {r['speedup']:.2f} < 1.70"]
                               if size in ("medium", "large") and r["speedup"] < 1.7 else [])
                results.append(r)
                print(f"threads {cell:4} {size:6} {mode:7} | 1 thread {r['ms_1']:9.3f} ms  2 threads "
                      f"{r['ms_2']:9.3f} ms  speedup {r['speedup']:.2f}"
                      + ("" if not r["missed"] else "  MISSED"), flush=True)
    return results


MEMORY_SCRIPT = r"""
import sys, json
sys.path.insert(0, {bench!r})
import numpy as np, contenders as C
who, cell, size = {who!r}, {cell!r}, {size!r}
C.set_threads({threads})

def make_step(layer, x, dy):
    if who == "fastrnn":
        return C.fastrnn_contender(layer, x, dy)["train_step"]
    return C.torch_contender(cell, layer, x, dy)["train_step"]

# warm up on a tiny problem: loads the code paths (a library's pages count in
# the resident set) without leaving large buffers for the allocator to reuse
C.SIZES["tiny"] = (1, 2, 4, 4)
make_step(*C.make_problem(cell, "tiny"))()
step = make_step(*C.make_problem(cell, size))

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")                         # resets the peak resident set (VmHWM) to the current one
before = status("VmRSS")
step()
print(json.dumps({{"peak_kb": status("VmHWM") - before}}))
"""


def memory(args):
    """Peak memory of one forward+backward: growth of the peak resident set
    (VmHWM, reset just before) over what the process held before the step:
    the first step at this size in a fresh process, after a warm-up step on a
    tiny problem (later steps reuse memory the allocator kept, which hides
    it); each contender in its own processes, median of 3. glibc's mmap
    threshold is fixed at its starting 128 KiB (MALLOC_MMAP_THRESHOLD_): left
    to adapt, it rises after the set-up frees a large block, and the step's
    buffers then come from pages the set-up had already touched, which the
    peak does not see (PyTorch's GRU wide step, which allocates 25 MB of
    weight gradients alone, measured 2.7 MB that way)."""
    results = []
    whos = ["fastrnn"] + (["torch"] if C.have("torch") else [])
    bench = os.path.dirname(os.path.abspath(__file__))
    for cell in args.cells:
        for size in args.sizes:
            peak = {}
            for who in whos:
                code = MEMORY_SCRIPT.format(bench=bench, who=who, cell=cell, size=size, threads=args.threads)
                runs = []
                for _ in range(3):
                    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                         env={**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)})
                    runs.append(json.loads(out.stdout.strip().splitlines()[-1])["peak_kb"] / 1024)
                peak[who] = float(np.median(runs))
            r = {"cell": cell, "size": size, "peak_mb": peak}
            r["missed"] = ([f"{peak['fastrnn']:.1f} MB > torch {peak['torch']:.1f} MB"]
                           if "torch" in peak and peak["fastrnn"] > peak["torch"] + 0.5 else [])
            results.append(r)
            print(f"memory {cell:4} {size:6} | " + "  ".join(f"{k} {v:8.1f} MB" for k, v in peak.items())
                  + ("" if not r["missed"] else "  MISSED"), flush=True)
    return results


def eval_memory(args):
    """Peak bytes NumPy allocates during an eval-mode forward, beyond its
    output, at T and 4T: nothing proportional to T."""
    import tracemalloc
    results = []
    for cell in args.cells:
        B, T, I, H = C.SIZES["medium"]
        layer = getattr(fastrnn, cell)(I, H).eval()
        extra = {}
        for steps in (T, 4 * T):
            x = np.zeros((steps, B, I), np.float32)
            layer(x)
            tracemalloc.start()
            y, _ = layer(x)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            extra[steps] = peak - y.nbytes
            del y
        r = {"cell": cell, "extra_bytes": {str(k): v for k, v in extra.items()}}
        r["missed"] = ([f"grows from {extra[T]} to {extra[4 * T]} bytes"]
                       if extra[4 * T] > 1.5 * extra[T] + 65536 else [])
        results.append(r)
        print(f"eval memory {cell:4} medium: beyond the output, T={T}: {extra[T] / 1024:.0f} KiB, "
              f"T={4 * T}: {extra[4 * T] / 1024:.0f} KiB" + ("" if not r["missed"] else "  MISSED"), flush=True)
    return results


def chart(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = [f"{r['cell']} {r['size']}\n{r['mode']}" for r in rows]
    whos = [w for w in ("torch", "ort", "numpy") if any(w in r["ratio"] for r in rows)]
    fig, ax = plt.subplots(figsize=(max(10, len(rows) * 0.55), 5))
    width = 0.8 / len(whos)
    for i, who in enumerate(whos):
        vals = [r["ratio"].get(who, np.nan) for r in rows]
        ax.bar(np.arange(len(rows)) + (i - (len(whos) - 1) / 2) * width, vals, width, label=f"{who} / fastrnn")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(rows)))
    ax.set_xticklabels(labels, fontsize=7, rotation=90)
    ax.set_ylabel("time of contender / time of fastrnn (higher: fastrnn faster)")
    ax.set_title("fastrnn speed-up, float32, median times")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, shorter samples, no memory runs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cells", nargs="+", default=list(C.CELLS), choices=C.CELLS)
    parser.add_argument("--sizes", nargs="+", default=list(C.SIZES), choices=list(C.SIZES))
    parser.add_argument("--only", nargs="+", default=["grid", "ragged", "threads", "memory"],
                        choices=["grid", "ragged", "threads", "memory"])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args(argv)
    args.rounds = 3 if args.quick else 9
    args.sample = 0.02 if args.quick else 0.06
    C.set_threads(args.threads)

    machine = {"cpu": C.cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
               "numpy": np.__version__, "fastrnn": fastrnn.__version__, "threads": args.threads}
    for mod in ("torch", "onnxruntime"):
        if C.have(mod):
            machine[mod] = __import__(mod).__version__
    print(f"machine: {machine}")
    readings: list[float] = []
    ceiling = read_ceiling(1.0 if args.quick else 3.0, readings)
    readings.append(ceiling)
    print(f"  (a large sgemm, 2048^3, {args.threads} threads; rows are checked against it as they come, and again "
          "at the end against the highest reading)")
    print(FLOP_NOTE)
    report = {"machine": machine, "ceiling_gflops": ceiling, "flops": FLOP_NOTE}
    if "grid" in args.only:
        print(format_header())
        report["grid"] = main_grid(args, ceiling, readings)
    if "ragged" in args.only:
        report["ragged"] = ragged(args)
    if "threads" in args.only:
        report["threads"] = thread_scaling(args)
    if "memory" in args.only and not args.quick:
        report["memory"] = memory(args)
        report["eval_memory"] = eval_memory(args)
    ceiling_end = read_ceiling(1.0, readings)
    readings.append(ceiling_end)
    report["ceiling_gflops_end"] = ceiling_end
    report["ceiling_readings"] = readings
    report["ceiling_readings_by_library"] = ceiling_parts
    report["machine_state"] = machine_state
    print(f"probes of the machine's state: {machine_state['probes']}, {machine_state['slow_probes']} of them in a "
          f"slow spell; waited {machine_state['seconds_waited']:.0f} s for the spells to end, timed "
          f"{machine_state['gave_up']} rounds in one (their row's allowance of waiting spent)")
    # The ceiling bounds what the machine can do, and a slow spell of the VM
    # while it is read understates it (seen: 30 GFLOP/s at the start of a run,
    # 57-73 in other processes minutes before), which would cap the targets
    # too low and report as met rows that are not.  So the grid is judged
    # against the highest reading.
    best = max(readings)
    report["ceiling_gflops_used"] = best
    if best > ceiling and report.get("grid"):
        for row in report["grid"]:
            row["ceiling_fraction"] = row["gflops"] / best
            row["missed"] = check_row(row, best)
        print(f"\nthe grid checked again against the highest reading of the ceiling, {best:.1f} GFLOP/s:")
        print(format_header())
        for row in report["grid"]:
            print(format_row(row))

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "compare.json"), "w") as f:
        json.dump(report, f, indent=1)
    if report.get("grid") and C.have("matplotlib"):
        chart(report["grid"], os.path.join(args.out, "compare.png"))
    missed = [r for part in ("grid", "ragged", "threads", "memory", "eval_memory") for r in report.get(part, [])
              if r["missed"]]
    print(f"\n{len(missed)} rows with targets not met" if missed else "\nall targets met")
    for r in missed:
        print("  " + " ".join(str(r.get(k, "")) for k in ("cell", "size", "mode")) + ": " + "; ".join(r["missed"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
