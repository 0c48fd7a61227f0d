"""EgoBench metrics against values computed by hand on small matrices."""

import math

import numpy as np
import pytest

from eval import metrics


# ------------------------------------------------------------------------------------------ accuracy
def test_accuracy_counts_invalid_as_wrong_and_keeps_the_denominator():
    assert metrics.accuracy([0, None, 2, 1], [0, 1, 2, 3]) == pytest.approx(2 / 4)
    assert math.isnan(metrics.accuracy([], []))
    with pytest.raises(ValueError, match="3 predictions for 2 answers"):
        metrics.accuracy([0, 1, 2], [0, 1])


def test_egomcq_types_map_one_to_inter_and_two_to_intra():
    predictions, answers = [0, 1, 2, 1], [0, 0, 2, 1]
    # type 1 (inter): samples 0 and 3, both right; type 2 (intra): sample 1 wrong, sample 2 right.
    assert metrics.egomcq_accuracy(predictions, answers, [1, 2, 2, 1]) == {"inter": 1.0, "intra": 0.5}
    assert metrics.egomcq_accuracy(predictions, answers, ["inter", "intra", "intra", "inter"]) == {
        "inter": 1.0,
        "intra": 0.5,
    }
    assert metrics.egomcq_accuracy([None], [0], ["2"]) == {"intra": 0.0}
    with pytest.raises(ValueError, match="unknown EgoMCQ type 3"):
        metrics.egomcq_accuracy([0], [0], [3])


# ------------------------------------------------------------------------------------------ Charades-Ego
def test_charades_map_by_hand():
    labels = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    scores = np.array(
        [
            [0.9, 0.2, 0.5],
            [0.5, 0.8, 0.1],
            [0.5, 0.3, 0.2],  # ties video 1 on class 0: video 1 (lower index) is ranked first
            [0.99, 0.99, 0.9],  # no label at all: ranked last everywhere despite the top scores
        ]
    )
    per_class = metrics.charades_map(scores, labels, reduction=None)
    # class 0: ranking v0 v1 v2 v3, positives at ranks 1 and 3 -> (1 + 2/3) / 2
    assert per_class[0] == pytest.approx(5 / 6)
    # class 1: ranking v1 v2 v0 v3, positives at ranks 1 and 2 -> 1
    assert per_class[1] == pytest.approx(1.0)
    # class 2 has no positive: undefined, left out of the mean
    assert math.isnan(per_class[2])
    assert metrics.charades_map(scores, labels) == pytest.approx((5 / 6 + 1.0) / 2)


def test_charades_map_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same 2-D shape"):
        metrics.charades_map(np.zeros((2, 3)), np.zeros((2, 4)))


# ------------------------------------------------------------------------------------------ EK-100 MIR
SIMILARITY = np.array(
    [
        [0.1, 0.9, 0.5, 0.5],  # tie between items 2 and 3: item 2 first
        [0.0, 0.1, 0.2, 0.3],
        [0.3, 0.2, 0.1, 0.0],
        [0.4, 0.3, 0.2, 0.1],
    ]
)
RELEVANCE = np.array(
    [
        [1.0, 0.5, 0.0, 1.0],
        [0.5, 0.0, 0.0, 0.0],  # no item of relevance exactly 1: AP undefined
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0],  # nothing relevant at all: AP and nDCG undefined
    ]
)


def test_mir_map_by_hand():
    per_query = metrics.mir_map(SIMILARITY, RELEVANCE, reduction=None)
    # query 0: ranked relevances 0.5 0 1 1 -> P(k) = 0.5/1, 0.5/2, 1.5/3, 2.5/4; rel==1 at k=3,4
    assert per_query[0] == pytest.approx((1.5 / 3 + 2.5 / 4) / 2)
    assert math.isnan(per_query[1]) and math.isnan(per_query[3])
    assert per_query[2] == pytest.approx(1.0)
    assert metrics.mir_map(SIMILARITY, RELEVANCE) == pytest.approx(((1.5 / 3 + 2.5 / 4) / 2 + 1.0) / 2)


def test_mir_ndcg_by_hand():
    per_query = metrics.mir_ndcg(SIMILARITY, RELEVANCE, reduction=None)
    # query 0: k=3 items with relevance > 0; ranked 0.5 0 1 -> 0.5/log2(2) + 0 + 1/log2(4) = 1.0;
    # ideal 1 1 0.5 -> 1 + 1/log2(3) + 0.5/log2(4)
    assert per_query[0] == pytest.approx(1.0 / (1 + 1 / np.log2(3) + 0.25))
    # query 1: k=1, the only relevant item is ranked last -> DCG over the first position is 0
    assert per_query[1] == pytest.approx(0.0)
    assert per_query[2] == pytest.approx(1.0)
    assert math.isnan(per_query[3])
    assert metrics.mir_ndcg(SIMILARITY, RELEVANCE) == pytest.approx((per_query[0] + 0.0 + 1.0) / 3)


def test_mir_ndcg_matches_the_official_toy_example():
    # The toy matrices of the official EK-100 nDCG script, whose documented answer is 0.9371789900735429.
    similarity = np.array([[1.0, 0.7, 0.4, 0.0], [0.3, 0.9, 0.6, 0.1], [0.2, 0.5, 0.8, 0.4]])
    relevance = np.array([[1.0, 0.5, 0.25, 0.0], [0.0, 1.0, 0.4, 0.0], [0.5, 0.3, 1.0, 0.0]])
    assert metrics.mir_ndcg(similarity, relevance) == pytest.approx(0.9371789900735429, abs=1e-12)
    # Perfect ranking by relevance gives nDCG 1 and mAP 1.
    assert metrics.mir_ndcg(relevance, relevance) == pytest.approx(1.0)
    assert metrics.mir_map(relevance, relevance) == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------ open-ended QA
def test_exact_match_normalizes_case_punctuation_and_articles():
    hits = metrics.exact_match(["The red cup.", "a knife", "spoon"], ["red cup", "Knife!", "fork"])
    assert hits.tolist() == [True, True, False]


def test_rouge_l_by_hand():
    # LCS("the cat sat", "the cat was sat") = 3 words: precision 3/3, recall 3/4 -> F = 6/7.
    scores = metrics.rouge_l(["the cat sat", "dog"], ["the cat was sat", "cat"])
    assert scores[0] == pytest.approx(6 / 7)
    assert scores[1] == 0.0


def test_sentence_similarity_with_offline_minilm():
    sims = metrics.sentence_similarity(
        ["I put the knife in the drawer", "I put the knife in the drawer"],
        ["I put the knife in the drawer", "The weather is sunny at the beach"],
    )
    assert sims[0] == pytest.approx(1.0, abs=1e-5)
    assert sims[1] < 0.5


# ------------------------------------------------------------------------------------------ intervals
def test_bootstrap_interval_is_reproducible_and_brackets_the_mean():
    values = np.array([1.0] * 60 + [0.0] * 40)
    first = metrics.bootstrap_mean_ci(values, seed=3, resamples=500)
    second = metrics.bootstrap_mean_ci(values, seed=3, resamples=500)
    assert first == second
    assert first.low < 0.6 < first.high
    assert 0.4 < first.low and first.high < 0.8
    constant = metrics.bootstrap_mean_ci(np.ones(10))
    assert constant.low == constant.high == 1.0
    assert math.isnan(metrics.bootstrap_mean_ci([]).low)
