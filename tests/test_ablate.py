"""`exo2ego ablate`: the paired statistics on hand-made cases, the run graph, and the command end to end."""

import json
import subprocess
import sys
from dataclasses import asdict, replace

import numpy as np
import pytest

from exo2ego.ablate import (
    FULL,
    PLANS,
    VARIANTS,
    Ablation,
    correctness_matrix,
    paired_summary,
    record_sizes,
    setting_name,
)
from exo2ego.demo import PLANS as DEMO_PLANS


def test_paired_difference_of_identical_answers_is_exactly_zero():
    """An unpaired comparison of two 50% models has a wide interval; the same answers paired differ by exactly 0."""
    correct = np.array([[1, 0] * 50, [1, 1, 0, 0] * 25], dtype=float)  # two seeds, 100 questions
    row = paired_summary(correct, correct.copy())
    assert row["accuracy"] == 50.0 and row["per_seed"] == [50.0, 50.0]
    assert row["diff"] == 0.0 and row["diff_ci"] == [0.0, 0.0]
    assert row["ci"][0] < 45.0 and row["ci"][1] > 55.0  # questions vary, so the accuracy itself is uncertain


def test_paired_difference_counts_seed_averaged_wins_and_losses():
    full = np.array([[1, 1, 0, 0] * 25, [1, 0, 0, 0] * 25], dtype=float)  # per question mean: 1, .5, 0, 0
    variant = np.array([[1, 1, 1, 0] * 25], dtype=float)  # one seed is enough to pair on the questions
    row = paired_summary(variant, full, resamples=500)
    # per question: 1-1, 1-.5, 1-0, 0-0 -> mean .375; full 37.5%, variant 75%
    assert row["diff"] == pytest.approx(37.5) and row["accuracy"] == pytest.approx(75.0)
    assert 0.0 < row["diff_ci"][0] < 37.5 < row["diff_ci"][1] < 100.0
    assert row["n_questions"] == 100 and row["n_seeds"] == 1
    with pytest.raises(ValueError, match="same"):
        paired_summary(variant[:, :10], full)


def write_predictions(folder, correct_by_id):
    shard = folder / "predictions" / "synthetic" / "shard-00000-of-00001.jsonl"
    shard.parent.mkdir(parents=True)
    shard.write_text("".join(json.dumps({"id": qid, "correct": value}) + "\n" for qid, value in correct_by_id.items()))


def test_correctness_matrix_aligns_seeds_on_question_ids(tmp_path):
    write_predictions(tmp_path / "a", {"q2": False, "q1": True, "q3": None})  # None: an invalid answer, wrong
    write_predictions(tmp_path / "b", {"q1": False, "q3": True, "q2": True})
    ids, matrix = correctness_matrix([tmp_path / "a", tmp_path / "b"])
    assert ids == ["q1", "q2", "q3"]
    assert matrix.tolist() == [[1, 0, 0], [0, 1, 1]]
    write_predictions(tmp_path / "c", {"q1": True})
    with pytest.raises(ValueError, match="no prediction for 2"):
        correctness_matrix([tmp_path / "c"], ids)


class RecordingDemo:
    """Stands in for `exo2ego.demo.Demo` in the run-graph test: records every call and leaves the folders a
    finished run leaves, so the graph logic (what starts from what, which arguments) is what is tested."""

    def __init__(self, out, calls):
        self.models, self.evals, self.calls = out / "models", out / "eval", calls

    def build_model(self):
        self.calls.append(("build_model",))
        (self.models / "untrained").mkdir(parents=True)
        (self.models / "untrained" / "config.json").write_text("{}")
        (self.models / "untrained" / "tokenizer.json").write_text("{}")

    def train(self, stage, start, output, extra, phase, egoit_fraction):
        self.calls.append(("train", stage, start.name, output.name, extra, egoit_fraction))
        output.mkdir(parents=True)
        config = json.loads((start / "config.json").read_text())
        (output / "config.json").write_text(json.dumps(config))
        (output / "exo2ego_stage.json").write_text("{}")

    def evaluate(self, point, model, out):
        self.calls.append(("evaluate", model.name, out.name))
        out.mkdir(parents=True)
        (out / "results.json").write_text("{}")


def test_run_graph_shares_prefixes_and_applies_each_variant(tmp_path):
    calls = []
    ablation = Ablation(tmp_path, PLANS["quick"], world_seed=0)
    ablation.demo = lambda seed: RecordingDemo(tmp_path / f"seed{seed}", calls)
    evals = ablation.run_seed(0, VARIANTS, (1.0, 0.1))

    trains = [call[1:] for call in calls if call[0] == "train"]
    assert sum(stage == "init" for stage, *_ in trains) == 1 and sum(stage == "stage1" for stage, *_ in trains) == 1
    stage2 = {output: (start, extra) for stage, start, output, extra, _ in trains if stage == "stage2"}
    # full and no_lora share one stage 2; every other stage-2 setting has its own
    assert set(stage2) == {
        "stage2_full",
        "stage2_no_kl",
        "stage2_no_g_ccl",
        "stage2_mlp_mapping",
        "stage2_kl_token_softmax",
        "stage2_kl_pooled",
        "stage2_kl_gaussian_batch",
    }
    assert stage2["stage2_no_kl"] == ("stage1", ("--ablations", "no_kl"))
    assert stage2["stage2_mlp_mapping"] == ("stage1", ("--mapping_type", "mlp"))
    assert stage2["stage2_kl_token_softmax"] == ("stage1", ("--kl_mode", "token_softmax"))
    assert stage2["stage2_kl_pooled"] == ("stage1", ("--kl_mode", "pooled"))
    assert stage2["stage2_kl_gaussian_batch"] == ("stage1", ("--kl_mode", "gaussian_batch"))

    stage3 = {output: (start, extra, share) for stage, start, output, extra, share in trains if stage == "stage3"}
    assert len(stage3) == 2 * len(VARIANTS)
    assert stage3["stage3_egoit_all_full"] == ("stage2_full", (), 1.0)
    assert stage3["stage3_egoit_all_no_lora"] == ("stage2_full", ("--ablations", "no_lora"), 1.0)
    assert stage3["stage3_egoit_all_no_stages_1_2"] == ("init", ("--allow_stage_mismatch", "true"), 1.0)
    assert stage3["stage3_egoit_10pct_no_kl"] == ("stage2_no_kl", (), 0.1)
    assert set(evals) == {(setting_name(f), v.name) for f in (1.0, 0.1) for v in VARIANTS}

    calls.clear()  # a second run reuses every finished folder
    ablation.run_seed(0, VARIANTS, (1.0, 0.1))
    assert calls == []


def test_a_folder_of_other_sizes_is_refused_but_not_for_other_egoit_or_eval_batch_sizes(tmp_path):
    """Runs are reused, so their sizes must match; the demo plan's EgoIT fraction (each stage-3 run is given its
    setting's fraction) and EgoBench batch size are not among them."""
    plan = DEMO_PLANS["quick"]
    record_sizes(tmp_path, {"demo_plan": asdict(plan), "world_seed": 0})
    record_sizes(
        tmp_path, {"demo_plan": asdict(replace(plan, egoit_fraction=0.3, eval_batch_size=1)), "world_seed": 0}
    )
    assert json.loads((tmp_path / "ablation_sizes.json").read_text())["demo_plan"]["egoit_fraction"] == 0.3
    longer = replace(plan, steps={**plan.steps, "stage3": plan.steps["stage3"] + 1})
    for sizes in ({"demo_plan": asdict(longer), "world_seed": 0}, {"demo_plan": asdict(plan), "world_seed": 1}):
        with pytest.raises(SystemExit, match="holds runs of other sizes"):
            record_sizes(tmp_path, sizes)


@pytest.mark.timeout(1800)
def test_quick_ablation_end_to_end(tmp_path):
    """The command as users run it, at --quick sizes and one seed (the statistics are tested on hand-made cases)."""
    out = tmp_path / "ablation"
    results = tmp_path / "copy" / "ablation.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "exo2ego",
            "ablate",
            "--quick",
            "--seeds",
            "0",
            "--egoit-fractions",
            "0.5",
            "--out",
            str(out),
            "--variants",
            FULL,
            "no_stages_1_2",
            "kl_pooled",
            "--results",
            str(results),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]
    summary = json.loads((out / "results.json").read_text())
    assert summary["versions"]["torch"] and set(summary["git"]) == {"commit", "dirty"}  # provenance of the numbers
    assert json.loads(results.read_text()) == summary
    assert (out / "ablation.png").stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert "exo2ego ablate --quick" in report and "paired" in report
    probe = summary["mapping_distances"]["seed0"]["stage2_full"]  # F moved in stage 2; distances are finite
    assert set(probe) == {"fx_to_y", "x_to_y", "fx_to_other_y", "f_moves_x"} and probe["f_moves_x"] > 0
    seen = summary["vision_probe"]
    assert set(seen) == {"exo", "ego"} and all(set(groups) == {"colour", "shape"} for groups in seen.values())
    assert all(0.0 <= value <= 1.0 for groups in seen.values() for value in groups.values())
    assert f"| exo | {100 * seen['exo']['colour']:.1f}% |" in report
    for setting, block in summary["results"].items():
        rows = block["variants"]
        assert set(rows) == {FULL, "no_stages_1_2", "kl_pooled"}
        assert rows[FULL]["diff"] == 0.0 and rows[FULL]["diff_ci"] == [0.0, 0.0]
        dirs = [out / f"seed{seed}" / "eval" / f"{setting}_no_stages_1_2" for seed in summary["seeds"]]
        _, correct = correctness_matrix(dirs)
        assert rows["no_stages_1_2"]["accuracy"] == pytest.approx(100 * correct.mean())
        assert f"| no_stages_1_2 | {rows['no_stages_1_2']['accuracy']:.1f} |" in report


def test_mapping_probe_of_a_fresh_model_sees_f_as_the_identity():
    """F starts as the identity: c(F(x)) sits exactly where c(x) does, and F moves x by nothing."""
    import torch

    from exo2ego.mapping_probe import mapping_distances
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
