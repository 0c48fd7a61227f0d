"""`exo2ego` console script.

Each area of the project contributes its subcommands through an ``add_parser(subparsers)`` function
in its own ``cli`` module. Building the parser imports those modules and what they import at module level (torch
and datasets among them); the heavier rest (transformers' models, matplotlib, PyAV, scipy) is imported inside the
functions that use it, each such import with a comment saying so, so that ``exo2ego --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from exo2ego_base.provenance import HubPushError

# Modules that define ``add_parser(subparsers)``, in the order their commands appear in --help.
COMMAND_MODULES = (
    "exo2ego.tiny.cli",
    "datasets_scripts.cli",
    "eval.cli",
    "train.cli",
    "model_card.cli",
    "exo2ego.demo.cli",
    "exo2ego.serve.cli",
    "exo2ego.app",
    "exo2ego.experiments.ablation.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="exo2ego", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


# The project's packages log their progress notes (skipped sources, written files) at INFO; the command shows them.
PROJECT_LOGGERS = ("datasets_scripts", "eval", "exo2ego", "exo2ego_base", "model_card", "train")


class _ProjectLogHandler(logging.StreamHandler):
    """Plain message lines on stdout; one per process, replaced on each call to follow the current stdout."""


def show_project_logs() -> None:
    """Print the project's INFO log lines as plain lines on stdout (the stream in use now, so tests capture them).

    The records still propagate, so handlers on the root logger (a user's, pytest's) see them too."""
    handler = _ProjectLogHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = [h for h in logger.handlers if not isinstance(h, _ProjectLogHandler)] + [handler]
        logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    show_project_logs()
    try:
        return args.func(args) or 0
    except HubPushError as error:  # a failed upload after a finished build: one line, the folder is kept
        print(f"exo2ego {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
