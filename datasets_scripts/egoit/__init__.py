"""EgoIT, the stage-3 instruction data: one adapter per released source, canonical rows, Hub export.

Sources (``--root NAME=DIR``): ``egtea`` (EGTEA Gaze+), ``ssv2`` (Something-Something-V2),
``egotimeqa`` (GroundVQA's EgoTimeQA), ``openeqa`` (OpenEQA), ``egoexolearn`` (EgoExoLearn).
Rows follow :data:`datasets_scripts.schema.EGOIT_FEATURES`; instructions come from ``templates.json``.
"""
