"""EgoBench runs on a toy benchmark and the tiny model: metrics wiring, determinism, resume, sharding, bad input."""

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eval import metrics, scorers
from eval.config import EvalConfig
from eval.data import EvalDataError
from eval.records import read_jsonl
from eval.runner import RunConfigError, evaluate
from eval.toy import MIR_RELEVANCE, toy_tables, write_toy_egobench

FAST = dict(bootstrap_resamples=100, max_new_tokens=8, open_max_new_tokens=8)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_egobench(tmp_path_factory.mktemp("toy") / "egobench")


def _records(out, task):
    records = []
    for path in sorted((out / "predictions" / task).glob("*.jsonl")):
        records += list(read_jsonl(path))  # a torn last line is skipped
    return records


def _without_timing(results):
    results = copy.deepcopy(results)
    results.pop("timing")
    return results


def test_every_task_end_to_end(tmp_path, toy, tiny):
    out = tmp_path / "run"
    results = evaluate(*tiny, str(toy), str(out), EvalConfig(**FAST), show_progress=False)
    tasks = results["tasks"]
    assert set(tasks) == {"egoschema", "qaego4d", "charades_ego", "epic_mir", "egomcq", "synthetic"}

    # Accuracy equals the records' correctness; letter_logprob predicts the argmax of its option scores.
    synthetic = _records(out, "synthetic")
    assert len(synthetic) == 6
    for record in synthetic:
        assert record["prediction"] == int(np.argmax(record["option_scores"]))
        assert record["correct"] == (record["prediction"] == record["answer_idx"])
    assert tasks["synthetic"]["metrics"]["accuracy"]["value"] == pytest.approx(
        100 * np.mean([r["correct"] for r in synthetic])
    )

    # EgoSchema: the unlabeled row is predicted and exported, not scored.
    assert tasks["egoschema"]["counts"] == {"mcq": 3, "invalid": 0, "unlabeled": 1}
    assert tasks["egoschema"]["metrics"]["accuracy"]["n"] == 2
    submission = (out / "exports" / "egoschema_submission.csv").read_text().splitlines()
    assert submission[0] == "q_uid,answer" and len(submission) == 4 and submission[3].startswith("q2,")

    # EgoMCQ inter/intra from meta.types (1 inter, 2 intra), two questions each.
    assert tasks["egomcq"]["metrics"]["accuracy_inter"]["n"] == 2 == tasks["egomcq"]["metrics"]["accuracy_intra"]["n"]

    # EK-100 MIR: mAP/nDCG recomputed from the per-sentence scores of the records.
    mir = sorted(_records(out, "epic_mir"), key=lambda record: record["video_index"])
    similarity = np.array([record["mean_logprob"] for record in mir])
    assert similarity.shape == MIR_RELEVANCE.shape
    assert tasks["epic_mir"]["metrics"]["map"]["value"] == pytest.approx(
        100 * metrics.mir_map(similarity, MIR_RELEVANCE)
    )
    assert tasks["epic_mir"]["metrics"]["ndcg"]["value"] == pytest.approx(
        100 * metrics.mir_ndcg(similarity, MIR_RELEVANCE)
    )

    # Charades-Ego: mAP over all classes from the class-score records, next to MCQ accuracy.
    classes = [record for record in _records(out, "charades_ego") if record["part"] == "classes"]
    assert len(classes) == 3 and all(len(record["mean_logprob"]) == 6 for record in classes)
    assert {"map", "mcq_accuracy"} <= set(tasks["charades_ego"]["metrics"])

    # Open-ended QAEgo4D: judge-free metrics; closed accuracy by subset.
    assert {"accuracy_closed", "exact_match_open", "rouge_l_open", "sentence_similarity_open"} <= set(
        tasks["qaego4d"]["metrics"]
    )

    for entry in tasks.values():
        for metric in entry["metrics"].values():
            assert metric["ci_low"] <= metric["value"] <= metric["ci_high"]
    report = (out / "report.md").read_text()
    assert "| EgoMCQ | Acc. (Intra) |" in report
    assert (out / "plots" / "per_task.png").stat().st_size > 0 and (out / "plots" / "radar.png").stat().st_size > 0
    assert results["prompt"]["sha256"] and results["versions"]["torch"] and "commit" in results["git"]


@pytest.mark.parametrize("scorer", ["letter_logprob", "option_loglik"])
def test_jsonl_is_identical_run_to_run(tmp_path, toy, tiny, scorer):
    config = EvalConfig(tasks="synthetic,egomcq", scorer=scorer, limit=3, **FAST)
    evaluate(*tiny, str(toy), str(tmp_path / "a"), config, show_progress=False)
    evaluate(*tiny, str(toy), str(tmp_path / "b"), config, show_progress=False)
    for task in ("synthetic", "egomcq"):
        first = (tmp_path / "a" / "predictions" / task / "shard-00000-of-00001.jsonl").read_bytes()
        second = (tmp_path / "b" / "predictions" / task / "shard-00000-of-00001.jsonl").read_bytes()
        assert first == second and first.count(b"\n") > 0
    if scorer == "option_loglik":
        record = _records(tmp_path / "a", "synthetic")[0]
        assert len(record["sum_logprob"]) == len(record["mean_logprob"]) == 5
        assert record["option_scores"] == record["mean_logprob"]


def test_batched_items_are_scored_as_one_at_a_time(tmp_path, toy, tiny):
    """--batch-size prefills several option-likelihood items together (MCQ, Charades-Ego classes, EK-100 MIR
    sentences): the same predictions and scores as one item at a time."""
    runs = {}
    for batch_size in (1, 4):
        config = EvalConfig(
            tasks="synthetic,charades_ego,epic_mir", scorer="option_loglik", batch_size=batch_size, **FAST
        )
        evaluate(*tiny, str(toy), str(tmp_path / str(batch_size)), config, show_progress=False)
        runs[batch_size] = {
            task: sorted(_records(tmp_path / str(batch_size), task), key=lambda record: record["id"])
            for task in ("synthetic", "charades_ego", "epic_mir")
        }
    for task, records in runs[1].items():
        assert len(records) == len(runs[4][task]) >= 3
        for alone, batched in zip(records, runs[4][task]):
            assert alone["id"] == batched["id"] and alone.get("prediction") == batched.get("prediction")
            np.testing.assert_allclose(batched["mean_logprob"], alone["mean_logprob"], rtol=0, atol=1e-4)


def test_killed_run_resumes_to_the_same_results(tmp_path, toy, tiny, monkeypatch):
    config = EvalConfig(tasks="synthetic,egoschema", **FAST)
    reference = evaluate(*tiny, str(toy), str(tmp_path / "reference"), config, show_progress=False)

    original = scorers.letter_logprob
    calls = {"count": 0}

    def dies_after_four(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] > 4:
            raise KeyboardInterrupt("simulated kill")
        return original(*args, **kwargs)

    monkeypatch.setattr(scorers, "letter_logprob", dies_after_four)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        evaluate(*tiny, str(toy), str(out), config, show_progress=False)
    assert not (out / "results.json").exists()
    shard = next((out / "predictions").rglob("*.jsonl"))
    with open(shard, "a") as handle:  # a write torn by the kill
        handle.write('{"id": "synthetic/5", "task": "synth')
    finished_before = sum(len(_records(out, task)) for task in ("synthetic", "egoschema"))
    assert finished_before == 4

    monkeypatch.setattr(scorers, "letter_logprob", original)
    calls["count"] = 0
    resumed = evaluate(*tiny, str(toy), str(out), config, show_progress=False)
    assert _without_timing(resumed) == _without_timing(reference)
    for task in ("synthetic", "egoschema"):
        assert sorted(map(json.dumps, _records(out, task))) == sorted(
            map(json.dumps, _records(tmp_path / "reference", task))
        )


def test_sharded_run_merges_to_the_single_process_result(tmp_path, toy, tiny):
    config = EvalConfig(tasks="synthetic,epic_mir", limit=3, **FAST)
    single = evaluate(*tiny, str(toy), str(tmp_path / "single"), config, show_progress=False)
    out = tmp_path / "sharded"
    assert evaluate(*tiny, str(toy), str(out), config, shard=(1, 2), show_progress=False) is None
    merged = evaluate(*tiny, str(toy), str(out), config, shard=(0, 2), show_progress=False)
    assert merged["tasks"] == single["tasks"]
    assert len(list((out / "predictions" / "synthetic").glob("shard-*-of-00002.jsonl"))) == 2


def test_resuming_with_other_settings_is_refused(tmp_path, toy, tiny):
    out = tmp_path / "run"
    model, processor = tiny
    model.train()  # as during training: evaluation scores in eval mode and gives the mode back
    try:
        evaluate(
            model, processor, str(toy), str(out), EvalConfig(tasks="synthetic", limit=1, **FAST), show_progress=False
        )
        assert model.training
    finally:
        model.eval()
    with pytest.raises(RunConfigError, match="scorer"):
        evaluate(
            *tiny,
            str(toy),
            str(out),
            EvalConfig(tasks="synthetic", limit=1, scorer="option_loglik"),
            show_progress=False,
        )


# ------------------------------------------------------------------------------------------ bad input
def _bad_folder(tmp_path, mutate):
    tables, _ = toy_tables(["videos/clip0.mp4", "videos/clip1.mp4"])
    synthetic = [dict(row) for row in tables["synthetic"]["test"]]
    mutate(synthetic)
    return write_toy_egobench(tmp_path / "bad", tables={"synthetic": {"test": synthetic}})


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda rows: [row.pop("answer_idx") for row in rows], r"missing required column\(s\) \['answer_idx'\]"),
        (
            lambda rows: rows[3].update(answer_idx=7),
            r"row 3 \(sample_id 'synthetic/3'\): field 'answer_idx': 7 is outside the 5 options",
        ),
        (
            lambda rows: rows[2].update(options=rows[2]["options"][:4]),
            r"row 2 .*field 'options': 4 options, but task 'synthetic' takes 5",
        ),
        (
            lambda rows: rows[1].update(video="videos/missing.mp4"),
            r"1 of 6 videos not found .*synthetic/1: .*missing\.mp4",
        ),
        (lambda rows: rows[0].update(meta="{not json"), r"row 0 .*field 'meta': not valid JSON"),
    ],
)
def test_bad_input_fails_before_scoring(tmp_path, tiny, mutate, message):
    folder = _bad_folder(tmp_path, mutate)
    out = tmp_path / "out"
    with pytest.raises(EvalDataError, match=message) as error:
        evaluate(*tiny, str(folder), str(out), EvalConfig(tasks="synthetic"), show_progress=False)
    assert str(folder) in str(error.value)
    assert not out.exists()  # nothing was scored


def test_unknown_task_is_refused(tmp_path, toy, tiny):
    with pytest.raises(ValueError, match="unknown EgoBench task 'egoscheme'"):
        evaluate(*tiny, str(toy), str(tmp_path / "out"), EvalConfig(tasks="egoscheme"), show_progress=False)


# ------------------------------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    from exo2ego.tiny import save_tiny_model

    folder = tmp_path_factory.mktemp("model") / "tiny"
    save_tiny_model(str(folder))
    return folder


def _cli(argv):
    from exo2ego.cli import main

    return main(argv)


def test_cli_generate_parse_run_and_report(tmp_path, toy, saved_model, capsys):
    out = tmp_path / "run"
    code = _cli(
        [
            "eval",
            "--model",
            str(saved_model),
            "--data",
            str(toy),
            "--tasks",
            "synthetic",
            "--scorer",
            "generate_parse",
            "--out",
            str(out),
            "--limit",
            "3",
            "--num-frames",
            "4",
            "--prompt",
            "basic",
            "--bootstrap-resamples",
            "50",
            "--no-progress",
        ]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["scorer"] == "generate_parse" and results["prompt"]["name"] == "basic"
    assert results["model"]["name_or_path"] == str(saved_model)
    records = _records(out, "synthetic")
    assert len(records) == 3 and all(isinstance(record["raw_output"], str) for record in records)
    assert all(record["parse_rule"] for record in records)
    # Unparsable answers stay in the denominator.
    accuracy = results["tasks"]["synthetic"]["metrics"]["accuracy"]
    assert accuracy["n"] == 3 and accuracy["value"] == pytest.approx(
        100 * sum(bool(r["correct"]) for r in records) / 3
    )
    assert "invalid_rate" in results["tasks"]["synthetic"]["metrics"]

    assert (
        _cli(
            [
                "eval-report",
                "--results",
                str(out / "results.json"),
                "--out",
                str(tmp_path / "again"),
                "--compare",
                str(out / "results.json"),
            ]
        )
        == 0
    )
    report = (tmp_path / "again" / "report.md").read_text()
    assert report.splitlines()[6].endswith("tiny (generate_parse) |")  # the comparison column header


def test_cli_refuses_a_model_folder_without_processor(tmp_path, toy, saved_model, capsys):
    folder = tmp_path / "no_processor"
    shutil.copytree(saved_model, folder)
    for name in ("processor_config.json", "preprocessor_config.json"):
        (folder / name).unlink(missing_ok=True)
    code = _cli(["eval", "--model", str(folder), "--data", str(toy), "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 2
    assert "has no processor (processor_config.json or preprocessor_config.json missing)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_two_process_launch_merges_shards(tmp_path, toy, saved_model):
    """A real 2-process run (torchrun on CPU, gloo) writes two shards and the single-process results."""
    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "-m",
        "exo2ego",
        "eval",
        "--model",
        str(saved_model),
        "--data",
        str(toy),
        "--tasks",
        "synthetic,epic_mir",
        "--out",
        str(out),
        "--bootstrap-resamples",
        "50",
        "--no-progress",
    ]
    subprocess.run(command, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert len(list((out / "predictions" / "synthetic").glob("shard-*-of-00002.jsonl"))) == 2
    assert (
        _cli(
            [
                "eval",
                "--model",
                str(saved_model),
                "--data",
                str(toy),
                "--tasks",
                "synthetic,epic_mir",
                "--out",
                str(tmp_path / "single"),
                "--bootstrap-resamples",
                "50",
                "--no-progress",
            ]
        )
        == 0
    )
    two = json.loads((out / "results.json").read_text())
    one = json.loads((tmp_path / "single" / "results.json").read_text())
    assert two["world_size"] == 2 and two["tasks"] == one["tasks"]


def test_decoded_clip_cache_decodes_each_clip_once_and_changes_no_record(tmp_path, toy, tiny, monkeypatch):
    """Questions about one clip (same file and window) decode it once with the cache, and every record is the same
    byte for byte as without it."""
    from modeling_exo2ego import processing_exo2ego

    decoded = []
    read = processing_exo2ego.read_video_frames

    def counting_read(path, *args, **kwargs):
        decoded.append(os.fspath(path))
        return read(path, *args, **kwargs)

    monkeypatch.setattr(processing_exo2ego, "read_video_frames", counting_read)
    tasks = ("synthetic", "egomcq")
    counts = {}
    for cache_mb in (0, 64):
        decoded.clear()
        config = EvalConfig(tasks=",".join(tasks), scorer="option_loglik", decoded_cache_mb=cache_mb, **FAST)
        evaluate(*tiny, str(toy), str(tmp_path / str(cache_mb)), config, show_progress=False)
        counts[cache_mb] = len(decoded)
    rows = sum(len(_records(tmp_path / "0", task)) for task in tasks)
    assert counts[0] == rows
    assert counts[64] < rows
    for task in tasks:
        shard = Path("predictions") / task / "shard-00000-of-00001.jsonl"
        assert (tmp_path / "0" / shard).read_bytes() == (tmp_path / "64" / shard).read_bytes()
