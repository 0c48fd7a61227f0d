"""Command-line interfaces generated from dataclasses: a command's flags, defaults and help are the fields of its
argument dataclasses (transformers' `HfArgumentParser`), so the fields are the one place an option is written.

A field `num_frames` is the flag `--num-frames` (and `--num_frames`); `field(metadata=...)` carries the help and
any other `add_argument` keyword (`aliases` for another spelling, `choices`, `metavar`, `action="extend"` for a list
flag that may also be repeated). `Literal[...]` fields take one of their values, `bool` fields are `--flag` (and
`--no-flag` when they default to True), `list[X]` fields take one or more values. A check that needs the values
(a range, two fields together) lives in the dataclass's `__post_init__` and raises `ValueError`, which the command
reports as argparse reports a bad flag (usage line, message, exit status 2). `add_command` makes an `exo2ego`
subcommand; `parse_script_arguments` reads the flags of a standalone script (`python train/build_base.py`, the
benchmarks).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import fields

from transformers import HfArgumentParser


def dataclass_from_args(cls: type, args: argparse.Namespace):
    """The `cls` dataclass filled from the parsed flags of its fields (its `__post_init__` checks run)."""
    return cls(**{entry.name: getattr(args, entry.name) for entry in fields(cls) if entry.init})


def add_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    arguments: Sequence[type],
    run: Callable[..., int | None],
    help: str,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """Add the subcommand `name` whose flags are the fields of the `arguments` dataclasses; it calls `run` with one
    instance of each, in that order. A `ValueError` while filling them (a field's check) ends the command as an
    argparse error would: the usage line, the message and exit status 2. The parser keeps the dataclasses as
    `argument_dataclasses` (tests check every flag of every command comes from one)."""
    parser = subparsers.add_parser(
        name,
        parents=[HfArgumentParser(list(arguments), add_help=False)],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help=help,
        description=description,
    )

    def run_command(args: argparse.Namespace) -> int | None:
        try:
            values = [dataclass_from_args(cls, args) for cls in arguments]
        except ValueError as error:
            parser.error(str(error))
        return run(*values)

    parser.set_defaults(func=run_command)
    parser.argument_dataclasses = tuple(arguments)
    return parser


def parse_script_arguments(cls: type, argv: Sequence[str] | None = None, description: str | None = None):
    """The `cls` dataclass filled from `argv` (default: the process's arguments). An unknown flag, a bad value and a
    failed check of the dataclass's `__post_init__` (a `ValueError`) all end as argparse ends on a bad flag: the
    usage line, the message and exit status 2."""
    parser = HfArgumentParser(cls, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    try:
        args, unknown = parser.parse_args_into_dataclasses(
            argv, return_remaining_strings=True, look_for_args_file=False
        )
    except ValueError as error:  # a field's check
        parser.error(str(error))
    if unknown:  # argparse's own message and exit status (HfArgumentParser would raise a ValueError)
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args
