"""Text-supervised pretraining of the tiny vision towers on exo frames (`exo2ego.tiny.vision`)."""

import numpy as np
import pytest
import torch

from exo2ego.tiny.vision import group_top1, pretrain_vision
from exo2ego_base.tiny import build_tiny_model


def coloured_corpus(processor, count: int, seed: int = 0) -> list[dict]:
    """Clips of one flat colour, each labelled with its colour's word: the towers must learn to see colour."""
    generator = np.random.default_rng(seed)
    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
    corpus = []
    for index in range(count):
        name = list(colours)[index % len(colours)]
        frames = np.clip(np.array(colours[name]) + generator.integers(-20, 20, (4, 32, 32, 3)), 0, 255)
        pixels = processor(text=processor.video_token, exo_videos=[frames.astype(np.uint8)], num_frames=4)
        labels = torch.zeros(len(processor.tokenizer))
        labels[processor.tokenizer(f"the {name} cup", add_special_tokens=False)["input_ids"]] = 1.0
        corpus.append({"pixel_values_videos": pixels["exo_pixel_values_videos"][0], "labels": labels})
    return corpus


def test_towers_learn_the_words_of_what_they_see_and_nothing_else_moves():
    model, processor = build_tiny_model(seed=0)
    towers = ("model.exo_vision_tower.", "model.ego_vision_tower.")
    frozen = {name: value.clone() for name, value in model.state_dict().items() if not name.startswith(towers)}
    corpus = coloured_corpus(processor, 48)
    _, history = pretrain_vision(model, corpus, steps=30, learning_rate=3e-3, batch_size=12)
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert losses[-1] < losses[0], losses
    exo, ego = model.model.exo_vision_tower.state_dict(), model.model.ego_vision_tower.state_dict()
    assert all(torch.equal(exo[name], ego[name]) for name in exo)  # both towers start from the pretrained one
    for name, value in model.state_dict().items():
        if name in frozen:
            assert torch.equal(value, frozen[name]), name
    assert all(parameter.requires_grad for parameter in model.parameters())  # the stages set their own


def test_group_top1_scores_only_rows_that_name_a_word_of_the_group():
    ids = [1, 2, 3]  # the group's tokens in a 5-token vocabulary
    labels = torch.tensor(
        [
            [0, 1, 0, 0, 1],  # names token 1: the guess (1) is right
            [0, 0, 1, 0, 0],  # names token 2: the guess (3) is wrong
            [1, 0, 0, 0, 1],  # names none of the group: not scored, whatever its guess
            [0, 0, 0, 1, 0],  # names token 3: right
        ],
        dtype=torch.float,
    )
    logits = torch.tensor(
        [[9, 5, 1, 0, 9], [0, 1, 2, 3, 9], [0, 9, 0, 0, 0], [0, 0, 1, 2, 0]], dtype=torch.float
    )  # token 0 and 4 logits are outside the group and never win
    assert group_top1(logits, labels, ids) == pytest.approx(2 / 3)
    assert group_top1(logits, torch.zeros_like(labels), ids) == 0.0


def test_probe_scores_the_word_head_per_group():
    """`probe` after pretraining on flat colours: colours are read (held-out clips), a group no clip names scores 0."""
    from exo2ego.tiny.vision import probe

    model, processor = build_tiny_model(seed=0)
    corpus = coloured_corpus(processor, 60)
    pretrainer, _ = pretrain_vision(model, corpus[:48], steps=40, learning_rate=1e-2, batch_size=12)
    scores = probe(
        pretrainer, corpus[48:], {"colour": ("red", "green", "blue"), "pattern": ("striped",)}, processor.tokenizer
    )
    assert scores["colour"] > 0.9 and scores["pattern"] == 0.0


def test_world_clips_are_labelled_with_the_ground_truth_pattern(tmp_path):
    """The probes' world clips name the handled object with its pattern, which no ego-side text does."""
    import json

    from datasets_scripts.synthetic import WorldConfig, generate_world
    from exo2ego.tiny.vision import world_clip_corpus

    root = tmp_path / "world"
    generate_world(root, WorldConfig(num_takes=4, objects_per_take=1, actions_per_take=2, web_exo_per_take=0))
    truth = json.loads((root / "synthetic_world.json").read_text())
    patterns = {
        take["objects"][0]["pattern"] for take in truth["takes"] if take["rendered"] and take["split"] == "train"
    }
    _, processor = build_tiny_model(seed=0)
    for view in ("ego", "exo"):
        corpus = world_clip_corpus(processor, str(root), view, 4, 10)
        train_actions = sum(len(t["actions"]) for t in truth["takes"] if t["rendered"] and t["split"] == "train")
        assert len(corpus) == train_actions and corpus[0]["pixel_values_videos"].shape == (4, 3, 32, 32)
        named = {
            word
            for sample in corpus
            for word in patterns
            if sample["labels"][processor.tokenizer(f" {word}", add_special_tokens=False)["input_ids"][-1]] > 0
        }
        assert named == patterns
