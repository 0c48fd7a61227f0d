"""Text-supervised pretraining of the tiny vision towers, before the Exo2Ego pipeline starts.

The paper's two towers start from CLIP ViT-L/14, which already names the objects and colours of everyday scenes.
Random tiny towers know no visual concept, so the pipeline would have to teach them colours and shapes through a
frozen LLM in a few hundred steps. This module gives the tiny base model CLIP's premise cheaply: a tower learns to
predict the words of a clip's narration (a bag of words, the text-supervised image objective of the CLIP paper's
baseline) from the clip's frames, through the features the pipeline uses (maximum over frames and patches of the
`vision_feature_layer` features, since objects can be small -> linear -> one logit per vocabulary token,
cross-entropy against the caption's normalised bag of tokens). The head is dropped afterwards and both towers start
from the result, as both start from one CLIP in the paper.

Which frames it sees is the caller's choice: :func:`caption_corpus` reads a caption folder (the demo's: the synthetic
world's web-exo corpus, exo views of separate scenes whose captions name the objects' patterns, as the paper's
towers start from a CLIP trained on web images), :func:`frame_corpus` Ego-ExoClip's ego or exo views with their
narrations. :func:`world_clip_corpus` labels the world's own ego and exo clips with the ground truth (pattern
included, which no ego-side text names), so :func:`probe` can measure what a pretrained tower reads in each view:
the demo's gates (README "The demo").
Ego-ExoClip holds train takes only, so no EgoBench video is seen.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import Trainer

from datasets_scripts.synthetic.script import COLOURS, PATTERNS, SHAPES
from exo2ego.tiny.language import pretraining_arguments
from exo2ego_base.tiny import build_tiny_model
from modeling_exo2ego import read_video_frames
from train.data import CaptionSamples, EgoExoClipSamples, load_table

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


def clip_pixels(processor, frames, num_frames: int) -> torch.Tensor:
    """Decoded frames -> (T, 3, S, S) pixel values, as the processor prepares a view for either tower."""
    pixels = processor(text=processor.video_token, exo_videos=[frames], num_frames=num_frames)
    return pixels["exo_pixel_values_videos"][0]


def labelled_sample(processor, frames, text: str, num_frames: int) -> dict[str, torch.Tensor]:
    """`{"pixel_values_videos": (T, 3, S, S), "labels": (V,) multi-hot of `text`'s tokens}` for decoded frames."""
    labels = torch.zeros(len(processor.tokenizer))
    labels[processor.tokenizer(text, add_special_tokens=False)["input_ids"]] = 1.0
    return {"pixel_values_videos": clip_pixels(processor, frames, num_frames), "labels": labels}


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
    """:func:`labelled_sample` s for the `views` ("exo", "ego") of up to `max_samples` seeded samples of an
    Ego-ExoClip folder, labelled with their narration: (clip, exo camera) pairs, or one sample per clip with
    `exo_sampling="random"` (distinct samples then never share a clip)."""
    table = load_table(clips_path, "clips", "train")
    branch = "pair" if len(set(views)) > 1 else views[0]  # decode only the views asked for
    samples = EgoExoClipSamples(
        table, video_root, num_frames, (branch,), prompt="", exo_sampling=exo_sampling, seed=seed
    )
    chosen = np.random.default_rng(seed).permutation(len(samples))[:max_samples]
    corpus = []
    for index in tqdm(chosen.tolist(), desc="clips for vision pretraining", unit="clip"):
        sample = samples[index]
        for view in views:
            corpus.append(labelled_sample(processor, sample[f"{view}_frames"], sample["target"], num_frames))
    return corpus


def caption_corpus(
    processor, captions_path: str, video_root: str, num_frames: int, max_samples: int, seed: int = 0
) -> list[dict[str, torch.Tensor]]:
    """:func:`labelled_sample` s of up to `max_samples` seeded rows of a caption folder (config `captions`, e.g. the
    web-exo corpus built by `exo2ego data pretrain`), labelled with their caption."""
    samples = CaptionSamples(load_table(captions_path, "captions", "train"), video_root, num_frames, "exo", "")
    chosen = np.random.default_rng(seed).permutation(len(samples))[:max_samples]
    corpus = []
    for index in tqdm(chosen.tolist(), desc="captioned clips for vision pretraining", unit="clip"):
        sample = samples[index]
        corpus.append(labelled_sample(processor, sample["exo_frames"], sample["target"], num_frames))
    return corpus


def world_action_clips(
    world_root: str,
    num_frames: int,
    max_clips: int,
    seed: int = 0,
    split: str = "train",
    views: tuple[str, ...] = ("ego", "exo"),
):
    """Yield `(object, {view: frames})` for up to `max_clips` seeded action clips of the synthetic world's takes of
    `split`: the handled object's ground truth (`synthetic_world.json`: colour, shape, pattern) and the clip's frames
    in the `views` asked for, "ego" and "exo" (one seeded exo camera), each read over the action's window, so at the
    same times."""
    truth = json.loads((Path(world_root) / "synthetic_world.json").read_text())
    items = [
        (take, action)
        for take in truth["takes"]
        if take["rendered"] and take["split"] == split
        for action in take["actions"]
    ]
    rng = np.random.default_rng(seed)
    for index in rng.permutation(len(items))[:max_clips].tolist():
        take, action = items[index]
        cameras = {"ego": take["ego_cam"], "exo": take["exo_cams"][rng.integers(len(take["exo_cams"]))]}
        frames = {
            view: read_video_frames(
                Path(world_root) / take["videos_448"][camera],
                num_frames,
                start_sec=action["start"],
                end_sec=action["end"],
            ).frames
            for view, camera in cameras.items()
            if view in views
        }
        yield take["objects"][action["obj"]], frames


def world_clip_corpus(
    processor, world_root: str, view: str, num_frames: int, max_samples: int, seed: int = 0, split: str = "train"
) -> list[dict[str, torch.Tensor]]:
    """:func:`labelled_sample` s of the synthetic world's own action clips in `view` ("ego", or "exo": one seeded exo
    camera per clip; :func:`world_action_clips`), labelled from the ground truth with the handled object's full name,
    "a striped red box": the pattern too, which no ego-side text names. For probes only."""
    corpus = []
    for obj, frames in world_action_clips(world_root, num_frames, max_samples, seed, split, (view,)):
        name = f"a {obj['pattern']} {obj['colour']} {obj['shape']}"  # words after a space, as in the captions
        corpus.append(labelled_sample(processor, frames[view], name, num_frames))
    return corpus


def pretrain_vision(
    model, corpus: list[dict], steps: int, learning_rate: float = 3e-3, batch_size: int = 32, seed: int = 0
):
    """Train the exo tower on `corpus` (:func:`frame_corpus`), then copy it into the ego tower.

    Everything else keeps its weights. Returns the trained pretrainer (tower and word head) and the log history.
    """
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


def word_ids(tokenizer, words: tuple[str, ...]) -> list[int]:
    """The token telling each word from the others of its group: its last one (" box" and " bottle" share their
    first token)."""
    return [tokenizer(f" {word}", add_special_tokens=False)["input_ids"][-1] for word in words]


@torch.no_grad()
def probe(pretrainer, corpus: list[dict], word_groups: dict[str, tuple[str, ...]], tokenizer) -> dict[str, float]:
    """The word head's top-1 accuracy per group of `word_groups` on `corpus` (:func:`group_top1`)."""
    pretrainer.eval()
    pixels = torch.stack([sample["pixel_values_videos"] for sample in corpus])
    labels = torch.stack([sample["labels"] for sample in corpus])
    chunks = zip(pixels.split(64), labels.split(64))
    logits = torch.cat([pretrainer(chunk, targets)["logits"] for chunk, targets in chunks])
    return {group: group_top1(logits, labels, word_ids(tokenizer, words)) for group, words in word_groups.items()}


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
        results[view] = probe(pretrainer, corpus[-heldout_samples:], word_groups, processor.tokenizer)
    return results


PROBE_CLIPS = 200  # held-out clips per probe


def probe_groups() -> dict[str, tuple[str, ...]]:
    """The synthetic world's word groups a probe scores: pattern (exo-only knowledge), colour and shape."""
    return {"pattern": PATTERNS, "colour": tuple(sorted(COLOURS)), "shape": SHAPES}


def pretrain_and_probe(model, processor, vision_data: dict, seed: int = 0) -> dict:
    """Pretrain both towers of `model` on the clips `vision_data` names and report what the tower learned to read.

    `vision_data`: `captions` (a caption folder) or `clips` (an Ego-ExoClip folder, with `views`), `video_root`,
    `samples` (training clips), `steps`, `learning_rate` (default 3e-3), and optionally `probe_world` (a synthetic
    world root). With `probe_world`, :data:`PROBE_CLIPS` more clips of the source are held out (at most a fifth of
    them), and the word head is scored (:func:`probe`, groups of :func:`probe_groups`) on them and on the world's own
    exo and ego clips of its train takes (:func:`world_clip_corpus`, labelled from the ground truth). Returns
    `{"source", "steps", "learning_rate", "train_clips", "loss": [first, last], "probes": {"heldout" | "world_exo" |
    "world_ego": {group: accuracy}}}`.
    """
    num_frames = model.config.num_frames
    root = vision_data.get("video_root") or "."
    world = vision_data.get("probe_world")
    wanted = vision_data["samples"] + (PROBE_CLIPS if world else 0)
    if vision_data.get("captions"):
        source = vision_data["captions"]
        corpus = caption_corpus(processor, source, root, num_frames, wanted, seed)
    elif vision_data.get("clips"):
        source = vision_data["clips"]
        views = tuple(vision_data.get("views") or ("exo",))
        # One sample per clip when probing, so no held-out clip is also a training clip through another camera.
        sampling = "random" if world else "all_pairs"
        corpus = frame_corpus(processor, source, root, num_frames, wanted, views, seed, sampling)
    else:
        raise ValueError(
            "vision pretraining needs a caption folder (--vision-captions) or Ego-ExoClip (--vision-clips)"
        )
    heldout = min(PROBE_CLIPS, len(corpus) // 5) if world else 0  # a small source keeps 4/5 of its clips to train
    train = corpus[: len(corpus) - heldout]
    rate = vision_data.get("learning_rate") or 3e-3
    pretrainer, history = pretrain_vision(model, train, steps=vision_data["steps"], learning_rate=rate, seed=seed)
    losses = [entry["loss"] for entry in history if "loss" in entry]
    report = {
        "source": str(source),
        "steps": vision_data["steps"],
        "learning_rate": rate,
        "train_clips": len(train),
        "loss": losses[:1] + losses[-1:],
    }
    if world:
        groups, tokenizer = probe_groups(), processor.tokenizer
        report["probes"] = {"heldout": probe(pretrainer, corpus[len(train) :], groups, tokenizer)}
        for view in ("exo", "ego"):
            clips = world_clip_corpus(processor, world, view, num_frames, PROBE_CLIPS, seed)
            report["probes"][f"world_{view}"] = probe(pretrainer, clips, groups, tokenizer)
    return report
