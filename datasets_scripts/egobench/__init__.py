"""EgoBench, the eight-task egocentric benchmark: one adapter per released source, frozen options, Hub export.

Tasks (``--root NAME=DIR``): ``egoschema``, ``qaego4d``, ``egotaskqa``, ``charades_ego``, ``epic_mir``,
``egoplan``, ``vlnqa``, ``egomcq``. Rows follow :data:`datasets_scripts.schema.EGOBENCH_FEATURES`
(plus side tables for Charades-Ego mAP and EPIC-KITCHENS-100 MIR).
"""
