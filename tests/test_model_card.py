"""Model cards from a real (tiny) EgoBench results.json, and the shared dataset-card sections."""

import argparse

import pytest
from huggingface_hub import ModelCard

from eval.report import load_comparison
from eval.runner import EvalConfig, evaluate
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
    expected = {(task, key): round(entry["metrics"][key]["value"], 2)
                for task, entry in results["tasks"].items() for key in entry["headline"]}
    assert {(e.dataset_config, e.metric_config): e.metric_value for e in evals} == expected
    assert {e.dataset_type for e in evals} == {"someone/egobench"}
    assert {e.metric_type for e in evals} >= {"accuracy", "map", "ndcg"}
    assert reloaded.data.pipeline_tag == "video-text-to-text" and reloaded.data.license == "other"
    text = str(card)
    assert "model-index" in text and 'AutoModel.from_pretrained("someone/exo2ego-tiny"' in text
    assert "| EgoMCQ | Acc. (Inter) |" in text and "CC BY-NC 4.0" in text
    assert results["prompt"]["sha256"][:12] in text


def test_comparison_column_from_the_paper(results):
    results, _ = results
    text = str(build_model_card(results, compare=load_comparison("paper")))
    assert "| Task | Metric | Value | 95% CI | n | Exo2Ego (paper, Table 15, after stage 3) |" in text
    assert "88.4 |" in text  # EgoMCQ inter in the paper


def test_cli_writes_readme_into_a_model_folder(results, tmp_path):
    _, results_path = results
    parser = argparse.ArgumentParser()
    card_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["model-card", "--results", str(results_path), "--out", str(tmp_path),
                              "--model-id", "me/tiny", "--base-model", "me/base"])
    assert args.func(args) == 0
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.base_model == ["me/base"] and card.data.eval_results
    assert not list(tmp_path.glob(".*tmp*"))


def test_dataset_card_reuses_the_source_sections(tmp_path):
    card = dataset_card({"synthetic": {"test": ["data/synthetic/test-00000-of-00001.parquet"]}},
                        pretty_name="Mini EgoBench", license="other", sources=["EgoSchema", "EPIC-KITCHENS-100"],
                        sections={"Loading": "load_dataset(...)"})
    text = str(card)
    assert text.index("## Loading") < text.index("## Source data and licences")
    assert "| EgoSchema | <https://egoschema.github.io> |" in text
    assert card.data.configs[0]["config_name"] == "synthetic"
    assert set(source_sections(["Synthetic Ego-Exo world"])) == {"Source data and licences", "Limitations"}
    with pytest.raises(ValueError, match="unknown data source 'Ego5D'"):
        source_sections(["Ego5D"])
