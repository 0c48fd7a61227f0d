"""`exo2ego ablate`: verdicts of the pre-registered hypotheses, the run graph, the c(x) control, the statistics on
EgoBench folders with a planted effect and a null, and the command end to end."""

import json
import subprocess
import sys

import numpy as np
import pytest

from exo2ego.demo.plans import TASKS
from exo2ego.experiments.ablation import runs as ablation_runs
from exo2ego.experiments.ablation.design import (
    ARMS,
    ARMS_BY_NAME,
    DEFAULT_ARMS,
    FULL,
    HYPOTHESES,
    NO_PATTERN_CORPUS,
    PATTERN,
    PLAIN,
    hypothesis_verdict,
    write_preregistration,
)
from exo2ego.experiments.ablation.report import summarise
from exo2ego.experiments.ablation.runs import SeedRuns, save_unmapped
from exo2ego.experiments.mapping_probe import mapping_distances


def rows_with(arm: str, diff: float, low: float, high: float) -> dict:
    return {arm: {"diff": diff, "two_level_ci": [low, high]}}


@pytest.mark.parametrize(
    ("diff", "low", "high", "verdict"),
    [
        (-12.0, -20.0, -4.0, "held"),  # full - arm = +12 [+4, +20]
        (-8.0, -15.0, -1.0, "undecided"),  # above 0, but the estimate is under +10
        (-12.0, -25.0, 1.0, "undecided"),  # the interval reaches 0
        (-3.0, -9.0, 2.0, "failed"),  # full - arm at most +9: a 10-point gain is ruled out
    ],
)
def test_gain_hypothesis_verdicts(diff, low, high, verdict):
    gain = next(h for h in HYPOTHESES if h.name == "exo_stages_teach_the_pattern")
    assert hypothesis_verdict(gain, rows_with("no_stages_1_2", diff, low, high)) == verdict


def test_change_hypothesis_needs_every_arm():
    change = next(h for h in HYPOTHESES if h.effect == "change")
    fine, unsure, worse = (-1.0, -4.0, 2.0), (-3.0, -8.0, 2.0), (-12.0, -18.0, -6.0)
    assert hypothesis_verdict(change, {**rows_with("no_stages_1_2", *fine), **rows_with("no_kl", *fine)}) == "held"
    assert hypothesis_verdict(change, {**rows_with("no_stages_1_2", *fine), **rows_with("no_kl", *unsure)}) == (
        "undecided"
    )
    assert hypothesis_verdict(change, {**rows_with("no_stages_1_2", *unsure), **rows_with("no_kl", *worse)}) == (
        "failed"
    )


def test_preregistration_is_written_once_and_never_rewritten(tmp_path):
    write_preregistration(tmp_path, "hypotheses A\n")
    write_preregistration(tmp_path, "hypotheses A\n")  # the same design resumes
    with pytest.raises(SystemExit, match="pre-registers another design"):
        write_preregistration(tmp_path, "hypotheses B\n")
    assert (tmp_path / "preregistration.md").read_text() == "hypotheses A\n"


class RecordingDemo:
    """Stands in for `exo2ego.demo.pipeline.Demo` in the run-graph test: records every call and leaves the folders a
    finished run leaves, so the graph logic (what starts from what, with which arguments and corpus) is tested."""

    def __init__(self, out, calls):
        self.out, self.calls = out, calls
        self.models, self.evals, self.web_captions = out / "models", out / "eval", out / "web-captions"
        self.world, self.clips = out / "world", out / "ego-exoclip"

    def build_data(self):
        self.calls.append(("build_data",))
        for folder in (self.world / "egobench", self.clips, self.web_captions):
            folder.mkdir(parents=True)
        (self.clips / "README.md").write_text("")
        (self.web_captions / "README.md").write_text("")

    def build_model(self):
        self.calls.append(("build_model",))
        (self.models / "untrained").mkdir(parents=True)
        (self.models / "untrained" / "tokenizer.json").write_text("{}")

    def train(self, stage, start, output, extra, phase):
        self.calls.append(("train", stage, start.name, output.name, extra, self.web_captions.name))
        output.mkdir(parents=True)
        (output / "exo2ego_stage.json").write_text("{}")

    def evaluate(self, point, model, out):
        self.calls.append(("evaluate", model.name, out.name))
        out.mkdir(parents=True)
        (out / "results.json").write_text("{}")


def test_run_graph_shares_prefixes_and_applies_each_arm(tmp_path, monkeypatch):
    calls = []

    def stripped_corpus(self, out):
        calls.append(("strip", out.name))
        out.mkdir(parents=True)
        (out / "README.md").write_text("")

    def unmapped(model, out):
        calls.append(("unmapped", model.name, out.name))
        out.mkdir(parents=True)
        (out / "exo2ego_stage.json").write_text("{}")
        return out

    monkeypatch.setattr(SeedRuns, "write_stripped_corpus", stripped_corpus)
    monkeypatch.setattr(ablation_runs, "save_unmapped", unmapped)
    runs = SeedRuns(RecordingDemo(tmp_path / "seed0", calls))
    result = runs.run(ARMS)

    trains = [call[1:] for call in calls if call[0] == "train"]
    inits = {output: corpus for stage, _, output, _, corpus in trains if stage == "init"}
    assert inits == {"init": "web-captions", "init_no_pattern": "web-captions-no-pattern"}
    assert sorted(output for stage, _, output, *_ in trains if stage == "stage1") == ["stage1", "stage1_no_pattern"]
    stage2 = {output: (start, extra) for stage, start, output, extra, _ in trains if stage == "stage2"}
    # full, unmapped_at_test, no_lora and egoit_asks_pattern share one stage 2; every other setting has its own
    shared = ("no_stages_1_2", "no_lora", "unmapped_at_test", "egoit_asks_pattern")
    assert set(stage2) == {f"stage2_{arm.name}" for arm in ARMS if arm.name not in shared}
    assert stage2["stage2_no_kl"] == ("stage1", ("--ablations", "no_kl"))
    assert stage2["stage2_shuffled_pairs"] == ("stage1", ("--shuffle_pairs", "true"))
    assert stage2["stage2_no_pattern_words"] == ("stage1_no_pattern", ())
    stage3 = {output: (start, extra) for stage, start, output, extra, _ in trains if stage == "stage3"}
    assert "stage3_unmapped_at_test" not in stage3  # it reads the full pipeline's stage 3
    assert stage3["stage3_full"] == ("stage2_full", ())
    assert stage3["stage3_no_lora"] == ("stage2_full", ("--ablations", "no_lora"))
    assert stage3["stage3_no_stages_1_2"] == ("init", ("--allow_stage_mismatch", "true"))
    assert stage3["stage3_egoit_asks_pattern"] == ("stage2_full", ("--dataset_config", "synthetic_with_pattern"))
    assert ("unmapped", "stage3_full", "stage3_full_unmapped") in calls
    evaluated = {out: model for kind, model, out in (c for c in calls if c[0] == "evaluate")}
    assert evaluated["unmapped_at_test"] == "stage3_full_unmapped" and evaluated["full"] == "stage3_full"
    assert set(result["evals"]) == set(ARMS_BY_NAME)
    assert set(result["stage2"]) == set(result["stage3"]) == set(ARMS_BY_NAME) - {"no_stages_1_2", "unmapped_at_test"}

    calls.clear()  # a second run reuses every finished folder
    runs.run(ARMS)
    assert calls == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seeds", "0"], "two or more distinct seeds"),
        (["--seeds", "3", "3"], "two or more distinct seeds"),
        (["--jobs", "0"], "--jobs must be >= 1, got 0"),
    ],
)
def test_designs_without_seed_variance_are_refused(argv, message, tmp_path):
    from exo2ego.cli import main

    with pytest.raises(SystemExit, match=message):
        main(["ablate", "--quick", "--out", str(tmp_path / "out"), *argv])
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_the_default_design_holds_the_pre_registered_arms_and_controls():
    assert DEFAULT_ARMS[0] == FULL
    assert {arm for hypothesis in HYPOTHESES for arm in hypothesis.arms} <= set(DEFAULT_ARMS)
    controls = {arm.name for arm in ARMS if arm.role == "negative control" and arm.default}
    assert controls == {"shuffled_pairs", "unmapped_at_test", "no_pattern_words"}
    assert ARMS_BY_NAME["no_pattern_words"].exo_corpus == NO_PATTERN_CORPUS


def test_unmapped_copy_reads_x_where_the_model_read_f_of_x(tmp_path):
    """The c(x) control: F of the copy is the identity, and nothing else of the model changes."""
    import torch

    from exo2ego_base.tiny import build_tiny_model
    from modeling_exo2ego import Exo2EgoForConditionalGeneration

    model, processor = build_tiny_model(seed=0)
    with torch.no_grad():  # a trained F: far from the identity
        model.model.ego_to_exo.apply(lambda m: m.weight.add_(0.1) if isinstance(m, torch.nn.Conv2d) else None)
    model.save_pretrained(tmp_path / "stage3")
    processor.save_pretrained(tmp_path / "stage3")
    (tmp_path / "stage3" / "exo2ego_stage.json").write_text("{}")
    copy = Exo2EgoForConditionalGeneration.from_pretrained(save_unmapped(tmp_path / "stage3", tmp_path / "cx"))
    vision = model.config.ego_vision_config
    grid = vision.image_size // vision.patch_size
    features = torch.randn(2, vision.hidden_size, grid, grid)
    model.eval(), copy.eval()
    with torch.no_grad():
        assert not torch.equal(model.model.ego_to_exo(features), features)
        assert torch.equal(copy.model.ego_to_exo(features), features)
    changed = [
        name
        for name, value in copy.state_dict().items()
        if not torch.equal(value, model.state_dict()[name]) and "ego_to_exo" not in name
    ]
    assert changed == [] and not (tmp_path / "cx.partial").exists()


def write_eval(folder, correct_by_task):
    for task, correct_by_id in correct_by_task.items():
        shard = folder / "predictions" / task / "shard-00000-of-00001.jsonl"
        shard.parent.mkdir(parents=True)
        shard.write_text("".join(json.dumps({"id": qid, "correct": c}) + "\n" for qid, c in correct_by_id.items()))


def simulated_evals(tmp_path, effect_takes: float, seeds: int = 8, takes: int = 30, per_take: int = 6) -> dict:
    """EgoBench folders of `full` and `no_stages_1_2` per seed: the same noisy process (a seed-level accuracy and a
    take-level one), except that `full` is forced correct on the first `effect_takes` share of the takes."""
    rng = np.random.default_rng(0)
    evals = {}
    for seed in range(seeds):
        level = rng.uniform(0.2, 0.5)
        dirs = {}
        for arm in (FULL, "no_stages_1_2"):
            by_task = {}
            for task in TASKS:
                correct = {}
                for take in range(takes):
                    p = np.clip(level + rng.normal(0, 0.15), 0, 1)
                    forced = arm == FULL and take < effect_takes * takes and task == PATTERN
                    for action in range(per_take):
                        correct[f"{task}/take{take}/{action:02d}/q"] = bool(forced or rng.random() < p)
                by_task[task] = correct
            write_eval(tmp_path / f"s{seed}" / arm, by_task)
            dirs[arm] = str(tmp_path / f"s{seed}" / arm)
        evals[seed] = dirs
    return evals


def test_statistics_call_a_planted_effect_and_not_a_null(tmp_path):
    """The full pipeline forced correct on half the takes of the exo-only split is called a gain; the plain split,
    where both arms are the same noisy process, is not."""
    results = summarise(simulated_evals(tmp_path, effect_takes=0.5), (FULL, "no_stages_1_2"))
    effect, null = results[PATTERN]["no_stages_1_2"], results[PLAIN]["no_stages_1_2"]
    assert effect["two_level_ci"][1] < -10 and effect["sign_flip_p"] <= 2 / 256
    gain = next(h for h in HYPOTHESES if h.name == "exo_stages_teach_the_pattern")
    assert hypothesis_verdict(gain, results[PATTERN]) == "held"
    assert null["two_level_ci"][0] < 0 < null["two_level_ci"][1]  # the primary interval does not call the null
    assert results[PATTERN][FULL]["diff"] == 0.0 and results[PATTERN][FULL]["accuracy"] > effect["accuracy"]
    # per-seed differences are the arms' per-seed accuracy gaps, in points
    gaps = np.subtract(effect["accuracy_per_seed"], results[PATTERN][FULL]["accuracy_per_seed"])
    assert effect["per_seed"] == pytest.approx(gaps.tolist())


def test_arms_that_answered_other_questions_are_refused(tmp_path):
    write_eval(tmp_path / "full", {task: {f"{task}/t/00/q": True} for task in TASKS})
    write_eval(tmp_path / "other", {task: {f"{task}/t/01/q": True} for task in TASKS})
    evals = {seed: {FULL: tmp_path / "full", "no_kl": tmp_path / "other"} for seed in (0, 1)}
    with pytest.raises(ValueError, match="seed 0: no_kl and full answered different synthetic questions"):
        summarise(evals, (FULL, "no_kl"))


def run_quick_ablation(tmp_path, arms: list[str]) -> tuple[dict, str]:
    out = tmp_path / "ablation"
    argv = [
        "ablate",
        "--quick",
        "--out",
        str(out),
        "--results",
        str(tmp_path / "r"),
        *(["--arms", *arms] if arms else []),
    ]
    completed = subprocess.run(
        [sys.executable, "-m", "exo2ego", *argv], check=False, capture_output=True, text=True, timeout=3000
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]
    summary = json.loads((out / "results.json").read_text())
    assert summary["versions"]["torch"] and set(summary["git"]) == {"commit", "dirty"}  # provenance of the numbers
    assert json.loads((tmp_path / "r.json").read_text()) == summary and (tmp_path / "r.png").stat().st_size > 1000
    assert summary["seeds"] == [0, 1] and set(summary["verdicts"].values()) <= {"held", "failed", "undecided"}
    report = (out / "report.md").read_text()
    preregistration = (out / "preregistration.md").read_text()
    assert report.startswith("# Exo2Ego ablations") and preregistration.split("\n", 1)[1] in report
    worlds = [json.loads((out / f"seed{s}" / "world" / "egobench" / "build_info.json").read_text()) for s in (0, 1)]
    assert worlds[0] != worlds[1]  # each seed has its own world
    for task in TASKS:
        rows = summary["results"][task]
        assert list(rows) == list(summary["arms"]) and rows[FULL]["diff"] == 0.0
        for name, row in rows.items():
            assert f"| {name} | {summary['arms'][name]['role']} | {row['accuracy']:.1f} |" in report
    probe = summary["mechanism"]["seed0"][FULL]["stage2"]
    assert set(probe["distances"]) == {"fx_to_y", "x_to_y", "fx_to_other_y", "f_moves_x"}
    assert set(probe["pattern_probe"]) == {"y", "F(x)", "x", "x (own probe)"}
    return summary, report


@pytest.mark.timeout(3000)
def test_quick_ablation_end_to_end(tmp_path):
    """The command as users run it, at --quick sizes (wiring only, no learning): two seeds, the full pipeline and the
    control that reuses its model; the arms that train differently are tested in the run graph and the slow test."""
    summary, _ = run_quick_ablation(tmp_path, [FULL, "unmapped_at_test"])
    assert summary["verdicts"] == {}  # no pre-registered hypothesis is about these arms
    assert set(summary["mechanism"]["seed1"]) == {FULL}


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_quick_ablation_of_the_default_design(tmp_path):
    summary, _ = run_quick_ablation(tmp_path, [])
    assert set(summary["arms"]) == set(DEFAULT_ARMS) and set(summary["verdicts"]) == {h.name for h in HYPOTHESES}
    assert set(summary["mechanism"]["seed1"]) == {"full", "no_kl", "shuffled_pairs", "no_pattern_words"}


def test_mapping_probe_of_a_fresh_model_sees_f_as_the_identity():
    """F starts as the identity: c(F(x)) sits exactly where c(x) does, and F moves x by nothing."""
    import torch

    from exo2ego_base.tiny import build_tiny_model

    model, _ = build_tiny_model(seed=0)
    size = model.config.ego_vision_config.image_size
    generator = torch.Generator().manual_seed(0)
    batch = {
        key: torch.randn(3, model.config.num_frames, 3, size, size, generator=generator)
        for key in ("pixel_values_videos", "exo_pixel_values_videos")
    }
    distances = mapping_distances(model, [batch])
    assert distances["f_moves_x"] == 0.0
    assert distances["fx_to_y"] == pytest.approx(distances["x_to_y"]) and distances["fx_to_y"] > 0
    with torch.no_grad():
        model.model.ego_to_exo.apply(
            lambda module: module.weight.add_(0.1) if isinstance(module, torch.nn.Conv2d) else None
        )
    assert mapping_distances(model, [batch])["f_moves_x"] > 0
