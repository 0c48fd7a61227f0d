"""`exo2ego plan-memory` (train/memory_plan.py over the count of train/memory_count.py): the same counts as
benchmarks/gpu_memory.py, the strategies' sharding arithmetic, the cheapest fit, and the command line."""

import json
import re
from pathlib import Path

import pytest

from train.memory_count import GIB
from train.memory_plan import STRATEGIES, MemoryPlanner, gib_of_card, per_gpu_memory

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_planner():
    return MemoryPlanner("3", frames=4, text_tokens=24, scale="tiny", lora_r=8, lora_alpha=16, lora_dropout=0.0)


@pytest.mark.parametrize("stage, workload", [("2", "stage2"), ("3", "stage3")])
def test_ddp_plan_equals_the_benchmark_count(stage, workload):
    from benchmarks.gpu_memory import estimate

    planner = MemoryPlanner(stage, frames=4, text_tokens=24, scale="tiny")
    for checkpointing, (mode, convnets) in (("none", ("none", False)), ("full", ("full", True))):
        counted = estimate(workload, 2, 4, 24, mode, checkpoint_convnets=convnets, scale="tiny")
        planned = planner.memory(2, checkpointing, "ddp", gpus=8)
        assert planned["total"] == pytest.approx(counted["total_gib"], rel=1e-12)
        assert planned["activations"] == counted["activations_total_gib"]


def test_strategies_shard_what_they_shard(tiny_planner):
    step = tiny_planner.step(2, "none")
    ddp, zero2, fsdp2, zero3 = (per_gpu_memory(step, strategy, 8) for strategy in STRATEGIES)
    static = step["static_gib"]
    assert ddp["weights_frozen_bf16"] == zero2["weights_frozen_bf16"] == static["weights_frozen_bf16"]
    assert zero2["grads"] == static["grads"] / 8 and zero2["adamw_states"] == static["adamw_states"] / 8
    assert fsdp2 == zero3
    assert fsdp2["weights_frozen_bf16"] == static["weights_frozen_bf16"] / 8
    assert fsdp2["weights_trainable"] == static["weights_trainable"] / 8
    units = step["shard_units_m"]
    assert 0 < units["largest_unit"] < units["outside_units"]  # the tiny LLM's embeddings outweigh one layer
    gathered = 2e6 * (units["outside_units"] + 2 * units["largest_unit"]) / GIB
    assert fsdp2["gathered_bf16_weights"] == pytest.approx(gathered)
    assert ddp["activations"] == fsdp2["activations"] == step["activations_total_gib"]
    assert per_gpu_memory(step, "fsdp2", 1)["weights_trainable"] == static["weights_trainable"]
    with pytest.raises(ValueError, match="strategy must be one of"):
        per_gpu_memory(step, "zero1", 8)


def test_cheapest_fit_walks_batch_checkpointing_then_strategy(tiny_planner):
    totals = {strategy: tiny_planner.memory(2, "none", strategy, 8)["total"] for strategy in STRATEGIES}
    assert totals["fsdp2"] < totals["zero2"] < totals["ddp"]
    between = (totals["fsdp2"] + totals["zero2"]) / 2  # only the sharded strategies fit without checkpointing
    fit = tiny_planner.cheapest_fit(2, 8, card_gb=between * GIB / 1e9, reserve_gib=0)
    assert (fit["strategy"], fit["checkpointing"], fit["per_device_train_batch_size"]) == ("fsdp2", "none", 2)
    roomy = tiny_planner.cheapest_fit(2, 8, card_gb=(totals["ddp"] + 1e-6) * GIB / 1e9, reserve_gib=0)
    assert (roomy["strategy"], roomy["checkpointing"]) == ("ddp", "none")
    assert tiny_planner.cheapest_fit(2, 8, card_gb=80, reserve_gib=80) is None
    assert gib_of_card(80) == pytest.approx(74.506, abs=1e-3)


def test_plan_memory_command_writes_the_plan(tmp_path, capsys):
    from exo2ego.cli import main

    out = tmp_path / "plan.json"
    assert (
        main(
            [
                "plan-memory",
                "--stage",
                "3",
                "--tiny",
                "--gpus",
                "2",
                "--batch",
                "2",
                "--frames",
                "4",
                "--text-tokens",
                "24",
                "--strategy",
                "zero3",
                "--checkpointing",
                "full",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    plan = json.loads(out.read_text())
    assert plan["strategy"] == "zero3" and plan["global_batch"] == 4 and list(plan["per_gpu_gib"]) == ["full"]
    assert set(plan["cheapest_fit"]) == {"80GB", "141GB"} and plan["cheapest_fit"]["80GB"]["strategy"] == "ddp"
    assert "train/accelerate/ddp.yaml" in capsys.readouterr().out


def benchmarks_md_floors() -> dict[tuple[str, str], float]:
    """The paper-scale floors BENCHMARKS.md lists for local batch 8 that the stage scripts can select: no
    checkpointing, and `--activation_checkpointing true` (BENCHMARKS' `full` + conv blocks)."""
    text = (REPO / "BENCHMARKS.md").read_text()
    cell = r" \*\*([\d.]+)\*\* \|"
    row = re.search(r"\| \*\*floor\*\* \|" + cell + cell.replace("(", "").replace(")", "") * 2 + cell, text)
    stage2 = re.search(
        r"Stage 2 at batch 8: ([\d.]+) \(none\), [\d.]+ \(`full`\), \*\*([\d.]+)\*\* \(`full` \+ conv", text
    )
    return {
        ("3", "none"): float(row.group(1)),
        ("3", "full"): float(row.group(2)),
        ("2", "none"): float(stage2.group(1)),
        ("2", "full"): float(stage2.group(2)),
    }


@pytest.mark.slow  # four paper-scale meta-device counts, ~15 s each
def test_paper_scale_plan_equals_the_benchmarks_md_floors():
    from benchmarks.gpu_memory import estimate

    for (stage, checkpointing), floor in benchmarks_md_floors().items():
        planned = MemoryPlanner(stage).memory(8, checkpointing, "ddp", gpus=8)["total"]
        assert round(planned, 1) == floor, (stage, checkpointing)
        mode, convnets = ("full", True) if checkpointing == "full" else ("none", False)
        counted = estimate("stage" + stage, 8, 16, 128, mode, checkpoint_convnets=convnets)
        assert planned == pytest.approx(counted["total_gib"], rel=1e-12)
