"""Command line: `python -m fastrnn demo [NAME]`, `python -m fastrnn info`."""
from __future__ import annotations

import argparse
import importlib
import sys


def main(argv=None) -> int:
    from fastrnn.demos import DEMOS

    parser = argparse.ArgumentParser(prog="fastrnn", description="fast CPU recurrent networks for NumPy")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a demonstration")
    demo.add_argument("name", nargs="?", default="sine", choices=sorted(DEMOS))
    demo.add_argument("--seconds", type=float, default=5.0, help="training time (default 5)")
    sub.add_parser("info", help="how fastrnn was built and what it runs with")
    args = parser.parse_args(argv)
    if args.command == "info":
        import fastrnn
        fastrnn.show_config()
        return 0
    importlib.import_module(DEMOS[args.name]).main(seconds=args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
