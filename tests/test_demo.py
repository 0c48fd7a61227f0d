"""`exo2ego demo --quick` end to end: every phase runs and leaves the artifacts a user looks at."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from exo2ego.demo.cli import prepare_out
from exo2ego.demo.gates import GATES
from exo2ego.demo.pipeline import Demo
from exo2ego.demo.plans import EVAL_POINTS, PLANS, STAGES, TASKS
from exo2ego.demo.report import targets
from exo2ego_base.run_folder import FOLDER_FILE
from train.stage_folder import stage_run_folder


def run_quick_demo(out) -> dict:
    completed = subprocess.run(
        [sys.executable, "-m", "exo2ego", "demo", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]
    assert "ground truth:" in completed.stdout  # the reloaded release answered a held-out question
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    return out, run_quick_demo(out)


def test_quick_demo_writes_report_plots_and_accuracies(quick_demo):
    out, summary = quick_demo
    assert set(summary["accuracy"]) == set(TASKS) == set(summary["text_only_baseline"])
    for task in TASKS:
        assert set(summary["accuracy"][task]) == set(EVAL_POINTS)
        for row in summary["accuracy"][task].values():
            assert 0.0 <= row["accuracy"] <= 100.0 and row["n"] > 0
            assert row["ci"][0] <= row["accuracy"] <= row["ci"][1]
    # The gates were measured, each a fraction with its verdict.
    assert set(summary["gates"]) == {gate.name for gate in GATES}
    for gate in summary["gates"].values():
        assert 0.0 <= gate["value"] <= 1.0 and gate["holds"] == next(g for g in GATES if g.name == gate["name"]).holds(
            gate["value"]
        )
    for name in ("report.md", "plots/losses.png", "plots/accuracy_per_stage.png"):
        assert (out / name).stat().st_size > 1000, name
    assert set(summary["losses"]) == set(STAGES) and "kl_loss" in summary["losses"]["stage2"]
    assert summary["versions"]["transformers"] and summary["total_sec"] > 0
    report = (out / "report.md").read_text()
    assert "stage3" in report and "KL(y || F(x))" in report  # stage 2's KL curve made it into the report
    assert "synthetic_pattern" in report and "Gates" in report
    stage2 = json.loads((out / "models" / "stage2" / "trainer_state.json").read_text())["log_history"]
    assert any("kl_loss" in entry and "ccl_loss" in entry for entry in stage2)


def test_quick_demo_release_is_ego_only_and_self_described(quick_demo):
    out, _ = quick_demo
    release = out / "release"
    config = json.loads((release / "config.json").read_text())
    assert config["include_exo_branch"] is False and "AutoModel" in config["auto_map"]
    for name in ("model.safetensors", "processor_config.json", "tokenizer.json", "modeling_exo2ego.py", "README.md"):
        assert (release / name).is_file(), name
    assert "model-index" in (release / "README.md").read_text()
    results = json.loads((release / "results.json").read_text())
    assert results["tasks"]["synthetic"]["metrics"]["accuracy"]["n"] > 0
    for stage in STAGES:
        assert (out / "models" / stage / "exo2ego_stage.json").is_file()


def test_quick_demo_limits_egoit_in_stage_3_only(quick_demo):
    out, summary = quick_demo
    rows = json.loads((out / "world" / "egoit" / "build_info.json").read_text())["counts"]["rows"]
    fraction = summary["plan"]["egoit_fraction"]
    assert 0 < fraction < 1
    for stage in STAGES:
        arguments = json.loads((out / "models" / stage / "exo2ego_stage.json").read_text())["arguments"]["data"]
        expected = round(fraction * rows) if stage == "stage3" else None
        assert arguments["max_train_samples"] == expected, stage
    videos = list((out / "world" / "takes").rglob("*.mp4"))
    assert videos and all("downscaled/448" in video.as_posix() for video in videos)  # only what the pipeline reads


def test_stage_3_takes_a_seeded_draw_of_egoit(tmp_path):
    """`Demo.train` turns the EgoIT fraction (the plan's, or one passed in) into `--max_train_samples` for stage 3
    only, counting the rows in EgoIT's build_info, drawn with the plan's `--subset_seed` (or the first rows)."""
    demo = Demo(tmp_path, PLANS["full"], seed=0)
    info = demo.world / "egoit" / "build_info.json"
    info.parent.mkdir(parents=True)
    info.write_text(json.dumps({"counts": {"rows": 3500}}))
    launched = {}
    demo.script = lambda phase, *argv: launched.update({phase: list(argv)})

    def value(phase, flag="--max_train_samples"):
        argv = launched[phase]
        return argv[argv.index(flag) + 1] if flag in argv else None

    demo.train("stage3", "stage2")
    demo.train("stage3", "stage2", phase="all", egoit_fraction=1.0)
    demo.train("stage3", "stage2", phase="a fifth", egoit_fraction=0.2)
    demo.train("init", "untrained")
    assert PLANS["full"].egoit_fraction == 0.1 and value("train stage3") == "350"
    assert value("all") is None and value("a fifth") == "700" and value("train init") is None
    assert value("train stage3", "--subset_seed") == value("a fifth", "--subset_seed") == "0"
    assert value("all", "--subset_seed") is None and value("train init", "--subset_seed") is None
    demo.plan = replace(demo.plan, egoit_subset_seed=None)
    demo.train("stage3", "stage2", phase="first rows")
    assert value("first rows") == "350" and value("first rows", "--subset_seed") is None


def test_egoit_fractions_outside_0_1_are_refused(capsys):
    from exo2ego.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["demo", "--egoit-fraction", "1"]).func is not None
    for value in ("0", "1.5", "-0.1"):
        args = parser.parse_args(["demo", "--egoit-fraction", value])
        with pytest.raises(SystemExit):
            args.func(args)  # the field's check, before the demo runs
        assert f"must lie in (0, 1], got {value}" in capsys.readouterr().err


def test_demo_refuses_to_replace_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    completed = subprocess.run(
        [sys.executable, "-m", "exo2ego", "demo", "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode != 0 and "is not an earlier demo output" in completed.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_demo_refuses_another_commands_folder_and_replaces_an_earlier_demo(tmp_path):
    """The demo's --out is a run folder: a folder another command recorded is refused naming what wrote it, and an
    earlier demo's folder, interrupted or finished, is replaced whole."""
    stage = stage_run_folder(tmp_path / "stage")
    stage.finish({"stage": "stage1"})
    with pytest.raises(SystemExit, match=r"--out \S+stage is a training stage folder \(exo2ego_stage.json\)"):
        prepare_out(stage.path)
    assert stage.is_finished()  # untouched

    interrupted = prepare_out(tmp_path / "demo")
    (interrupted.path / "world").mkdir()  # a phase's output, then the run stopped before summary.json
    again = prepare_out(tmp_path / "demo")
    assert sorted(path.name for path in again.path.iterdir()) == [FOLDER_FILE] and again.is_mine()
    again.finish({"total_sec": 1.0})
    (again.path / "report.md").write_text("")
    assert prepare_out(tmp_path / "demo").is_finished() is False
    assert sorted(path.name for path in (tmp_path / "demo").iterdir()) == [FOLDER_FILE]

    unrecorded = tmp_path / "finished"  # a finished demo whose folder records no identity: its summary.json says
    unrecorded.mkdir()
    (unrecorded / "summary.json").write_text("{}")
    assert sorted(path.name for path in prepare_out(unrecorded).path.iterdir()) == [FOLDER_FILE]


@pytest.mark.slow
def test_same_seed_gives_the_same_numbers(quick_demo, tmp_path):
    _, first = quick_demo
    second = run_quick_demo(tmp_path / "again")
    assert first["accuracy"] == second["accuracy"]


@pytest.mark.parametrize(
    "plain, pattern_low, met",
    [
        ((16.0, 48.0), 21.0, (True, True)),
        ((27.8, 51.2), 21.0, (False, True)),  # 40% but not twice the untrained model
        ((16.0, 39.0), 21.0, (False, True)),
        ((16.0, 48.0), 18.3, (True, False)),  # above the text-only baseline (17%) but not above chance (20%)
    ],
)
def test_targets_need_twice_untrained_and_a_pattern_interval_above_chance(plain, pattern_low, met):
    def row(accuracy, low=0.0):
        return {"accuracy": accuracy, "ci": [low, accuracy + 4], "n": 300}

    summary = {
        "accuracy": {
            "synthetic": {"untrained": row(plain[0]), "stage3": row(plain[1])},
            "synthetic_pattern": {"untrained": row(20.0), "stage3": row(pattern_low + 4, pattern_low)},
        },
        "text_only_baseline": {"synthetic": 22.0, "synthetic_pattern": 17.0},
        "chance": {"synthetic": 20.0, "synthetic_pattern": 20.0},
    }
    assert tuple(targets(summary).values()) == met


@pytest.fixture(scope="module", params=[0, 1, 2])
def full_demo(request, tmp_path_factory) -> dict:
    """`exo2ego demo --seed S` (what `make demo` runs for seed 0), once per seed for the tests below."""
    out = tmp_path_factory.mktemp(f"full{request.param}") / "out"
    completed = subprocess.run(
        [sys.executable, "-m", "exo2ego", "demo", "--out", str(out), "--seed", str(request.param)],
        check=False,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]
    return {"out": out, "summary": json.loads((out / "summary.json").read_text())}


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_full_demo_meets_its_learning_target(full_demo):
    """The README's claims, for seeds 0-2: the gates hold; after stage 3, `synthetic` is at least 40% and twice the
    untrained model; every stage's training loss falls (mean of its last quarter of logged values below that of its
    first quarter)."""
    out, summary = full_demo["out"], full_demo["summary"]
    assert all(gate["holds"] for gate in summary["gates"].values()), summary["gates"]
    target = "synthetic: stage 3 >= 40% and >= 2x untrained"
    assert targets(summary)[target], summary["accuracy"]["synthetic"]
    for stage in STAGES:
        history = json.loads((out / "models" / stage / "trainer_state.json").read_text())["log_history"]
        losses = [entry["loss"] for entry in history if "loss" in entry]
        quarter = max(1, len(losses) // 4)
        assert sum(losses[-quarter:]) < sum(losses[:quarter]), (stage, losses)


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.xfail(
    reason="benchmarks/results/demo_synthetic.md 'The pattern does not reach the ego side': measured at chance after "
    "stage 3 on seeds 0-2, with every gate met; this test turns green when exo-only knowledge reaches the ego side",
    strict=False,
)
def test_full_demo_transfers_the_exo_only_pattern(full_demo):
    """The second target: after stage 3, `synthetic_pattern`'s 95% interval lies above chance and its text-only
    baseline (what only the exo side was taught reached ego understanding)."""
    summary = full_demo["summary"]
    target = "synthetic_pattern: stage 3 CI above chance and the text-only baseline"
    assert targets(summary)[target], (summary["accuracy"]["synthetic_pattern"], summary["text_only_baseline"])
