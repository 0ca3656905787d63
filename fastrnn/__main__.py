"""Command line.

    fastrnn demo NAME [--seed S] [--threads N] [--quick] [--out DIR]     (NAME: charlm, forecast, memory)
    fastrnn sample MODEL.npz --prompt TEXT --length N [--temperature T] [--seed S]
    fastrnn info
"""
from __future__ import annotations

import argparse
import importlib
import sys


def main(argv: list[str] | None = None) -> int:
    from fastrnn.demos import DEMOS

    parser = argparse.ArgumentParser(prog="fastrnn", description="fast CPU recurrent networks for NumPy")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a demonstration: " + ", ".join(DEMOS))
    demo.add_argument("name", choices=sorted(DEMOS))
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=int, default=None, help="threads (default: the usable cores)")
    demo.add_argument("--quick", action="store_true", help="a few seconds only (what the tests run)")
    demo.add_argument("--out", default="fastrnn-demo-output", help="directory for models and plots")
    sample = sub.add_parser("sample", help="generate text from a model saved by `fastrnn demo charlm`")
    sample.add_argument("model")
    sample.add_argument("--prompt", default="\n")
    sample.add_argument("--length", type=int, default=500)
    sample.add_argument("--temperature", type=float, default=0.8)
    sample.add_argument("--seed", type=int, default=0)
    sub.add_parser("info", help="how fastrnn was built and what it runs with")
    args = parser.parse_args(argv)

    if args.command == "info":
        import fastrnn
        fastrnn.show_config()
    elif args.command == "demo":
        importlib.import_module(DEMOS[args.name]).main(seed=args.seed, threads=args.threads, quick=args.quick,
                                                        out=args.out)
    else:
        from fastrnn.demos.charlm import sample_command
        if args.length < 0:
            parser.error("--length must be >= 0")
        try:
            print(sample_command(args.model, args.prompt, args.length, args.temperature, args.seed))
        except (OSError, ValueError) as exc:
            print(f"fastrnn sample: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
