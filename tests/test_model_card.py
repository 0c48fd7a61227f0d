"""Model cards from a real (tiny) EgoBench results.json, and the shared dataset-card sections."""

import argparse

import pytest
from huggingface_hub import ModelCard

from eval.config import EvalConfig
from eval.report import load_comparison
from eval.runner import evaluate
from eval.toy import write_toy_egobench
from model_card import CardInfo, build_model_card, dataset_card, source_sections
from model_card import cli as card_cli


@pytest.fixture(scope="module")
def results(tmp_path_factory, tiny):
    root = tmp_path_factory.mktemp("card")
    toy = write_toy_egobench(root / "toy")
    config = EvalConfig(tasks="synthetic,egomcq,epic_mir", limit=4, bootstrap_resamples=20)
    results = evaluate(*tiny, str(toy), str(root / "run"), config, show_progress=False)
    return results, root / "run" / "results.json"


def test_model_index_holds_every_headline_metric(results):
    results, _ = results
    card = build_model_card(results, CardInfo(model_id="someone/exo2ego-tiny", eval_dataset="someone/egobench"))
    reloaded = ModelCard(str(card))  # the YAML header parses back
    evals = reloaded.data.eval_results
    expected = {
        (task, key): round(entry["metrics"][key]["value"], 2)
        for task, entry in results["tasks"].items()
        for key in entry["headline"]
    }
    assert {(e.dataset_config, e.metric_config): e.metric_value for e in evals} == expected
    assert {e.dataset_type for e in evals} == {"someone/egobench"}
    assert {e.metric_type for e in evals} >= {"accuracy", "map", "ndcg"}
    assert reloaded.data.pipeline_tag == "video-text-to-text" and reloaded.data.license == "other"
    text = str(card)
    assert "model-index" in text and 'AutoModel.from_pretrained("someone/exo2ego-tiny"' in text
    assert "| EgoMCQ | Acc. (Inter) |" in text and "CC BY-NC 4.0" in text
    assert results["prompt"]["sha256"][:12] in text
    assert "Stage 2's KL: per-sample (paired) Gaussian KL" in text and "(`kl_mode: gaussian`)" in text
    batch_form = str(build_model_card(results, CardInfo(kl_mode="gaussian_batch")))
    assert "Stage 2's KL: Gaussian KL of per-channel moments over the batch" in batch_form
    with pytest.raises(ValueError, match="unknown kl_mode"):
        build_model_card(results, CardInfo(kl_mode="cosine"))


def test_card_names_every_kl_form():
    from model_card.card import KL_FORMS
    from train.losses import KL_MODES

    assert set(KL_FORMS) == set(KL_MODES)


def test_comparison_column_from_the_paper(results):
    results, _ = results
    text = str(build_model_card(results, compare=load_comparison("paper")))
    assert "| Task | Metric | Value | 95% CI | n | Exo2Ego (paper, Table 15, after stage 3) |" in text
    assert "88.4 |" in text  # EgoMCQ inter in the paper


def test_cli_writes_readme_into_a_model_folder(results, tmp_path):
    _, results_path = results
    parser = argparse.ArgumentParser()
    card_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "model-card",
            "--results",
            str(results_path),
            "--out",
            str(tmp_path),
            "--model-id",
            "me/tiny",
            "--base-model",
            "me/base",
            "--kl-mode",
            "gaussian_batch",
        ]
    )
    assert args.func(args) == 0
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.base_model == ["me/base"] and card.data.eval_results
    assert "(`kl_mode: gaussian_batch`)" in str(card)
    assert not list(tmp_path.glob(".*tmp*"))


def test_base_model_and_dataset_may_be_repeated_or_listed(results, tmp_path):
    _, results_path = results
    parser = argparse.ArgumentParser()
    card_cli.add_parser(parser.add_subparsers(dest="command"))
    common = ["model-card", "--results", str(results_path)]
    for name, extra in {
        "repeated": ["--base-model", "me/a", "--base-model", "me/b", "--dataset", "me/d1", "--dataset", "me/d2"],
        "listed": ["--base_model", "me/a", "me/b", "--dataset", "me/d1", "me/d2"],
    }.items():
        args = parser.parse_args([*common, "--out", str(tmp_path / f"{name}.md"), *extra])
        assert args.func(args) == 0
        card = ModelCard.load(tmp_path / f"{name}.md")
        assert card.data.base_model == ["me/a", "me/b"] and card.data.datasets == ["me/d1", "me/d2"]


def test_dataset_card_reuses_the_source_sections(tmp_path):
    card = dataset_card(
        {"synthetic": {"test": ["data/synthetic/test-00000-of-00001.parquet"]}},
        pretty_name="Mini EgoBench",
        license="other",
        sources=["EgoSchema", "EPIC-KITCHENS-100"],
        sections={"Loading": "load_dataset(...)"},
    )
    text = str(card)
    assert text.index("## Loading") < text.index("## Source data and licences")
    assert "| EgoSchema | <https://egoschema.github.io> |" in text
    assert card.data.configs[0]["config_name"] == "synthetic"
    assert set(source_sections(["Synthetic Ego-Exo world"])) == {"Source data and licences", "Limitations"}
    with pytest.raises(ValueError, match="unknown data source 'Ego5D'"):
        source_sections(["Ego5D"])


@pytest.mark.parametrize("save_mode", ["adapter", "merged"])
def test_stage_output_without_results_gets_the_short_card_from_the_same_generator(tmp_path, save_mode):
    from exo2ego_base.provenance import write_json_atomic
    from train.hub import write_model_card
    from train.stage_folder import ADAPTER_DIR_NAME, STAGE_METADATA_NAME

    metadata = {
        "stage": "stage3",
        "description": "student self-practice",
        "lora": True,
        "save_mode": save_mode,
        "trainable_modules": ["ego_vision_tower", "connector"],
        "losses": ["vtg"],
        "loss_weights": {"vtg": 1.0},
        "ablations": [],
        "data": "egoit",
        "global_step": 3,
        "seed": 0,
        "failed_videos": 2,
        "versions": {"torch": "2.13.0"},
        "arguments": {
            "training": {"learning_rate": 1e-4, "weight_decay": 0.0, "lr_scheduler_type": "cosine"},
            "data": {"dataset_path": "world/egoit"},
        },
    }
    write_json_atomic(tmp_path / STAGE_METADATA_NAME, metadata)
    card = ModelCard.load(write_model_card(str(tmp_path), "me/exo2ego-stage3"))
    assert card.data.library_name == ("peft" if save_mode == "adapter" else "transformers")
    assert "stage3" in card.data.tags and card.data.pipeline_tag == "video-text-to-text"
    text = str(card)
    assert "Exo2Ego checkpoint after **stage3**: student self-practice." in text
    assert (f'subfolder="{ADAPTER_DIR_NAME}"' in text) == (save_mode == "adapter")
    assert text.index("```python") < text.index("## Training run") < text.index("- unreadable videos skipped: 2")
    assert "+ LoRA on the LLM" in text and "schedule cosine" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", STAGE_METADATA_NAME]


def test_stage_summary_names_the_kl_form_the_stage_trained_with():
    from model_card import training_summary

    metadata = {
        "stage": "stage2",
        "description": "teacher-student guidance",
        "lora": False,
        "trainable_modules": ["ego_vision_tower", "ego_to_exo", "exo_to_ego"],
        "losses": ["vtg", "kl", "ccl"],
        "loss_weights": {"vtg": 1.0, "kl": 1.0, "ccl": 1.0},
        "ablations": [],
        "data": "ego-exoclip",
        "global_step": 3,
        "seed": 0,
        "failed_videos": 0,
        "versions": {},
        "arguments": {
            "training": {
                "learning_rate": 1e-4,
                "weight_decay": 0.02,
                "lr_scheduler_type": "cosine",
                "kl_mode": "gaussian",
            },
            "data": {"dataset_path": "world/ego-exoclip"},
        },
    }
    summary = training_summary(metadata)
    assert "; KL form: per-sample (paired) Gaussian KL" in summary and "(`kl_mode: gaussian`)" in summary
    metadata["losses"] = ["vtg", "ccl"]  # no_kl: no KL form to name
    assert "KL form" not in training_summary(metadata)
