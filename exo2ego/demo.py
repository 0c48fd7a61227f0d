"""`exo2ego demo`: the whole Exo2Ego pipeline on the embedded synthetic world (work in progress)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the whole pipeline on the synthetic world")
    parser.add_argument("--out", default="demo_out", help="output folder")
    parser.add_argument("--quick", action="store_true", help="the short CI variant")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise SystemExit("exo2ego demo is being assembled; run the data, train and eval commands directly for now")
