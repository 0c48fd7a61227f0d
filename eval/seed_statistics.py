"""Seed-level statistics for ablations: is an arm better or worse than the full pipeline?

An ablation evaluates an *arm* (a variant of the training pipeline) and the *full* pipeline on the same
benchmark questions for each of several seeds. The quantity of interest is the arm's accuracy minus the
full pipeline's accuracy. Two sources of noise matter:

- **Seeds.** Each seed has its own synthetic world and training seed, and the difference varies far more
  between seeds than the number of questions suggests. This variance usually dominates.
- **Clustered questions.** Questions come in clusters (several questions per video take) whose answers
  are correlated, so a take's questions carry less information than as many independent questions.

The statistics here (all differences are fractions; :func:`compare` reports percentage points):

- :func:`per_seed_differences`: per seed, arm accuracy minus full accuracy.
- :func:`two_level_bootstrap_ci`: a percentile bootstrap that resamples seeds, then clusters within each
  drawn seed, so its interval includes both sources of noise. This is the primary interval.
- :func:`paired_t_interval`: the paired t interval over the per-seed differences (seed variance only;
  the question noise enters through each seed's difference).
- :func:`sign_flip_p_value`: the exact two-sided sign-flip (paired permutation) p-value over seeds; it
  assumes nothing about the shape of the distribution of the differences.
- :func:`minimum_detectable_effect`: the smallest true difference a paired t-test over ``n`` seeds detects
  with a given power: what a null result can rule out.
- :func:`verdict`: held / failed / undecided for a pre-registered threshold, read off an interval.

An interval from resampling questions alone (``within_seed_question_ci`` in :func:`compare`) treats the
seeds as fixed and the questions as independent; it claims too much precision and is reported only to
show how much narrower it is than the two-level interval.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

# Resamples are drawn in batches of at most this many random numbers, to bound memory.
_MAX_BATCH_ELEMENTS = 1 << 22

# `sign_flip_p_value` enumerates 2**n sign assignments; 2**20 (a million) is the most it does.
_MAX_SIGN_FLIP_SEEDS = 20


@dataclass(frozen=True)
class SeedRun:
    """One seed's per-question results for the arm and the full pipeline.

    ``arm``: (n_questions,) correctness of the arm (0/1), ``full``: (n_questions,) correctness of the full
    pipeline on the same questions in the same order, ``clusters``: (n_questions,) the cluster (take) id of
    each question, any hashable values. ``arm`` and ``full`` are stored as float arrays.
    """

    arm: np.ndarray
    full: np.ndarray
    clusters: np.ndarray

    def __post_init__(self) -> None:
        for name in ("arm", "full", "clusters"):
            value = np.asarray(getattr(self, name), dtype=None if name == "clusters" else float)
            if value.ndim != 1:
                raise ValueError(f"SeedRun.{name} must be 1-D, got shape {value.shape}")
            if value.size == 0:
                raise ValueError(f"SeedRun.{name} is empty: a seed needs at least one question")
            if name != "clusters" and not np.all(np.isfinite(value)):
                raise ValueError(f"SeedRun.{name} has non-finite values")
            object.__setattr__(self, name, value)
        for name in ("full", "clusters"):
            if len(getattr(self, name)) != len(self.arm):
                raise ValueError(
                    f"SeedRun.{name} has {len(getattr(self, name))} entries but SeedRun.arm has {len(self.arm)}"
                )


def per_seed_differences(runs: Sequence[SeedRun]) -> np.ndarray:
    """(n_seeds,) per seed, the arm's accuracy minus the full pipeline's accuracy (fractions)."""
    return np.array([run.arm.mean() - run.full.mean() for run in runs])


def _batch_sizes(resamples: int, elements_per_resample: int) -> Iterator[int]:
    step = max(1, _MAX_BATCH_ELEMENTS // elements_per_resample)
    for start in range(0, resamples, step):
        yield min(step, resamples - start)


def _percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def two_level_bootstrap_ci(
    runs: Sequence[SeedRun], level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval (fractions) for the mean over seeds of the per-seed difference.

    Each resample draws ``len(runs)`` seeds with replacement; within each drawn seed it draws that seed's
    clusters with replacement (as many as the seed has) and takes the mean of the per-question differences
    (arm - full) over all questions of the drawn clusters, so clusters weigh by their size. The resample's
    statistic is the mean of these per-seed values. ``seed`` seeds the random generator.
    """
    if not runs:
        raise ValueError("two_level_bootstrap_ci needs at least one seed")
    # Per seed, per cluster: sum of the per-question differences and number of questions, padded to the
    # largest number of clusters; the padding is never drawn.
    per_seed_sums, per_seed_counts = [], []
    for run in runs:
        codes: dict = {}
        cluster_index = np.array([codes.setdefault(c, len(codes)) for c in run.clusters.tolist()])
        per_seed_sums.append(np.bincount(cluster_index, weights=run.arm - run.full))
        per_seed_counts.append(np.bincount(cluster_index))
    n_clusters = np.array([len(c) for c in per_seed_counts])
    width = n_clusters.max()
    sums = np.zeros((len(runs), width))
    counts = np.zeros((len(runs), width))
    for i, (s, c) in enumerate(zip(per_seed_sums, per_seed_counts)):
        sums[i, : len(s)], counts[i, : len(c)] = s, c

    rng = np.random.default_rng(seed)
    statistics = []
    for batch in _batch_sizes(resamples, len(runs) * width):
        seeds = rng.integers(0, len(runs), size=(batch, len(runs)))
        drawn_n = n_clusters[seeds][..., None]  # (batch, n_seeds, 1)
        clusters = rng.integers(0, drawn_n, size=(batch, len(runs), width))
        used = np.arange(width) < drawn_n  # a seed with fewer clusters draws fewer
        seed_rows = seeds[..., None]
        total = np.where(used, sums[seed_rows, clusters], 0.0).sum(axis=-1)
        questions = np.where(used, counts[seed_rows, clusters], 0.0).sum(axis=-1)
        statistics.append((total / questions).mean(axis=-1))
    return _percentile_interval(np.concatenate(statistics), level)


def paired_t_interval(differences: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Paired t interval for the mean of ``differences`` (n_seeds,), in the differences' units.

    mean +- t_{(1+level)/2, n-1} * sd / sqrt(n), with sd the sample standard deviation (ddof=1).
    """
    differences = np.asarray(differences, dtype=float)
    n = len(differences)
    if n < 2:
        raise ValueError(f"paired_t_interval needs at least 2 differences, got {n}")
    half_width = stats.t.ppf((1 + level) / 2, n - 1) * differences.std(ddof=1) / np.sqrt(n)
    mean = differences.mean()
    return float(mean - half_width), float(mean + half_width)


def sign_flip_p_value(differences: np.ndarray) -> float:
    """Exact two-sided sign-flip (paired permutation) p-value for "the mean difference is 0".

    Under the null each difference (n_seeds,) is as likely positive as negative. All 2**n sign assignments
    (the identity included) are enumerated; p is the fraction whose |mean| is at least the observed |mean|
    (up to a tiny relative tolerance, so ties count). The smallest possible p is 2 / 2**n; with all
    differences zero p is 1.
    """
    differences = np.asarray(differences, dtype=float)
    n = len(differences)
    if n == 0:
        raise ValueError("sign_flip_p_value needs at least one difference")
    if n > _MAX_SIGN_FLIP_SEEDS:
        raise ValueError(
            f"sign_flip_p_value enumerates 2**n sign assignments and refuses n={n} > {_MAX_SIGN_FLIP_SEEDS}: "
            "use fewer seeds or a Monte-Carlo permutation test"
        )
    # Sums (n times the mean) of every sign assignment, built one difference at a time.
    sums = np.zeros(1)
    for d in differences:
        sums = np.concatenate([sums + d, sums - d])
    tolerance = 1e-12 * np.abs(differences).sum()
    return float(np.mean(np.abs(sums) >= abs(differences.sum()) - tolerance))


def minimum_detectable_effect(sd: float, n: int, level: float = 0.95, power: float = 0.8) -> float:
    """Smallest true mean difference a two-sided paired t-test over ``n`` seeds detects with ``power``.

    ``sd`` is the standard deviation of the per-seed differences; the result is in its units. This is the
    usual approximation (t_{(1+level)/2, n-1} + t_{power, n-1}) * sd / sqrt(n), which ignores the
    noncentral t distribution and the test's other tail; the exact power at this effect is close to
    ``power`` (0.798 for n=8 at 0.8).
    """
    if n < 2:
        raise ValueError(f"minimum_detectable_effect needs n >= 2 seeds, got {n}")
    return float((stats.t.ppf((1 + level) / 2, n - 1) + stats.t.ppf(power, n - 1)) * sd / np.sqrt(n))


def _within_seed_question_ci(
    runs: Sequence[SeedRun], level: float, resamples: int, seed: int
) -> tuple[float, float] | None:
    """Percentile bootstrap over questions only of the seed-averaged per-question difference (fractions).

    Within-seed only: it ignores the variance between seeds and the clustering of questions, so it is too
    narrow for claims about the pipeline. None unless all seeds share the same questions (same clusters
    in the same order).
    """
    if any(not np.array_equal(run.clusters, runs[0].clusters) for run in runs[1:]):
        return None
    per_question = np.mean([run.arm - run.full for run in runs], axis=0)
    n = len(per_question)
    rng = np.random.default_rng(seed)
    means = [per_question[rng.integers(0, n, size=(batch, n))].mean(axis=1) for batch in _batch_sizes(resamples, n)]
    return _percentile_interval(np.concatenate(means), level)


def compare(runs: Sequence[SeedRun], level: float = 0.95, resamples: int = 2000, seed: int = 0) -> dict:
    """All statistics for one arm against the full pipeline, in percentage points, as a JSON-ready dict.

    Keys: ``diff`` mean over seeds of the per-seed differences; ``per_seed`` the per-seed differences;
    ``two_level_ci`` [low, high] the two-level (seeds, then clusters) bootstrap interval; ``t_ci``
    [low, high] the paired t interval over seeds; ``sign_flip_p`` the exact sign-flip p-value (a
    probability, not points); ``mde_80`` the minimum detectable effect at 80% power from the sd of the
    per-seed differences; ``n_seeds``; ``n_questions`` questions per seed; ``within_seed_question_ci``
    [low, high] a bootstrap over questions only of the seed-averaged per-question difference, which
    ignores seed variance (within-seed only, too narrow; None when the seeds' questions differ).
    Needs 2 to 20 seeds.
    """
    differences = per_seed_differences(runs)

    def points(interval: tuple[float, float] | None) -> list[float] | None:
        return None if interval is None else [100 * interval[0], 100 * interval[1]]

    return {
        "diff": float(100 * differences.mean()),
        "per_seed": [float(100 * d) for d in differences],
        "two_level_ci": points(two_level_bootstrap_ci(runs, level, resamples, seed)),
        "t_ci": points(paired_t_interval(differences, level)),
        "sign_flip_p": sign_flip_p_value(differences),
        "mde_80": 100 * minimum_detectable_effect(float(differences.std(ddof=1)), len(differences), level, 0.8),
        "n_seeds": len(runs),
        "n_questions": [len(run.arm) for run in runs],
        "within_seed_question_ci": points(_within_seed_question_ci(runs, level, resamples, seed)),
    }


def verdict(interval: tuple[float, float], threshold: float, direction: str) -> str:
    """Verdict on a pre-registered hypothesis about an effect, read off its interval (low, high).

    ``"above"`` (the effect exceeds ``threshold``): "held" when low > threshold, "failed" when
    high <= threshold. ``"not_below"`` (the effect is not worse than ``threshold``, usually negative, e.g.
    -5 points): "held" when low > threshold, "failed" when high < threshold. Otherwise "undecided".
    """
    low, high = interval
    if direction == "above":
        failed = high <= threshold
    elif direction == "not_below":
        failed = high < threshold
    else:
        raise ValueError(f'direction must be "above" or "not_below", got {direction!r}')
    if low > threshold:
        return "held"
    return "failed" if failed else "undecided"
