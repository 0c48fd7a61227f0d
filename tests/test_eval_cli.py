"""`exo2ego eval` takes its flags from the dataclasses it fills: every field, under its own name, with its default."""

import dataclasses

import pytest

from eval.cli import EvalCommandArguments
from eval.config import EvalConfig
from eval.data import video_root_map
from exo2ego.cli import build_parser
from exo2ego_base.command_line import dataclass_from_args

REQUIRED = ["--model", "MODEL", "--data", "DATA", "--out", "OUT"]
# One non-default setting per EvalConfig field: (flags after the field's own `--name`, the value it must give).
NON_DEFAULT = {
    "tasks": (["synthetic,egomcq"], "synthetic,egomcq"),
    "scorer": (["option_loglik"], "option_loglik"),
    "prompt": (["basic"], "basic"),
    "num_frames": (["3"], 3),
    "limit": (["5"], 5),
    "split": (["validation"], "validation"),
    "video_roots": (["root", "egoschema=elsewhere"], ["root", "egoschema=elsewhere"]),
    "max_new_tokens": (["7"], 7),
    "open_max_new_tokens": (["9"], 9),
    "option_score": (["sum"], "sum"),
    "option_chunk_size": (["11"], 11),
    "batch_size": (["3"], 3),
    "bootstrap_resamples": (["13"], 13),
    "seed": (["17"], 17),
    "judge_url": (["http://127.0.0.1:8000/v1/chat/completions"], "http://127.0.0.1:8000/v1/chat/completions"),
    "judge_model": (["org/judge@rev"], "org/judge@rev"),
    "sentence_encoder": (["encoders/minilm"], "encoders/minilm"),
    "decoded_cache_mb": (["0"], 0),
    "check_videos": (["false"], False),
    "compare": (["paper"], "paper"),
}


def parse(*flags):
    return build_parser().parse_args(["eval", *REQUIRED, *flags])


def test_defaults_are_the_dataclass_defaults():
    args = parse()
    assert dataclass_from_args(EvalConfig, args) == EvalConfig()
    assert dataclass_from_args(EvalCommandArguments, args) == EvalCommandArguments("MODEL", "DATA", "OUT")


def test_the_table_covers_every_field():
    assert set(NON_DEFAULT) == {entry.name for entry in dataclasses.fields(EvalConfig)}


@pytest.mark.parametrize("name", NON_DEFAULT)
@pytest.mark.parametrize("spelling", ["dashes", "underscores"])
def test_every_field_is_a_flag_of_its_name(name, spelling):
    values, expected = NON_DEFAULT[name]
    flag = "--" + (name.replace("_", "-") if spelling == "dashes" else name)
    config = dataclass_from_args(EvalConfig, parse(flag, *values))
    assert expected != getattr(EvalConfig(), name)
    assert config == dataclasses.replace(EvalConfig(), **{name: expected})


def test_switches_without_values():
    args = parse("--no-check-videos", "--no-progress", "--overwrite", "--trust-remote-code")
    assert dataclass_from_args(EvalConfig, args).check_videos is False
    command = dataclass_from_args(EvalCommandArguments, args)
    assert (command.progress, command.overwrite, command.trust_remote_code) == (False, True, True)


def test_a_choice_outside_the_list_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse("--scorer", "best_guess")
    assert "invalid choice: 'best_guess'" in capsys.readouterr().err


def test_video_roots_by_task_and_for_every_task():
    assert video_root_map(["root", "egoschema=elsewhere", "no_task=x"]) == {"": "no_task=x", "egoschema": "elsewhere"}
