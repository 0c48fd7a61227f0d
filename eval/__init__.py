"""EgoBench evaluation: scorers, official metrics, resumable runs, reports and plots.

Entry points: ``exo2ego eval ...`` (:mod:`eval.cli`) and :func:`eval.runner.evaluate` for a model that is
already loaded. Metric functions live in :mod:`eval.metrics`, the answer parser in :mod:`eval.parsing`.
"""
