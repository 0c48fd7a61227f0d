"""Text-supervised pretraining of the tiny vision towers, before the Exo2Ego pipeline starts.

The paper's two towers start from CLIP ViT-L/14, which already names the objects and colours of everyday scenes.
Random tiny towers know no visual concept, so the pipeline would have to teach them colours and shapes through a
frozen LLM, and whether stage 3 ever learned to read colours was a matter of the seed (README "The demo"). This
module gives the tiny base model CLIP's premise cheaply: a tower learns to predict the words of a clip's narration (a
bag of words, the text-supervised image objective of the CLIP paper's baseline) from the clip's frames, through the
features the pipeline uses (maximum over frames and patches of the `vision_feature_layer` features, since objects
can be small -> linear -> one logit per vocabulary token, cross-entropy against the caption's normalised bag of
tokens). The head is dropped afterwards and both towers start from the result, as both start from one CLIP in the
paper.

`views` says whose frames it sees. Exo frames alone keep the ego-exo domain gap of the paper, but at the tiny
model's 32-pixel input the exo cameras show each object as a few pixels: :func:`word_probe` (reported by `exo2ego
ablate`, `benchmarks/results/ablation_synthetic.md`) finds that a tower pretrained on exo frames names the
narrated object's colour on 33% of held-out clips, one pretrained on ego frames on 96% (chance 17%). The synthetic
exo teacher therefore knows less than the ego student about what EgoBench asks. The demo leaves the towers random:
pretraining on both views did not make stage 3 reliable (README "The demo").
Ego-ExoClip holds train takes only, so no EgoBench video is seen.
"""

from __future__ import annotations

import logging
import tempfile

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)


class BagOfWordsPretrainer(nn.Module):
    """A vision tower with a linear word head: (B, T, 3, S, S) pixels -> loss of predicting the caption's tokens."""

    def __init__(self, model, vocab_size: int):
        super().__init__()
        self.model = model.model  # Exo2EgoModel: its `encode_frames` gives the features the connector reads
        self.tower = self.model.exo_vision_tower
        self.head = nn.Linear(self.tower.config.hidden_size, vocab_size)

    def forward(self, pixel_values_videos: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """pixel_values_videos (B, T, 3, S, S), labels (B, V) multi-hot -> {"loss", "logits" (B, V)}."""
        features, _ = self.model.encode_frames(pixel_values_videos, self.tower)  # (B*T, C, g, g)
        pooled = features.unflatten(0, (labels.shape[0], -1)).amax(dim=(1, 3, 4))  # (B, C)
        logits = self.head(pooled)
        # Cross-entropy against the caption's normalised bag of words: each caption spreads one unit of probability
        # over its tokens, so rare content words (colours, shapes) weigh as much as frequent ones ("the", "C").
        targets = labels / labels.sum(dim=-1, keepdim=True).clamp(min=1)
        return {"loss": nn.functional.cross_entropy(logits, targets), "logits": logits}


def frame_corpus(
    processor,
    clips_path: str,
    video_root: str,
    num_frames: int,
    max_samples: int,
    views: tuple[str, ...] = ("exo",),
    seed: int = 0,
    exo_sampling: str = "all_pairs",
) -> list[dict[str, torch.Tensor]]:
    """`{"pixel_values_videos": (T, 3, S, S), "labels": (V,) multi-hot of the narration's tokens}` for the `views`
    ("exo", "ego") of up to `max_samples` seeded samples of an Ego-ExoClip folder: (clip, exo camera) pairs, or one
    sample per clip with `exo_sampling="random"` (distinct samples then never share a clip)."""
    from tqdm.auto import tqdm

    from train.data import EgoExoClipSamples, load_table

    table = load_table(clips_path, "clips", "train")
    branch = "pair" if len(set(views)) > 1 else views[0]  # decode only the views asked for
    samples = EgoExoClipSamples(
        table, video_root, num_frames, (branch,), prompt="", exo_sampling=exo_sampling, seed=seed
    )
    chosen = np.random.default_rng(seed).permutation(len(samples))[:max_samples]
    corpus = []
    for index in tqdm(chosen.tolist(), desc="clips for vision pretraining", unit="clip"):
        sample = samples[index]
        labels = torch.zeros(len(processor.tokenizer))
        labels[processor.tokenizer(sample["target"], add_special_tokens=False)["input_ids"]] = 1.0
        for view in views:
            pixels = processor(
                text=processor.video_token, exo_videos=[sample[f"{view}_frames"]], num_frames=num_frames
            )
            corpus.append({"pixel_values_videos": pixels["exo_pixel_values_videos"][0], "labels": labels})
    return corpus


def pretrain_vision(
    model, corpus: list[dict], steps: int, learning_rate: float = 3e-3, batch_size: int = 32, seed: int = 0
):
    """Train the exo tower on `corpus` (:func:`frame_corpus`), then copy it into the ego tower.

    Everything else keeps its weights. Returns the trained pretrainer (tower and word head) and the log history.
    """
    from transformers import Trainer

    from exo2ego.tiny_language import pretraining_arguments

    pretrainer = BagOfWordsPretrainer(model, vocab_size=corpus[0]["labels"].numel())
    for parameter in model.parameters():
        parameter.requires_grad = False
    for parameter in (*pretrainer.tower.parameters(), *pretrainer.head.parameters()):
        parameter.requires_grad = True
    pretrainer.train()
    with tempfile.TemporaryDirectory() as scratch:
        arguments = pretraining_arguments(scratch, steps, batch_size, learning_rate, seed, remove_unused_columns=False)
        trainer = Trainer(model=pretrainer, args=arguments, train_dataset=corpus)
        trainer.train()
    for parameter in model.parameters():
        parameter.requires_grad = True
    model.model.ego_vision_tower.load_state_dict(model.model.exo_vision_tower.state_dict())
    model.eval()
    history = trainer.state.log_history
    losses = [entry["loss"] for entry in history if "loss" in entry]
    if losses:
        logger.info("vision pretraining: loss %.3f -> %.3f over %d steps", losses[0], losses[-1], steps)
    return pretrainer, history


def group_top1(logits: torch.Tensor, labels: torch.Tensor, ids: list[int]) -> float:
    """logits, labels (N, V): among the rows whose labels name one of the tokens `ids`, the share whose highest
    logit among `ids` is a named one (0.0 when no row names any)."""
    named = labels[:, ids] > 0
    rows = named.any(dim=1)
    if not rows.any():
        return 0.0
    guess = logits[:, ids].argmax(dim=1)
    return float(named[torch.arange(len(labels)), guess][rows].float().mean())


def word_probe(
    clips_path: str,
    video_root: str,
    word_groups: dict[str, tuple[str, ...]],
    views: tuple[str, ...] = ("exo", "ego"),
    train_samples: int = 1024,
    heldout_samples: int = 200,
    steps: int = 300,
    num_frames: int = 4,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """What a tiny tower can learn to see from each view: per view, a fresh tiny model is pretrained on
    `train_samples` clips of that view only, then its word head is scored on `heldout_samples` other clips: for each
    group of `word_groups` (e.g. the colours), the top-1 accuracy among the group's words on the clips whose
    narration names one of them. Returns `{view: {group: accuracy, ...}}` (chance is 1 / len(group))."""
    from exo2ego_base.tiny import build_tiny_model

    results = {}
    for view in views:
        model, processor = build_tiny_model(seed=seed, num_frames=num_frames)
        # One sample per clip, so no held-out clip is also a training clip (through another exo camera).
        corpus = frame_corpus(
            processor, clips_path, video_root, num_frames, train_samples + heldout_samples, (view,), seed, "random"
        )
        if len(corpus) <= heldout_samples:
            raise ValueError(f"{clips_path} has {len(corpus)} clips, not more than heldout_samples={heldout_samples}")
        pretrainer, _ = pretrain_vision(model, corpus[:-heldout_samples], steps=steps, seed=seed)
        heldout = corpus[-heldout_samples:]
        with torch.no_grad():
            pixels = torch.stack([sample["pixel_values_videos"] for sample in heldout])
            labels = torch.stack([sample["labels"] for sample in heldout])
            logits = pretrainer(pixels, labels)["logits"]
        results[view] = {}
        for group, words in word_groups.items():
            # A word's last token tells it from its group (" box" and " bottle" share their first token).
            ids = [processor.tokenizer(f" {word}", add_special_tokens=False)["input_ids"][-1] for word in words]
            results[view][group] = group_top1(logits, labels, ids)
    return results
