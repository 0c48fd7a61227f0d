"""The EgoBench `evaluate` module gives the numbers of eval/metrics.py on random inputs."""

import numpy as np
import pytest

evaluate = pytest.importorskip("evaluate", reason="the EgoBench evaluate module needs `evaluate` (.[dev])")

from eval import metrics  # noqa: E402

METRIC_PATH = "eval/egobench_metric"


def load(config):
    return evaluate.load(METRIC_PATH, config)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multiple_choice_accuracy_and_egomcq_equal_eval_metrics(seed):
    rng = np.random.default_rng(seed)
    count = int(rng.integers(5, 60))
    answers = rng.integers(0, 5, count).tolist()
    predictions = [None if rng.random() < 0.2 else int(rng.integers(0, 5)) for _ in range(count)]
    types = rng.choice([1, 2], count).tolist()
    assert load("accuracy").compute(predictions=predictions, references=answers) == {
        "accuracy": pytest.approx(metrics.accuracy(predictions, answers))
    }
    assert load("egomcq").compute(predictions=predictions, references=answers, types=types) == pytest.approx(
        metrics.egomcq_accuracy(predictions, answers, types)
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rankings_equal_eval_metrics(seed):
    rng = np.random.default_rng(seed)
    videos, classes = rng.integers(4, 20), rng.integers(2, 8)
    scores = rng.integers(0, 4, (videos, classes)) / 4  # coarse scores, so ties happen
    labels = (rng.random((videos, classes)) < 0.3).astype(int)
    assert load("charades_map").compute(predictions=scores.tolist(), references=labels.tolist()) == {
        "map": pytest.approx(metrics.charades_map(scores, labels), nan_ok=True)
    }
    queries, items = rng.integers(3, 12), rng.integers(3, 12)
    similarity = rng.integers(0, 5, (queries, items)) / 5
    relevance = rng.choice([0.0, 0.25, 0.5, 1.0], (queries, items))
    assert load("mir_map").compute(predictions=similarity.tolist(), references=relevance.tolist()) == {
        "map": pytest.approx(metrics.mir_map(similarity, relevance), nan_ok=True)
    }
    assert load("mir_ndcg").compute(predictions=similarity.tolist(), references=relevance.tolist()) == {
        "ndcg": pytest.approx(metrics.mir_ndcg(similarity, relevance), nan_ok=True)
    }


def test_open_ended_equals_eval_metrics_in_batches():
    rng = np.random.default_rng(0)
    words = "the a red cube ball picked up put down left right bowl poured".split()
    predictions = [" ".join(rng.choice(words, rng.integers(1, 6))) for _ in range(12)]
    references = [" ".join(rng.choice(words, rng.integers(1, 6))) for _ in range(12)]
    references[:3] = [prediction.upper() + "." for prediction in predictions[:3]]  # exact after normalising
    metric = load("open_ended")
    for start in range(0, 12, 5):  # add_batch, as an evaluation loop would
        metric.add_batch(predictions=predictions[start : start + 5], references=references[start : start + 5])
    result = metric.compute(sentence_similarity=True)
    assert result == pytest.approx(
        {
            "exact_match": metrics.exact_match(predictions, references).mean(),
            "rouge_l": metrics.rouge_l(predictions, references).mean(),
            "sentence_similarity": metrics.sentence_similarity(predictions, references).mean(),
        }
    )
    assert result["exact_match"] >= 3 / 12


def test_unknown_configuration_is_named():
    with pytest.raises(ValueError, match="unknown EgoBench metric configuration 'bleu'"):
        load("bleu")
