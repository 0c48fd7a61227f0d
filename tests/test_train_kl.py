"""The stage-2 KL: Gaussian form against a closed-form reference, permutation invariance, the same value and
gradient on 1 and 2 processes for one global batch (gloo on CPU), the teacher gradient, and KL settings living in
the training arguments (not in the released model config)."""

import json
import os

import pytest
import torch
import torch.multiprocessing as mp

from modeling_exo2ego import Exo2EgoConfig, kl_alignment_loss
from modeling_exo2ego.modeling_exo2ego import KL_MODES


def random_features(seed: int, frames: int = 6, channels: int = 5, grid: int = 4):
    generator = torch.Generator().manual_seed(seed)
    shape = (frames, channels, grid, grid)
    target = torch.randn(shape, generator=generator) * 2 + 1
    estimate = torch.randn(shape, generator=generator) * 0.5 - 0.3
    return target, estimate


def test_gaussian_kl_equals_the_closed_form_of_diagonal_gaussians():
    target, estimate = random_features(0)
    # Reference: per-channel Normals from numpy-style statistics over every (frame, row, column) token, KL by
    # torch.distributions (independent of the implementation under test), averaged over channels.
    tokens_t = target.permute(1, 0, 2, 3).reshape(target.shape[1], -1).double()
    tokens_e = estimate.permute(1, 0, 2, 3).reshape(estimate.shape[1], -1).double()
    normal_t = torch.distributions.Normal(tokens_t.mean(1), tokens_t.var(1, unbiased=False).sqrt())
    normal_e = torch.distributions.Normal(tokens_e.mean(1), tokens_e.var(1, unbiased=False).sqrt())
    reference = torch.distributions.kl_divergence(normal_t, normal_e).mean()
    value = kl_alignment_loss(target, estimate, mode="gaussian")
    assert value.item() == pytest.approx(reference.item(), rel=1e-4)
    assert kl_alignment_loss(target, target, mode="gaussian").item() == pytest.approx(0.0, abs=1e-5)


def test_gaussian_kl_does_not_depend_on_which_token_is_where():
    target, estimate = random_features(1)
    value = kl_alignment_loss(target, estimate, mode="gaussian")
    channels = target.shape[1]
    flat = estimate.permute(0, 2, 3, 1).reshape(-1, channels)  # (tokens, C)
    shuffled = flat[torch.randperm(flat.shape[0], generator=torch.Generator().manual_seed(3))]
    shuffled = shuffled.reshape(estimate.shape[0], estimate.shape[2], estimate.shape[3], channels).permute(0, 3, 1, 2)
    assert kl_alignment_loss(target, shuffled, mode="gaussian").item() == pytest.approx(value.item(), rel=1e-6)
    # token_softmax compares patches position by position: the same shuffle changes it.
    assert kl_alignment_loss(target, shuffled, mode="token_softmax").item() != pytest.approx(
        kl_alignment_loss(target, estimate, mode="token_softmax").item(), rel=1e-3
    )


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
        loss = kl_alignment_loss(local_target, local_estimate, detach_target=False, gather_statistics=True)
        loss.backward()
        torch.save(
            {"loss": loss.detach(), "grad_estimate": local_estimate.grad, "grad_target": local_target.grad},
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        torch.distributed.destroy_process_group()


def test_gaussian_kl_is_the_same_on_one_and_two_processes(tmp_path):
    target, estimate = random_features(4, frames=6)
    target.requires_grad_(True)
    estimate.requires_grad_(True)
    single = kl_alignment_loss(target, estimate, detach_target=False, gather_statistics=True)  # no group: local
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
    local = kl_alignment_loss(target[:4], estimate[:4])
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
