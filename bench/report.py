"""Markdown tables from bench/compare.py's JSON, for the README.

    python bench/report.py bench/results/compare.json
"""
import json
import sys


def fmt_ms(v):
    return "-" if v is None else (f"{v:.3f}" if v < 10 else f"{v:.1f}")


def fmt_ratio(v):
    return "-" if v is None else f"{v:.2f}"


def ceiling_source(r) -> str:
    """Which library's product set the ceiling, and the other's range."""
    parts = r.get("ceiling_readings_by_library")
    if not parts:
        return "NumPy's OpenBLAS"
    ranges = {k: (min(p[k] for p in parts), max(p[k] for p in parts)) for k in parts[0]}
    return "the faster of " + " and ".join(f"{k} ({lo:.0f}-{hi:.0f})" for k, (lo, hi) in ranges.items())


def main(path):
    with open(path) as f:
        r = json.load(f)
    m = r["machine"]
    print(f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} threads; Python {m['python']}, "
          f"NumPy {m['numpy']}, PyTorch {m.get('torch', '-')}, onnxruntime {m.get('onnxruntime', '-')}. "
          f"Ceiling (2048^3 sgemm, same run, {ceiling_source(r)}): {r['ceiling_gflops']:.0f} GFLOP/s at the start, "
          f"{r.get('ceiling_gflops_end', float('nan')):.0f} at the end; the targets and fractions below use "
          f"{r.get('ceiling_gflops_used', r['ceiling_gflops']):.0f}, the highest of "
          f"{len(r.get('ceiling_readings', [0, 0]))} readings in the run. {r['flops']}.")
    s = r.get("machine_state")
    if s:
        print(f"Rounds start with a probe of the machine's speed (a 1024^3 sgemm): {s['probes']} probes, "
              f"{s['slow_probes']} of them in a slow spell (below {s['slow_fraction']:.0%} of the best, "
              f"{s['best_probe']:.0f} GFLOP/s); {s['seconds_waited']:.0f} s spent waiting for spells to end, "
              f"{s['gave_up']} rounds timed in one (their row's {s['max_wait_seconds']:.0f} s of waiting spent).")
    print()
    if r.get("grid"):
        print("| cell | size | mode | fastrnn ms | NumPy ms | PyTorch ms | onnxruntime ms | PyTorch/fastrnn "
              "| NumPy/fastrnn | onnxruntime/fastrnn | fastrnn GFLOP/s | of ceiling | targets |")
        print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for row in r["grid"]:
            ms, ratio = row["ms"], row["ratio"]
            status = "met" if not row["missed"] else "**missed**: " + "; ".join(row["missed"])
            print(f"| {row['cell']} | {row['size']} | {row['mode']} | {fmt_ms(ms['fastrnn'])} | "
                  f"{fmt_ms(ms.get('numpy'))} | {fmt_ms(ms.get('torch'))} | {fmt_ms(ms.get('ort'))} | "
                  f"{fmt_ratio(ratio.get('torch'))} | {fmt_ratio(ratio.get('numpy'))} | {fmt_ratio(ratio.get('ort'))} | "
                  f"{row['gflops']:.0f} | {row['ceiling_fraction']:.0%} | {status} |")
        print()
    if r.get("ragged"):
        print("| ragged batch (B=32, T=100, I=H=128) | mode | fastrnn lengths ms | fastrnn padded ms | "
              "PyTorch packed ms | lengths/padded (work ratio) | PyTorch packed/fastrnn | targets |")
        print("|---|---|---:|---:|---:|---:|---:|---|")
        for row in r["ragged"]:
            ms = row["ms"]
            status = "met" if not row["missed"] else "**missed**: " + "; ".join(row["missed"])
            print(f"| {row['cell']} | {row['mode']} | {fmt_ms(ms['fastrnn lengths'])} | {fmt_ms(ms['fastrnn padded'])} "
                  f"| {fmt_ms(ms.get('torch packed'))} | {row['lengths_over_padded']:.2f} "
                  f"({row['sum_lengths_over_padded']:.2f}) | {fmt_ratio(row.get('torch_over_fastrnn'))} | {status} |")
        print()
    if r.get("threads"):
        print("| threads | size | mode | 1 thread ms | 2 threads ms | speed-up |")
        print("|---|---|---|---:|---:|---:|")
        for row in r["threads"]:
            flag = "" if not row["missed"] else " (target 1.7)"
            print(f"| {row['cell']} | {row['size']} | {row['mode']} | {fmt_ms(row['ms_1'])} | "
                  f"{fmt_ms(row['ms_2'])} | {row['speedup']:.2f}{flag} |")
        print()
    if r.get("memory"):
        print("| peak memory of forward+backward | size | fastrnn MB | PyTorch MB |")
        print("|---|---|---:|---:|")
        for row in r["memory"]:
            p = row["peak_mb"]
            flag = "" if not row["missed"] else " (more than PyTorch)"
            print(f"| {row['cell']} | {row['size']} | {p['fastrnn']:.1f}{flag} | {p.get('torch', float('nan')):.1f} |")
        print()
    if r.get("eval_memory"):
        for row in r["eval_memory"]:
            extra = row["extra_bytes"]
            print(f"- eval-mode forward, {row['cell']} medium: beyond its output, "
                  + ", ".join(f"T={k}: {v / 1024:.0f} KiB" for k, v in extra.items()))
        print()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/results/compare.json")
