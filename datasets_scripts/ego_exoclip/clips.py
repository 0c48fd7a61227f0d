"""The Ego-ExoClip clip rule (Exo2Ego paper, eq. 1), implemented literally.

For one narration sequence t_0 <= t_1 <= ... <= t_{n-1} (seconds) of a take of duration D:

    beta     = mean(t_{i+1} - t_i)                      (the sequence's mean gap; alpha if n < 2)
    half     = beta / (2 * alpha)
    start_i  = max(t_i - half, t_{i-1}),  t_{-1} := 0
    end_i    = min(t_i + half, t_{i+1}),  t_n    := D
    then clamped to [0, D]; a clip shorter than ``min_clip_sec`` (equal neighbouring timestamps) is
    widened to ``min_clip_sec`` around t_i (inside [0, D]) and counted.

alpha is the mean of beta over all sequences with >= 2 narrations (the paper's 1.92 s on Ego-Exo4D).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

PAPER_ALPHA_SEC = 1.92
DEFAULT_MIN_CLIP_SEC = 1 / 30  # one frame of Ego-Exo4D's 30 fps videos


@dataclass(frozen=True)
class ClipBounds:
    start_sec: float
    end_sec: float
    widened: bool  # the raw window was shorter than min_clip_sec


def sequence_beta(timestamps: Sequence[float]) -> float | None:
    """Mean gap between consecutive (sorted) timestamps; None with fewer than 2 narrations."""
    if len(timestamps) < 2:
        return None
    return (timestamps[-1] - timestamps[0]) / (len(timestamps) - 1)


def estimate_alpha(sequences: Sequence[Sequence[float]]) -> float | None:
    """Mean of :func:`sequence_beta` over the sequences that have one (None if none has)."""
    betas = [beta for beta in map(sequence_beta, sequences) if beta is not None]
    return sum(betas) / len(betas) if betas else None


def clip_bounds(
    timestamps: Sequence[float], duration: float, alpha: float, min_clip_sec: float = DEFAULT_MIN_CLIP_SEC
) -> tuple[float, list[ClipBounds]]:
    """Eq. 1 for one sorted sequence; returns (beta used, one :class:`ClipBounds` per timestamp)."""
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    if any(b < a for a, b in zip(timestamps, timestamps[1:])):
        raise ValueError("timestamps must be sorted")
    beta = sequence_beta(timestamps)
    beta = alpha if beta is None else beta
    half = beta / (2 * alpha)
    bounds = []
    for i, t in enumerate(timestamps):
        previous = timestamps[i - 1] if i > 0 else 0.0
        following = timestamps[i + 1] if i + 1 < len(timestamps) else duration
        start = min(max(max(t - half, previous), 0.0), duration)
        end = max(min(min(t + half, following), duration), 0.0)
        widened = end - start < min_clip_sec
        if widened:
            width = min(min_clip_sec, duration)
            start = min(max(0.0, t - width / 2), duration - width)
            end = start + width
        bounds.append(ClipBounds(start, end, widened))
    return beta, bounds
