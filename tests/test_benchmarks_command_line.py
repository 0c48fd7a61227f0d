"""The benchmark scripts' command lines come from their arguments dataclasses: every field has help, an unknown flag
or a failed check is a usage error (exit status 2), and no script builds flags by hand."""

import dataclasses
import importlib
import re
from pathlib import Path

import pytest

from benchmarks.gpu_setup import ScaleArguments
from exo2ego_base.command_line import parse_script_arguments

SCRIPTS = {
    "data_builder": "DataBuilderArguments",
    "data_clip_reader": "ClipReaderArguments",
    "data_distractors": "DistractorsArguments",
    "data_scale": "DataScaleArguments",
    "eval_scorers": "EvalScorersArguments",
    "gpu_eval": "EvalArguments",
    "gpu_memory": "MemoryArguments",
    "gpu_train_step": "TrainStepArguments",
    "input_pipeline": "InputPipelineArguments",
    "model_forward": "ModelForwardArguments",
    "serve": "ServeBenchmarkArguments",
    "train_steps": "TrainStepsArguments",
}
BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def arguments_class(script: str) -> type:
    return getattr(importlib.import_module(f"benchmarks.{script}"), SCRIPTS[script])


def test_every_script_with_a_main_is_listed_and_builds_no_flags_by_hand():
    with_main = {path.stem for path in BENCHMARKS.glob("*.py") if "\ndef main(" in path.read_text()}
    assert with_main == set(SCRIPTS)
    for path in BENCHMARKS.glob("*.py"):
        assert not re.search(r"add_argument\(|(?<!Hf)ArgumentParser\(", path.read_text()), path.name


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_field_has_help_and_the_defaults_parse(script):
    cls = arguments_class(script)
    for entry in dataclasses.fields(cls):
        if entry.init:
            assert entry.metadata.get("help"), f"{script} --{entry.name} has no help"
    assert isinstance(parse_script_arguments(cls, []), cls)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_an_unknown_flag_is_a_usage_error(script, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_script_arguments(arguments_class(script), ["--no-such-flag"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_scale_flags_fill_the_sizes_and_the_settings_keep_their_keys():
    train = parse_script_arguments(arguments_class("gpu_train_step"), ["--tiny", "--compile", "vision"])
    assert (train.scale, train.batch, train.frames, train.text_tokens, train.steps, train.warmup) == (
        "tiny",
        1,
        4,
        24,
        1,
        3,
    )
    assert train.out == "benchmarks/results/gpu_train_step_tiny.json"
    assert "scale" in train.settings() and not {"reduced", "tiny"} & set(train.settings())
    evaluation = parse_script_arguments(arguments_class("gpu_eval"), ["--reduced", "--warmup", "0"])
    assert (evaluation.scale, evaluation.questions, evaluation.warmup) == ("reduced", 3, 0)
    assert parse_script_arguments(arguments_class("gpu_memory"), []).scale == "paper"
    with pytest.raises(ValueError, match="--tiny: not allowed with argument --reduced"):
        ScaleArguments(reduced=True, tiny=True)


@pytest.mark.parametrize(
    ("script", "argv", "message"),
    [
        ("gpu_train_step", ["--reduced", "--tiny"], "not allowed with argument --reduced"),
        ("input_pipeline", ["--workers", "2"], "--workers must include 1"),
        ("gpu_memory", ["--workload", "nothing"], "invalid choice"),
    ],
)
def test_a_failed_check_is_a_usage_error(script, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_script_arguments(arguments_class(script), argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_flags_keep_their_old_spellings():
    train = parse_script_arguments(
        arguments_class("gpu_train_step"),
        ["--no-checkpoint-convnets", "--hf-input-grads", "--no-activation-count", "--checkpoint-every", "2"],
    )
    assert (train.checkpoint_convnets, train.hf_input_grads, train.no_activation_count, train.checkpoint_every) == (
        False,
        True,
        True,
        2,
    )
    scale = parse_script_arguments(arguments_class("data_scale"), ["--sizes", "200", "800", "--builders", "egoit"])
    assert (scale.sizes, scale.builders) == ([200, 800], ["egoit"])
