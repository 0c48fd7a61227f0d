"""What the ego->exo mapping F learned: does the connector see F(x) as exo-like?

On synchronized Ego-ExoClip pairs (ego features x, exo features y of the same moment), this measures, through the
model's own connector c:

- `fx_to_y`: relative distance ||c(F(x)) - c(y)|| / ||c(y)|| (how close the estimated exo tokens are to the real
  ones of the same clip);
- `x_to_y`: the same for the raw ego features, ||c(x) - c(y)|| / ||c(y)|| (the distance F starts from: F is the
  identity at initialization);
- `fx_to_other_y`: c(F(x)) against the exo tokens of a clip of *another take* (another scene and action; the batch
  rolled by one, with one clip per take), the distance a mapping that ignores which clip it sees would reach;
- `f_moves_x`: ||F(x) - x|| / ||x||, how far F is from the identity.

A mapping that carries exo information has `fx_to_y` < `x_to_y` and `fx_to_y` < `fx_to_other_y`.

:func:`pattern_probe` asks the same of the synthetic world's exo-only knowledge, the objects' pattern: a linear probe
fitted on the exo tower's per-clip feature moments y, applied to F(x) and to x of other clips.
"""

from __future__ import annotations

import numpy as np
import torch

from datasets_scripts.synthetic.script import PATTERNS
from exo2ego.tiny.vision import clip_pixels, world_action_clips
from modeling_exo2ego import Exo2EgoForConditionalGeneration, Exo2EgoProcessor
from train.collator import Exo2EgoCollator
from train.data import EgoExoClipSamples, load_table
from train.losses import clip_moments as gaussian_clip_moments


@torch.no_grad()
def mapping_distances(model, batches) -> dict[str, float]:
    """Mean distances (see the module docstring) over `batches` of collated "pair" samples (`ego` and `exo`
    pixel tensors of shape (B, T, 3, S, S))."""
    inner = model.model
    totals: dict[str, float] = {}
    count = 0
    for batch in batches:
        ego_pixels, exo_pixels = batch["pixel_values_videos"], batch["exo_pixel_values_videos"]
        size = ego_pixels.shape[0]
        if size < 2:
            continue
        x, _ = inner.encode_frames(ego_pixels, inner.ego_vision_tower)
        y, _ = inner.encode_frames(exo_pixels, inner.exo_vision_tower)
        fx = inner.ego_to_exo(x)
        cx, cy, cfx = (inner.connect(features, size).flatten(1) for features in (x, y, fx))

        def relative(a, b):
            return ((a - b).norm(dim=1) / b.norm(dim=1)).mean().item()

        values = {
            "fx_to_y": relative(cfx, cy),
            "x_to_y": relative(cx, cy),
            "fx_to_other_y": relative(cfx, cy.roll(1, dims=0)),
            "f_moves_x": ((fx - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)).mean().item(),
        }
        for key, value in values.items():
            totals[key] = totals.get(key, 0.0) + value
        count += 1
    if not count:
        raise ValueError("mapping_distances needs at least one batch of two or more pairs")
    return {key: value / count for key, value in totals.items()}


def probe_folder(
    model_dir,
    clips_path: str,
    video_root: str,
    num_frames: int,
    num_pairs: int = 64,
    batch_size: int = 16,
    seed: int = 0,
) -> dict[str, float]:
    """`mapping_distances` of the checkpoint in `model_dir` on `num_pairs` Ego-ExoClip pairs, one clip of each of
    `num_pairs` takes (clip, takes and exo camera drawn with `seed`), so that the "other" clip of `fx_to_other_y`
    is always of another take."""

    model = Exo2EgoForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = Exo2EgoProcessor.from_pretrained(model_dir)
    table = load_table(clips_path, "clips", "train")
    rows_by_take: dict[str, list[int]] = {}
    for row, take in enumerate(table["take_uid"]):
        rows_by_take.setdefault(take, []).append(row)
    generator = np.random.default_rng(seed)
    takes = generator.permutation(sorted(rows_by_take))[:num_pairs]
    table = table.select([int(generator.choice(rows_by_take[take])) for take in takes])
    samples = EgoExoClipSamples(table, video_root, num_frames, ("pair",), prompt="", seed=seed)
    collator = Exo2EgoCollator(processor, ("pair",))
    batches = (
        collator([samples[i] for i in range(start, min(start + batch_size, len(samples)))])
        for start in range(0, len(samples), batch_size)
    )
    return mapping_distances(model, batches)


def paired_pattern_clips(processor, world_root: str, num_frames: int, max_clips: int, seed: int = 0) -> dict:
    """Synchronized ego and exo pixels of the synthetic world's train-take action clips with the handled object's
    pattern (`exo2ego.tiny.vision.world_action_clips`): `{"ego": (N, T, 3, S, S), "exo": (N, T, 3, S, S), "label":
    (N,) pattern index}`."""

    views = {"ego": [], "exo": []}
    labels = []
    for obj, frames in world_action_clips(world_root, num_frames, max_clips, seed):
        for view, clip in frames.items():
            views[view].append(clip_pixels(processor, clip, num_frames))
        labels.append(PATTERNS.index(obj["pattern"]))
    return {"ego": torch.stack(views["ego"]), "exo": torch.stack(views["exo"]), "label": torch.tensor(labels)}


def clip_moments(features: torch.Tensor, frames: int) -> torch.Tensor:
    """(B*T, C, g, g) features -> (B, 2C): each clip's per-channel mean and standard deviation over its T*g*g tokens,
    the statistics the per-sample Gaussian KL compares."""

    mean, variance = gaussian_clip_moments(features, frames)
    return torch.cat([mean, variance.sqrt()], dim=1)


def fit_linear_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int, steps: int = 300):
    """A multinomial logistic regression on standardised `features` (N, D), fitted with L-BFGS and a small L2
    penalty; returns a function from features to predicted classes."""
    mean, std = features.mean(0), features.std(0).clamp(min=1e-6)
    linear = torch.nn.Linear(features.shape[1], num_classes)
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=steps, line_search_fn="strong_wolfe")
    inputs = (features - mean) / std

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(inputs), labels) + 1e-3 * linear.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return lambda other: linear((other - mean) / std).argmax(dim=1)


@torch.no_grad()
def pattern_probe(model_dir, clips: dict, train_clips: int) -> dict[str, float]:
    """Where the exo-only pattern is in a checkpoint's features: a linear probe of the pattern fitted on the exo
    tower's clip moments y of the first `train_clips` of `clips` (:func:`paired_pattern_clips`), then scored on the
    other clips' y (the probe works), F(x) (the mapping carries the pattern to the ego side) and x (the ego tower
    has it without F); "x (own probe)" fits a second probe on x itself (the ego features hold the pattern in some
    form). Returns accuracies; chance is 1 / number of patterns."""

    inner = Exo2EgoForConditionalGeneration.from_pretrained(model_dir).eval().model
    frames = clips["ego"].shape[1]
    x, _ = inner.encode_frames(clips["ego"], inner.ego_vision_tower)
    y, _ = inner.encode_frames(clips["exo"], inner.exo_vision_tower)
    moments = {"y": clip_moments(y, frames), "F(x)": clip_moments(inner.ego_to_exo(x), frames)}
    moments["x"] = clip_moments(x, frames)
    labels = clips["label"]
    predict = fit_linear_probe(moments["y"][:train_clips], labels[:train_clips], len(PATTERNS))
    heldout = labels[train_clips:]
    scores = {name: float((predict(value[train_clips:]) == heldout).float().mean()) for name, value in moments.items()}
    # Whether the ego features hold the pattern at all, in their own coordinates: a probe fitted on x itself.
    own = fit_linear_probe(moments["x"][:train_clips], labels[:train_clips], len(PATTERNS))
    scores["x (own probe)"] = float((own(moments["x"][train_clips:]) == heldout).float().mean())
    return scores
