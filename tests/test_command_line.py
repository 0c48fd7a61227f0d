"""Every `exo2ego` command's flags come from the fields of its argument dataclasses (exo2ego_base.command_line)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields

import pytest

from exo2ego.cli import build_parser
from exo2ego_base.command_line import add_command


def leaf_commands(parser: argparse.ArgumentParser, prefix: str = "exo2ego") -> dict[str, argparse.ArgumentParser]:
    """`{"exo2ego data synth": parser, ...}`: every command that runs something, sub-sub-commands included."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.update(leaf_commands(child, f"{prefix} {name}"))
    return found or {prefix: parser}


COMMANDS = leaf_commands(build_parser())


def test_the_command_tree_is_walked():
    assert {"exo2ego eval", "exo2ego data synth", "exo2ego demo", "exo2ego serve"} <= COMMANDS.keys()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_flag_is_a_dataclass_field(name):
    parser = COMMANDS[name]
    classes = getattr(parser, "argument_dataclasses", None)
    assert classes, f"{name} is not made by exo2ego_base.command_line.add_command"
    names = {entry.name for cls in classes for entry in fields(cls)}
    flags = {action.dest for action in parser._actions if not isinstance(action, argparse._HelpAction)}
    assert flags <= names, f"{name}: flags without a field: {sorted(flags - names)}"
    complements = ("--no_", "--no-")  # the negations HfArgumentParser adds to True-default bool fields
    for action in parser._actions:
        if not isinstance(action, argparse._HelpAction) and not action.option_strings[0].startswith(complements):
            assert action.help, f"{name} {action.option_strings[0]} has no help"


@dataclass
class Window:
    start: float = field(default=0.0, metadata={"help": "first second"})
    end: float = field(default=1.0, metadata={"help": "last second"})
    names: list[str] = field(default_factory=list, metadata={"help": "repeatable", "action": "extend"})
    strict: bool = field(default=True, metadata={"help": "refuse empty windows"})

    def __post_init__(self):
        if self.end <= self.start:
            raise ValueError(f"--end ({self.end}) must lie after --start ({self.start})")


def parse_and_run(argv: list[str]):
    parser = argparse.ArgumentParser(prog="tool")
    calls = []
    add_command(parser.add_subparsers(), "window", (Window,), lambda window: calls.append(window) or 0, help="w")
    args = parser.parse_args(argv)
    return args.func(args), calls


def test_flags_defaults_lists_and_negations_from_the_fields():
    assert parse_and_run(["window"])[1] == [Window()]
    status, (window,) = parse_and_run(["window", "--start", "2", "--end=3", "--names", "a", "b", "--names", "c"])
    assert status == 0 and window == Window(2.0, 3.0, ["a", "b", "c"])
    assert parse_and_run(["window", "--no-strict"])[1][0].strict is False
    assert parse_and_run(["window", "--no_strict"])[1][0].strict is False


def test_a_failed_field_check_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stopped:
        parse_and_run(["window", "--start", "2"])
    assert stopped.value.code == 2
    assert "tool window: error: --end (1.0) must lie after --start (2.0)" in capsys.readouterr().err
