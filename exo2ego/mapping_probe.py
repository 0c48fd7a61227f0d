"""What the ego->exo mapping F learned: does the connector see F(x) as exo-like?

On synchronized Ego-ExoClip pairs (ego features x, exo features y of the same moment), this measures, through the
model's own connector c:

- `fx_to_y`: relative distance ||c(F(x)) - c(y)|| / ||c(y)|| (how close the estimated exo tokens are to the real
  ones of the same clip);
- `x_to_y`: the same for the raw ego features, ||c(x) - c(y)|| / ||c(y)|| (the distance F starts from: F is the
  identity at initialization);
- `fx_to_other_y`: c(F(x)) against the exo tokens of a *different* clip of the batch (rolled by one), the distance
  a mapping that ignores which clip it sees would reach;
- `f_moves_x`: ||F(x) - x|| / ||x||, how far F is from the identity.

A mapping that carries exo information has `fx_to_y` < `x_to_y` and `fx_to_y` < `fx_to_other_y`.
"""

from __future__ import annotations

import torch


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
    """`mapping_distances` of the checkpoint in `model_dir` on the first `num_pairs` Ego-ExoClip pairs (exo camera
    drawn per clip with `seed`)."""
    from modeling_exo2ego import Exo2EgoForConditionalGeneration, Exo2EgoProcessor
    from train.collator import Exo2EgoCollator
    from train.data import EgoExoClipSamples, load_table

    model = Exo2EgoForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = Exo2EgoProcessor.from_pretrained(model_dir)
    table = load_table(clips_path, "clips", "train")
    table = table.select(range(min(num_pairs, len(table))))
    samples = EgoExoClipSamples(table, video_root, num_frames, ("pair",), prompt="", seed=seed)
    collator = Exo2EgoCollator(processor, ("pair",))
    batches = (
        collator([samples[i] for i in range(start, min(start + batch_size, len(samples)))])
        for start in range(0, len(samples), batch_size)
    )
    return mapping_distances(model, batches)
