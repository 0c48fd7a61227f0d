"""The pattern probe of `exo2ego.experiments.mapping_probe`: clip moments, the linear probe, and the probe of a
checkpoint."""

import torch

from exo2ego.experiments.mapping_probe import clip_moments, fit_linear_probe, pattern_probe


def test_clip_moments_are_each_clips_channel_mean_and_std():
    features = torch.randn(6, 3, 2, 2)  # 2 clips x 3 frames, 3 channels, 2x2 grid
    moments = clip_moments(features, frames=3)
    assert moments.shape == (2, 6)
    clip = features[3:].transpose(0, 1).flatten(1)  # second clip: (C, T*g*g)
    assert torch.allclose(moments[1, :3], clip.mean(1)) and torch.allclose(moments[1, 3:], clip.std(1, correction=0))


def test_linear_probe_reads_a_separable_label_and_not_noise():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 4
    features = torch.randn(200, 8, generator=generator) + 3 * torch.nn.functional.one_hot(labels, 8).float()
    predict = fit_linear_probe(features[:150], labels[:150], 4)
    assert (predict(features[150:]) == labels[150:]).float().mean() > 0.95
    noise = torch.randn(200, 8, generator=generator)
    predict = fit_linear_probe(noise[:150], labels[:150], 4)
    assert (predict(noise[150:]) == labels[150:]).float().mean() < 0.5  # chance is 0.25


def test_pattern_probe_of_a_checkpoint(tiny, tmp_path):
    """y carries the label by construction (exo clips drawn per pattern); F = identity at init and x sees noise, so
    the probe fitted on y reads y and not x."""
    model, _ = tiny
    model.save_pretrained(tmp_path / "ckpt")
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 5
    exo = torch.randn(60, 4, 3, 32, 32, generator=generator) * 0.1 + labels.view(-1, 1, 1, 1, 1) * 0.5
    ego = torch.randn(60, 4, 3, 32, 32, generator=generator)
    scores = pattern_probe(tmp_path / "ckpt", {"ego": ego, "exo": exo, "label": labels}, train_clips=40)
    assert set(scores) == {"y", "F(x)", "x", "x (own probe)"} and scores["y"] > 0.9
    assert scores["x"] < 0.6 and scores["x (own probe)"] < 0.6  # the ego pixels carry no label
