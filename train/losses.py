"""Stage-2 training losses: the KL between real and estimated exocentric features, and the cycle loss.

The model computes the feature grids, the training code computes the losses on them. With
`output_mapping_features=True` (paired ego and exo pixels) `Exo2EgoForConditionalGeneration` returns six grids,
each (B*T, C, g, g) for B clips of T frames, tower width C and a g x g patch grid, clip b in rows b*T ... b*T+T-1:
x (`ego_features`), y (`exo_features`), F(x) (`ego_to_exo`), G(y) (`exo_to_ego`), G(F(x)) (`ego_cycle`) and
F(G(y)) (`exo_cycle`). The Hub bundle (`modeling_exo2ego/`) ships the model only; the losses below, and the
collective that `gaussian_batch` needs, live here, in the training layer.

- `kl_alignment_loss(y, F(x), mode=...)`: KL(y || y_hat), y_hat = F(x), in one of the paper's forms (`KL_MODES`):
    - `gaussian` (default): per clip, i.e. per synchronized ego-exo pair, the closed-form KL between diagonal
      Gaussians from each channel's mean and variance over that clip's T*g*g tokens (`clip_moments`: (B, C) each),
      averaged over channels and clips;
    - `gaussian_batch`: the same closed form on the moments over every token of the batch ((C,) each); with
      `gather_statistics`, over the tokens of every data-parallel rank (one autograd-aware all-gather of 2C + 1
      floats per rank, `torch.distributed.nn.functional.all_gather`);
    - `token_softmax`: per token, the KL between softmaxes over the C channels at temperature tau ((B*T*g*g, C)
      distributions);
    - `pooled`: `token_softmax` on per-frame mean-pooled features ((B*T, C) distributions).
- `cycle_consistency_loss(x, G(F(x)), y, F(G(y)))`: ||G(F(x)) - x||_1 + ||F(G(y)) - y||_1, element means.

Each returns a scalar computed in fp32. `train.trainer.Exo2EgoTrainer` weighs them by `kl_weight` and `ccl_weight`
(its training arguments own `kl_mode`, `kl_temperature` and `kl_gather_statistics`).
"""

from typing import Literal

import torch
import torch.nn.functional as F

KL_MODES = ("gaussian", "gaussian_batch", "token_softmax", "pooled")


def clip_moments(features: torch.Tensor, frames_per_clip: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-clip, per-channel mean and (biased) variance of (B*T, C, g, g) features, T = `frames_per_clip`: each over
    its clip's own T*g*g tokens, in fp32. Returns two (B, C) tensors."""
    rows, channels = features.shape[:2]
    if frames_per_clip < 1 or rows % frames_per_clip:
        raise ValueError(f"{rows} feature frames do not split into clips of frames_per_clip={frames_per_clip}")
    clips = features.float().reshape(rows // frames_per_clip, frames_per_clip, channels, -1)
    tokens = clips.transpose(1, 2).flatten(2)  # (B, C, T*g*g)
    variance, mean = torch.var_mean(tokens, dim=2, correction=0)
    return mean, variance


def _gaussian_moments(features: torch.Tensor, gather: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (biased) variance of (B*T, C, g, g) features over all their tokens, in fp32. Returns two
    (C,) tensors.

    With `gather` and an initialised process group of more than one rank, the statistics cover the tokens of every
    rank: each rank's (count, mean, sum of squared deviations) is all-gathered with the autograd-aware collective and
    merged with the parallel-variance formula (stable, unlike E[y^2] - E[y]^2). The gathered tensors are 2C + 1
    floats per rank, so the cost is one small all-gather per call, independent of the batch size. Every rank must
    make the call (it is a collective). The backward of the gather sums each rank's gradient of its own statistics
    over ranks, so after DDP/FSDP average the gradients, they equal the gradient of the global-batch loss.
    """
    tokens = features.float().transpose(0, 1).flatten(1)  # (C, tokens)
    count = torch.tensor(float(tokens.shape[1]), device=tokens.device)
    variance, mean = torch.var_mean(tokens, dim=1, correction=0)
    squared_deviations = variance * count
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if not (gather and distributed and torch.distributed.get_world_size() > 1):
        return mean, variance
    # Deferred, optional: torch built without USE_DISTRIBUTED cannot import torch.distributed.nn.
    from torch.distributed.nn.functional import all_gather

    local = torch.cat([count[None], mean, squared_deviations])
    stacked = torch.stack(all_gather(local))  # (world, 2C + 1)
    counts, means, deviations = stacked[:, :1], stacked[:, 1 : 1 + mean.numel()], stacked[:, 1 + mean.numel() :]
    total = counts.sum()
    global_mean = (counts * means).sum(0) / total
    global_deviations = (deviations + counts * (means - global_mean) ** 2).sum(0)
    return global_mean, global_deviations / total


def _diagonal_gaussian_kl(
    mean_t: torch.Tensor, var_t: torch.Tensor, mean_e: torch.Tensor, var_e: torch.Tensor
) -> torch.Tensor:
    """Closed-form KL(N(mean_t, var_t) || N(mean_e, var_e)) per element, with a 1e-6 variance floor: four moments
    of one shape ((B, C) per clip, (C,) per batch) give a KL of that shape."""
    var_t, var_e = var_t + 1e-6, var_e + 1e-6
    return 0.5 * (torch.log(var_e / var_t) + (var_t + (mean_t - mean_e) ** 2) / var_e - 1)


def kl_alignment_loss(
    exo_features: torch.Tensor,
    mapped_ego_features: torch.Tensor,
    mode: Literal["gaussian", "gaussian_batch", "token_softmax", "pooled"] = "gaussian",
    temperature: float = 1.0,
    detach_target: bool = True,
    gather_statistics: bool = False,
    frames_per_clip: int = 1,
) -> torch.Tensor:
    """KL(real exo features y || estimated exo features y_hat = F(x)), computed in fp32; returns a scalar.

    Both inputs are (B*T, C, g, g): T frames per clip (`frames_per_clip`; 1 makes each frame a sample), clip b in rows
    b*T ... b*T+T-1, clip b of y and of y_hat from one synchronized ego-exo pair. The paper cites "On the properties of
    KL divergence between multivariate Gaussian distributions" and computes the KL "between the exocentric sample y and
    the estimated exocentric sample y_hat = F(x)" of such pairs, hence the default:
    - `gaussian`: per clip and channel c, mean m and variance v of y and of y_hat over that clip's own T*g*g tokens,
      then the closed form 0.5 * (log(v_hat / v) + (v + (m - m_hat)^2) / v_hat - 1), averaged over channels, then
      over clips. Within a clip it does not depend on which token is where, so ego and exo patches need not
      correspond; across clips it compares each y with its own pair's y_hat. A mean of per-clip terms needs no
      gathering: with equal per-rank batches, DDP/FSDP gradient averaging already gives the global-batch gradient.
    - `gaussian_batch`: the same closed form on the moments over all tokens of the batch (B*T*g*g; of all ranks
      with `gather_statistics`, see `_gaussian_moments`): a distribution match that ignores the pairing.
    - `token_softmax`: per token, softmax over channels at temperature tau,
      tau^2 * KL(softmax(y/tau) || softmax(y_hat/tau)), averaged over tokens (assumes the two cameras' patches
      correspond position by position, which they do not);
    - `pooled`: `token_softmax` on per-frame mean-pooled features (alignment-free, per frame).

    `detach_target` (default) treats y as a fixed teacher target; pass False when the exo tower trains (Table 8 #2:
    teacher and student "learn from each other"), so y receives the KL gradient too.
    """
    if mode not in KL_MODES:
        raise ValueError(f"unknown kl_mode {mode!r}; expected one of {KL_MODES}")
    target = exo_features.detach() if detach_target else exo_features
    if mode == "gaussian":
        kl = _diagonal_gaussian_kl(
            *clip_moments(target, frames_per_clip), *clip_moments(mapped_ego_features, frames_per_clip)
        )  # (B, C)
        return kl.mean()
    if mode == "gaussian_batch":
        kl = _diagonal_gaussian_kl(
            *_gaussian_moments(target, gather_statistics), *_gaussian_moments(mapped_ego_features, gather_statistics)
        )  # (C,)
        return kl.mean()
    target, estimate = target.float(), mapped_ego_features.float()
    if mode == "pooled":
        target, estimate = target.mean((2, 3)), estimate.mean((2, 3))  # (B*T, C)
    else:
        # (B*T, C, g, g) -> (B*T*g*g, C): one distribution over channels per token
        target = target.flatten(2).transpose(1, 2).flatten(0, 1)
        estimate = estimate.flatten(2).transpose(1, 2).flatten(0, 1)
    log_p = F.log_softmax(target / temperature, dim=-1)
    log_q = F.log_softmax(estimate / temperature, dim=-1)
    return temperature**2 * F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")


def cycle_consistency_loss(
    ego_features: torch.Tensor, ego_cycle: torch.Tensor, exo_features: torch.Tensor, exo_cycle: torch.Tensor
) -> torch.Tensor:
    """Cycle loss ||G(F(x)) - x||_1 + ||F(G(y)) - y||_1, each an element mean (CycleGAN's L1), in fp32.

    x (`ego_features`), G(F(x)) (`ego_cycle`), y (`exo_features`) and F(G(y)) (`exo_cycle`) are (B*T, C, g, g);
    returns a scalar.
    """
    return F.l1_loss(ego_cycle.float(), ego_features.float()) + F.l1_loss(exo_cycle.float(), exo_features.float())


__all__ = ["KL_MODES", "clip_moments", "kl_alignment_loss", "cycle_consistency_loss"]
