"""EgoBench metrics as a Hugging Face `evaluate` module: `evaluate.load("eval/egobench_metric", CONFIG)`.

A thin wrapper over `eval.metrics` (the project's official-definition implementations), so both give the same
numbers; one configuration per kind of EgoBench task (see the metric card, README.md beside this file).
"""

import datasets
import evaluate

from eval import metrics

_DESCRIPTION = """EgoBench metrics following the official definitions: multiple-choice accuracy (unparsable answers
count as wrong), EgoMCQ inter-/intra-video accuracy, Charades-Ego mAP, EPIC-KITCHENS-100 multi-instance retrieval
mAP and nDCG, and open-ended QA exact match, ROUGE-L and (optionally) sentence similarity."""

_KWARGS_DESCRIPTION = """
Args (by configuration):
    accuracy: predictions (int option index, or None for an unparsable answer), references (int gold index).
    egomcq: as accuracy, plus `types` (1 or "inter" = inter-video, 2 or "intra" = intra-video) per question.
    charades_map: predictions (per-video class scores, list of float), references (per-video multi-hot labels).
    mir_map, mir_ndcg: predictions (per-query similarity to every item), references (graded relevance in [0, 1]).
    open_ended: predictions and references (str); `sentence_similarity=True` adds the MiniLM cosine similarity.
Returns:
    accuracy: {"accuracy"}; egomcq: {"inter", "intra"} (the types present); charades_map: {"map"};
    mir_map: {"map"}; mir_ndcg: {"ndcg"}; open_ended: {"exact_match", "rouge_l"[, "sentence_similarity"]}.
    All are fractions in [0, 1].
Examples:
    >>> egobench = evaluate.load("eval/egobench_metric", "accuracy")
    >>> egobench.compute(predictions=[0, None, 2], references=[0, 1, 1])
    {'accuracy': 0.3333333333333333}
"""

_CITATION = """@article{exo2ego,
  title={Exo2Ego: Exocentric Knowledge Guided MLLM for Egocentric Video Understanding},
  year={2025}
}"""

_INDEX = datasets.Value("int64")
_ROW = datasets.Sequence(datasets.Value("float64"))
FEATURES = {
    "accuracy": datasets.Features({"predictions": _INDEX, "references": _INDEX}),
    "egomcq": datasets.Features({"predictions": _INDEX, "references": _INDEX}),
    "charades_map": datasets.Features({"predictions": _ROW, "references": datasets.Sequence(datasets.Value("int64"))}),
    "mir_map": datasets.Features({"predictions": _ROW, "references": _ROW}),
    "mir_ndcg": datasets.Features({"predictions": _ROW, "references": _ROW}),
    "open_ended": datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class EgobenchMetric(evaluate.Metric):
    def _info(self):
        if self.config_name not in FEATURES:
            raise ValueError(
                f"unknown EgoBench metric configuration {self.config_name!r}; choose one of {sorted(FEATURES)}"
            )
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=FEATURES[self.config_name],
            reference_urls=[],
        )

    def _compute(self, predictions, references, types=None, sentence_similarity=False):
        name = self.config_name
        if name == "accuracy":
            return {"accuracy": metrics.accuracy(predictions, references)}
        if name == "egomcq":
            if types is None:
                raise ValueError("the egomcq configuration needs `types` (1/'inter' or 2/'intra') per question")
            return metrics.egomcq_accuracy(predictions, references, types)
        if name == "charades_map":
            return {"map": metrics.charades_map(predictions, references)}
        if name == "mir_map":
            return {"map": metrics.mir_map(predictions, references)}
        if name == "mir_ndcg":
            return {"ndcg": metrics.mir_ndcg(predictions, references)}
        scores = {
            "exact_match": float(metrics.exact_match(predictions, references).mean()),
            "rouge_l": float(metrics.rouge_l(predictions, references).mean()),
        }
        if sentence_similarity:
            scores["sentence_similarity"] = float(metrics.sentence_similarity(predictions, references).mean())
        return scores
