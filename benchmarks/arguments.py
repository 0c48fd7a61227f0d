"""The command lines of the benchmark scripts, generated from dataclasses: a script's flags, defaults and help are
the fields of its arguments dataclass (`transformers.HfArgumentParser`, the field conventions of
`exo2ego_base/command_line.py`: `num_frames` is `--num-frames` and `--num_frames`, `bool` fields are `--flag`,
`list[X]` fields take one or more values, `field(metadata=...)` carries the help, `choices`, `aliases`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from transformers import HfArgumentParser


def parse_arguments(cls: type, argv: Sequence[str] | None = None, description: str | None = None):
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
