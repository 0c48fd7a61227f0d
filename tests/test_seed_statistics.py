"""Tests for eval.seed_statistics: hand-computed cases, agreement with scipy, a planted effect and a null."""

import json

import numpy as np
import pytest
from scipy import stats

from eval.seed_statistics import (
    SeedRun,
    compare,
    minimum_detectable_effect,
    paired_t_interval,
    per_seed_differences,
    sign_flip_p_value,
    two_level_bootstrap_ci,
    verdict,
)


def hand_runs() -> list[SeedRun]:
    # 5 questions per seed; the arm gets 1, 2, 3 more right than the full pipeline: differences 0.2, 0.4, 0.6.
    clusters = np.array(["a", "a", "b", "b", "c"])
    return [
        SeedRun(arm=np.array([1, 1, 0, 0, 0]), full=np.array([1, 0, 0, 0, 0]), clusters=clusters),
        SeedRun(arm=np.array([1, 1, 1, 0, 0]), full=np.array([0, 0, 1, 0, 0]), clusters=clusters),
        SeedRun(arm=np.array([1, 1, 1, 1, 0]), full=np.array([1, 0, 0, 0, 0]), clusters=clusters),
    ]


def simulate(rng: np.random.Generator, n_seeds: int = 8, n_takes: int = 60, per_take: int = 10):
    """Per seed: the full pipeline's correctness, an arm with a planted effect, an arm from the null, clusters.

    Each seed has its own accuracy (0.3-0.6); each take its own difficulty around it (take-level correlation).
    The "effect" arm is the full pipeline with every question of the first half of the takes made correct;
    the "null" arm is an independent draw from the same process as the full pipeline.
    """
    clusters = np.repeat(np.arange(n_takes), per_take)
    effect, null = [], []
    for _ in range(n_seeds):
        seed_logit = np.log(p := rng.uniform(0.3, 0.6)) - np.log(1 - p)

        def draw() -> np.ndarray:
            take_p = 1 / (1 + np.exp(-(seed_logit + rng.normal(0, 1, n_takes))))
            return (rng.random(n_takes * per_take) < take_p[clusters]).astype(float)

        full = draw()
        planted = np.where(clusters < n_takes // 2, 1.0, full)
        effect.append(SeedRun(arm=planted, full=full, clusters=clusters))
        null.append(SeedRun(arm=draw(), full=full, clusters=clusters))
    return effect, null


# ------------------------------------------------------------------------------------- hand-computed


def test_hand_computed_differences_t_interval_and_sign_flip():
    runs = hand_runs()
    differences = per_seed_differences(runs)
    np.testing.assert_allclose(differences, [0.2, 0.4, 0.6])
    # mean 0.4, sd 0.2, n 3: 0.4 +- t_{0.975, 2} * 0.2 / sqrt(3), t_{0.975, 2} = 4.302652729749462.
    half_width = stats.t.ppf(0.975, 2) * 0.2 / np.sqrt(3)
    assert half_width == pytest.approx(0.4968275, abs=1e-6)
    assert paired_t_interval(differences) == pytest.approx((0.4 - 0.4968275, 0.4 + 0.4968275), abs=1e-6)
    # All three positive: only the identity and its negation reach |mean| = 0.4, p = 2/8.
    assert sign_flip_p_value(differences) == 0.25
    # [0.2, -0.2, 0.4]: mean 0.4/3; |sum| >= 0.4 for (+,+,+), (+,-,+), (-,-,+) and their negations: 6/8 (ties count).
    assert sign_flip_p_value(np.array([0.2, -0.2, 0.4])) == 0.75
    assert sign_flip_p_value(np.zeros(5)) == 1.0


def test_compare_reports_points_in_a_json_ready_dict():
    runs = hand_runs()
    result = compare(runs, resamples=500)
    json.dumps(result)
    assert result["diff"] == pytest.approx(40.0)
    assert result["per_seed"] == pytest.approx([20.0, 40.0, 60.0])
    assert result["t_ci"] == pytest.approx([40 - 49.68275, 40 + 49.68275], abs=1e-4)
    assert result["sign_flip_p"] == 0.25
    assert result["mde_80"] == pytest.approx(100 * (stats.t.ppf(0.975, 2) + stats.t.ppf(0.8, 2)) * 0.2 / np.sqrt(3))
    assert result["n_seeds"] == 3 and result["n_questions"] == [5, 5, 5]
    low, high = result["two_level_ci"]
    assert 0 <= low <= 40 <= high <= 100
    assert result["within_seed_question_ci"] is not None
    # Seeds with different questions: no within-seed question interval.
    other = SeedRun(arm=np.array([1, 0]), full=np.array([0, 0]), clusters=np.array(["x", "y"]))
    assert compare([*runs, other], resamples=200)["within_seed_question_ci"] is None


def test_verdict_rules():
    assert verdict((0.1, 3.0), 0, "above") == "held"
    assert verdict((-1.0, 0.0), 0, "above") == "failed"
    assert verdict((-1.0, 0.5), 0, "above") == "undecided"
    assert verdict((0.0, 2.0), 0, "above") == "undecided"
    assert verdict((-4.0, 2.0), -5, "not_below") == "held"
    assert verdict((-9.0, -5.5), -5, "not_below") == "failed"
    assert verdict((-9.0, -5.0), -5, "not_below") == "undecided"
    with pytest.raises(ValueError, match="direction"):
        verdict((0.0, 1.0), 0, "below")


# -------------------------------------------------------------------------------------- against scipy


def test_paired_t_interval_matches_scipy():
    rng = np.random.default_rng(1)
    arm_accuracy, full_accuracy = rng.uniform(0.3, 0.6, 7), rng.uniform(0.3, 0.6, 7)
    d = arm_accuracy - full_accuracy
    for level in (0.9, 0.95):
        expected = stats.ttest_1samp(d, 0).confidence_interval(level)
        assert paired_t_interval(d, level) == pytest.approx((expected.low, expected.high), rel=1e-12)
        expected = stats.ttest_rel(arm_accuracy, full_accuracy).confidence_interval(level)
        assert paired_t_interval(d, level) == pytest.approx((expected.low, expected.high), rel=1e-12)


@pytest.mark.parametrize("n", [6, 7, 8])
def test_sign_flip_p_value_matches_scipy_exact_permutation_test(n):
    d = np.random.default_rng(n).normal(0.3, 1.0, n)
    # One sample with permutation_type="samples" flips the sign of each observation; n_resamples=inf is exact.
    expected = stats.permutation_test(
        (d,), np.mean, permutation_type="samples", n_resamples=np.inf, alternative="two-sided"
    ).pvalue
    assert sign_flip_p_value(d) == pytest.approx(expected, rel=1e-12)
    assert 2 / 2**n <= sign_flip_p_value(d) <= 1


# ---------------------------------------------------------------------------------- two-level bootstrap


def test_two_level_bootstrap_reduces_to_ordinary_bootstrap_for_one_seed():
    rng = np.random.default_rng(2)
    arm, full = (rng.random(50) < 0.6).astype(float), (rng.random(50) < 0.5).astype(float)
    run = SeedRun(arm=arm, full=full, clusters=np.arange(50))
    ours = two_level_bootstrap_ci([run], resamples=20000)
    theirs = stats.bootstrap((arm - full,), np.mean, n_resamples=20000, method="percentile", rng=3)
    ci = theirs.confidence_interval
    assert ours == pytest.approx((ci.low, ci.high), abs=0.02)
    assert ours[1] - ours[0] > 0.2  # a real interval, not a point


def test_two_level_bootstrap_weighs_clusters_by_size():
    # Cluster a: 1 question, difference 1; cluster b: 3 questions, difference 0. Drawing 2 clusters:
    # aa -> 1 (1/4), ab -> 1/4 (1/2: one of four questions), bb -> 0 (1/4). The central 40% is exactly 0.25;
    # weighing clusters equally would give 0.5 there.
    run = SeedRun(arm=np.array([1, 0, 0, 0]), full=np.array([0, 0, 0, 0]), clusters=np.array(["a", "b", "b", "b"]))
    assert two_level_bootstrap_ci([run], level=0.4, resamples=4000) == (0.25, 0.25)


def test_two_level_interval_is_much_wider_than_within_seed_interval_when_seeds_differ():
    rng = np.random.default_rng(4)
    clusters = np.repeat(np.arange(60), 10)
    runs = []
    for shift in (-0.3, 0.3, -0.2, 0.2, -0.25, 0.25, -0.1, 0.1):
        full = (rng.random(600) < 0.4).astype(float)
        arm = (rng.random(600) < 0.4 + shift).astype(float)
        runs.append(SeedRun(arm=arm, full=full, clusters=clusters))
    result = compare(runs)
    two_level = result["two_level_ci"][1] - result["two_level_ci"][0]
    within_seed = result["within_seed_question_ci"][1] - result["within_seed_question_ci"][0]
    assert two_level > 3 * within_seed


def test_two_level_bootstrap_is_deterministic_for_a_fixed_seed():
    effect, _ = simulate(np.random.default_rng(5))
    first = two_level_bootstrap_ci(effect, resamples=2000, seed=7)
    assert two_level_bootstrap_ci(effect, resamples=2000, seed=7) == first
    assert two_level_bootstrap_ci(effect, resamples=2000, seed=8) != first


# ------------------------------------------------------------------------------------ effect and null


def test_planted_effect_held_and_null_not_held():
    effect, null = simulate(np.random.default_rng(0))

    result = compare(effect)
    assert all(d > 0 for d in result["per_seed"])
    assert result["sign_flip_p"] <= 2 / 256
    assert verdict(result["two_level_ci"], 0, "above") == "held"
    assert result["two_level_ci"][0] > 10  # forcing half the takes correct adds 15-35 points

    result = compare(null)
    assert verdict(result["two_level_ci"], 0, "above") != "held"
    assert result["two_level_ci"][0] < 0 < result["two_level_ci"][1]
    assert result["t_ci"][0] < 0 < result["t_ci"][1]
    assert result["sign_flip_p"] > 0.05
    # Resampling questions alone ignores the seed variance and claims more precision than there is.
    two_level_width = result["two_level_ci"][1] - result["two_level_ci"][0]
    within_seed_width = result["within_seed_question_ci"][1] - result["within_seed_question_ci"][0]
    assert within_seed_width < 0.75 * two_level_width


# ---------------------------------------------------------------------------- minimum detectable effect


def test_minimum_detectable_effect_scales_with_sd_and_n():
    assert minimum_detectable_effect(2.0, 8) == pytest.approx(2 * minimum_detectable_effect(1.0, 8))
    values = [minimum_detectable_effect(1.0, n) for n in (3, 5, 8, 16, 32)]
    assert all(a > b for a, b in zip(values, values[1:]))


def test_minimum_detectable_effect_has_about_the_stated_power():
    n, sd = 8, 1.0
    effect = minimum_detectable_effect(sd, n)
    samples = np.random.default_rng(6).normal(effect, sd, size=(2000, n))
    power = np.mean(stats.ttest_1samp(samples, 0, axis=1).pvalue < 0.05)
    assert power == pytest.approx(0.8, abs=0.05)


# ------------------------------------------------------------------------------------------- bad input


def test_bad_input():
    with pytest.raises(ValueError, match="full"):
        SeedRun(arm=np.zeros(3), full=np.zeros(4), clusters=np.zeros(3))
    with pytest.raises(ValueError, match="clusters"):
        SeedRun(arm=np.zeros(3), full=np.zeros(3), clusters=np.zeros(2))
    with pytest.raises(ValueError, match="arm"):
        SeedRun(arm=np.zeros((3, 1)), full=np.zeros(3), clusters=np.zeros(3))
    with pytest.raises(ValueError, match="empty"):
        SeedRun(arm=np.zeros(0), full=np.zeros(0), clusters=np.zeros(0))
    with pytest.raises(ValueError, match="fewer seeds or a Monte-Carlo"):
        sign_flip_p_value(np.ones(21))
    with pytest.raises(ValueError, match="at least 2"):
        paired_t_interval(np.array([0.1]))
