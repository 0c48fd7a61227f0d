"""`exo2ego` console script.

Each area of the project contributes its subcommands through an ``add_parser(subparsers)`` function
in its own ``cli`` module; heavy imports (torch, datasets) happen inside the handlers so that
``exo2ego --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib

# Modules that define ``add_parser(subparsers)``, in the order their commands appear in --help.
COMMAND_MODULES = (
    "exo2ego.tiny",
    "datasets_scripts.cli",
    "eval.cli",
    "model_card.cli",
    "exo2ego.demo",
    "exo2ego.ablate",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="exo2ego", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    raise SystemExit(main())
