"""The stage-2 KL: the per-sample and batch Gaussian forms against closed-form references, what each depends on
(token positions, the ego-exo pairing, the clip grouping), the batch form's same value and gradient on 1 and 2
processes for one global batch (gloo on CPU), the teacher gradient, and KL settings living in the training arguments
(not in the released model config)."""

import json
import os

import pytest
import torch
import torch.multiprocessing as mp

from modeling_exo2ego import Exo2EgoConfig
from train.losses import KL_MODES, kl_alignment_loss


def random_features(seed: int, frames: int = 6, channels: int = 5, grid: int = 4):
    """(frames, C, g, g) real and estimated exo features; every frame gets its own scale and offset, shared by y and
    y_hat, so frames and clips differ in their statistics and a y belongs with its own y_hat."""
    generator = torch.Generator().manual_seed(seed)
    shape = (frames, channels, grid, grid)
    scale = torch.rand(frames, 1, 1, 1, generator=generator) + 0.5
    offset = torch.randn(frames, 1, 1, 1, generator=generator)
    target = torch.randn(shape, generator=generator) * 2 * scale + 1 + offset
    estimate = torch.randn(shape, generator=generator) * 0.5 * scale - 0.3 + offset
    return target, estimate


def reference_kl(target: torch.Tensor, estimate: torch.Tensor, clips: int) -> torch.Tensor:
    """Independent of the implementation: per clip and channel, Normals from the statistics over every (frame, row,
    column) token of the clip, KL by torch.distributions, averaged over channels and clips."""

    def normals(features):
        channels = features.shape[1]
        tokens = features.double().reshape(clips, -1, channels, features[0, 0].numel())
        tokens = tokens.permute(0, 2, 1, 3).reshape(clips, channels, -1)  # (clips, C, frames * g * g)
        return torch.distributions.Normal(tokens.mean(-1), tokens.var(-1, unbiased=False).sqrt())

    return torch.distributions.kl_divergence(normals(target), normals(estimate)).mean()


def shuffle_tokens_within_frames(features: torch.Tensor, seed: int) -> torch.Tensor:
    frames, channels, grid, _ = features.shape
    generator = torch.Generator().manual_seed(seed)
    flat = features.flatten(2)
    order = torch.stack([torch.randperm(grid * grid, generator=generator) for _ in range(frames)])
    return flat.gather(2, order[:, None].expand(-1, channels, -1)).reshape(features.shape)


def test_per_sample_gaussian_kl_equals_the_closed_form_per_clip():
    target, estimate = random_features(0)  # 6 frames: 2 clips of 3
    value = kl_alignment_loss(target, estimate, mode="gaussian", frames_per_clip=3)
    assert value.item() == pytest.approx(reference_kl(target, estimate, clips=2).item(), rel=1e-4)
    assert kl_alignment_loss(target, target, mode="gaussian", frames_per_clip=3).item() == pytest.approx(0, abs=1e-5)
    # Each frame its own sample by default; one clip of all frames is the (ungathered) batch form.
    per_frame = kl_alignment_loss(target, estimate, mode="gaussian")
    assert per_frame.item() == pytest.approx(reference_kl(target, estimate, clips=6).item(), rel=1e-4)
    whole = kl_alignment_loss(target, estimate, mode="gaussian", frames_per_clip=6)
    assert whole.item() == pytest.approx(kl_alignment_loss(target, estimate, mode="gaussian_batch").item(), rel=1e-6)


def test_frames_per_clip_groups_the_frames_of_each_clip():
    target, estimate = random_features(5)
    by_clip = kl_alignment_loss(target, estimate, frames_per_clip=3)
    by_frame = kl_alignment_loss(target, estimate, frames_per_clip=1)
    assert by_clip.item() != pytest.approx(by_frame.item(), rel=1e-3)
    # Rows b*T ... b*T+T-1 are clip b: swapping two frames within a clip keeps the value, across clips changes it.
    within = torch.tensor([1, 0, 2, 3, 4, 5])
    across = torch.tensor([0, 1, 3, 2, 4, 5])
    assert kl_alignment_loss(target[within], estimate[within], frames_per_clip=3).item() == pytest.approx(
        by_clip.item(), rel=1e-6
    )
    assert kl_alignment_loss(target[across], estimate, frames_per_clip=3).item() != pytest.approx(
        by_clip.item(), rel=1e-3
    )
    with pytest.raises(ValueError, match="frames_per_clip=4"):
        kl_alignment_loss(target, estimate, frames_per_clip=4)


def test_batch_gaussian_kl_equals_the_closed_form_of_the_batch_moments():
    target, estimate = random_features(0)
    value = kl_alignment_loss(target, estimate, mode="gaussian_batch")
    assert value.item() == pytest.approx(reference_kl(target, estimate, clips=1).item(), rel=1e-4)
    assert kl_alignment_loss(target, target, mode="gaussian_batch").item() == pytest.approx(0.0, abs=1e-5)


def test_gaussian_kl_does_not_depend_on_which_token_is_where():
    target, estimate = random_features(1)
    shuffled = shuffle_tokens_within_frames(estimate, seed=3)
    for mode in ("gaussian", "gaussian_batch"):
        value = kl_alignment_loss(target, estimate, mode=mode, frames_per_clip=3)
        assert kl_alignment_loss(target, shuffled, mode=mode, frames_per_clip=3).item() == pytest.approx(
            value.item(), rel=1e-6
        )
    # token_softmax compares patches position by position: the same shuffle changes it.
    assert kl_alignment_loss(target, shuffled, mode="token_softmax").item() != pytest.approx(
        kl_alignment_loss(target, estimate, mode="token_softmax").item(), rel=1e-3
    )


def test_shuffling_the_pairs_changes_the_per_sample_kl_but_not_the_batch_kl():
    target, estimate = random_features(6, frames=8)  # 4 clips of 2 frames
    clips = target.reshape(4, 2, *target.shape[1:])
    mispaired = clips[torch.tensor([2, 0, 3, 1])].reshape(target.shape)  # every exo clip beside another ego clip
    paired = kl_alignment_loss(target, estimate, mode="gaussian", frames_per_clip=2)
    shuffled = kl_alignment_loss(mispaired, estimate, mode="gaussian", frames_per_clip=2)
    assert shuffled.item() != pytest.approx(paired.item(), rel=1e-3)
    batch = kl_alignment_loss(target, estimate, mode="gaussian_batch")
    assert kl_alignment_loss(mispaired, estimate, mode="gaussian_batch").item() == pytest.approx(
        batch.item(), abs=1e-6
    )


def test_per_sample_kl_of_equal_shards_averages_to_the_global_batch():
    """What data parallelism relies on without a gather: the mean of two equal shards' losses and gradients (the
    gradient DDP/FSDP average) is the global batch's."""
    target, estimate = random_features(7, frames=8)
    estimate.requires_grad_(True)
    kl_alignment_loss(target, estimate, frames_per_clip=2).backward()
    full = estimate.grad.clone()
    shard_losses, shard_grads = [], []
    for shard in (slice(0, 4), slice(4, 8)):
        local = estimate[shard].detach().clone().requires_grad_(True)
        loss = kl_alignment_loss(target[shard], local, frames_per_clip=2)
        loss.backward()
        shard_losses.append(loss.item())
        shard_grads.append(local.grad)
    assert sum(shard_losses) / 2 == pytest.approx(kl_alignment_loss(target, estimate, frames_per_clip=2).item())
    torch.testing.assert_close(torch.cat(shard_grads) / 2, full, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("mode", KL_MODES)
def test_teacher_features_get_a_kl_gradient_only_when_not_detached(mode):
    target, estimate = random_features(2)
    target.requires_grad_(True)
    estimate.requires_grad_(True)
    kl_alignment_loss(target, estimate, mode=mode).backward()
    assert target.grad is None and estimate.grad.abs().sum() > 0
    kl_alignment_loss(target, estimate, mode=mode, detach_target=False).backward()
    assert target.grad is not None and target.grad.abs().sum() > 0


def _rank_kl(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        target, estimate = random_features(4, frames=6)
        # Uneven shards (4 + 2 frames): the merge weighs each rank by its token count.
        bounds = [(0, 4), (4, 6)][rank]
        local_target = target[bounds[0] : bounds[1]].clone().requires_grad_(True)
        local_estimate = estimate[bounds[0] : bounds[1]].clone().requires_grad_(True)
        loss = kl_alignment_loss(
            local_target, local_estimate, mode="gaussian_batch", detach_target=False, gather_statistics=True
        )
        loss.backward()
        torch.save(
            {"loss": loss.detach(), "grad_estimate": local_estimate.grad, "grad_target": local_target.grad},
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        torch.distributed.destroy_process_group()


def test_batch_gaussian_kl_is_the_same_on_one_and_two_processes(tmp_path):
    target, estimate = random_features(4, frames=6)
    target.requires_grad_(True)
    estimate.requires_grad_(True)
    # no process group: local statistics
    single = kl_alignment_loss(target, estimate, mode="gaussian_batch", detach_target=False, gather_statistics=True)
    single.backward()

    # fork: the children inherit the imported modules (spawn would re-import torch and transformers in each)
    mp.start_processes(_rank_kl, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    for result in ranks:
        assert result["loss"].item() == pytest.approx(single.item(), rel=1e-5)
    # The gather's backward sums every rank's gradient of its own statistics; data parallelism then averages over
    # the 2 ranks, which gives the single-process gradient of the global-batch loss.
    for name, full in (("grad_estimate", estimate.grad), ("grad_target", target.grad)):
        merged = torch.cat([ranks[0][name], ranks[1][name]]) / 2
        torch.testing.assert_close(merged, full, rtol=1e-4, atol=1e-7)
    # Without the gather each rank would see only its own tokens (a different value than the global batch).
    local = kl_alignment_loss(target[:4], estimate[:4], mode="gaussian_batch")
    assert local.item() != pytest.approx(single.item(), rel=1e-3)


def test_kl_settings_are_training_arguments_and_old_configs_still_load(tmp_path):
    from exo2ego_base.tiny import tiny_config_kwargs
    from train.trainer import Exo2EgoTrainingArguments

    args = Exo2EgoTrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none")
    assert (args.kl_mode, args.kl_temperature, args.kl_gather_statistics) == ("gaussian", 1.0, True)
    with pytest.raises(ValueError, match="kl_mode must be one of"):
        Exo2EgoTrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none", kl_mode="cosine")

    config = Exo2EgoConfig(**tiny_config_kwargs())
    config.save_pretrained(tmp_path / "model")
    assert "kl_mode" not in json.loads((tmp_path / "model" / "config.json").read_text())
    # A config written before the move holds the two keys: it loads, and re-saving drops them.
    path = tmp_path / "model" / "config.json"
    old = json.loads(path.read_text())
    path.write_text(json.dumps({**old, "kl_mode": "token_softmax", "kl_temperature": 2.0}))
    loaded = Exo2EgoConfig.from_pretrained(tmp_path / "model")
    assert not hasattr(loaded, "kl_mode") and not hasattr(loaded, "kl_temperature")
    loaded.save_pretrained(tmp_path / "again")
    assert "kl_temperature" not in json.loads((tmp_path / "again" / "config.json").read_text())
