"""The Ego-ExoClip ``datasets`` builder: configs ``clips`` (one row per narration) and ``takes``.

::

    from datasets_scripts.ego_exoclip import EgoExoClip
    builder = EgoExoClip(config_name="clips", egoexo_root="/data/egoexo", variant="448")
    builder.download_and_prepare()
    clips = builder.as_dataset("train")

``exo2ego data ego-exoclip`` runs it for both configs and writes the Hub-ready folder
(:func:`datasets_scripts.ego_exoclip.export.build_ego_exoclip`). Nothing is downloaded: the builder
reads the user's local ``egoexo`` download.
"""

from __future__ import annotations

from dataclasses import dataclass

import datasets

from .clips import DEFAULT_MIN_CLIP_SEC, PAPER_ALPHA_SEC
from .plan import BuildPlan, EgoExoClipOptions, plan_ego_exoclip

ROWS_PER_SHARD = 5000  # generator shards; ``num_proc`` workers split them

CLIP_FEATURES = datasets.Features(
    {
        "clip_id": datasets.Value("string"),  # <take_uid[:8]>_<annotation_uid[:8]>_<desc_index:04d>
        "take_uid": datasets.Value("string"),
        "take_name": datasets.Value("string"),
        "annotation_uid": datasets.Value("string"),
        "desc_index": datasets.Value("int32"),  # position in the released descriptions list
        "timestamp_sec": datasets.Value("float64"),
        "start_sec": datasets.Value("float64"),  # eq. 1
        "end_sec": datasets.Value("float64"),
        "beta_sec": datasets.Value("float64"),  # mean narration gap of the sequence
        "alpha_sec": datasets.Value("float64"),
        "widened": datasets.Value("bool"),  # window shorter than one frame, widened to min_clip_sec
        "subject": datasets.Value("string"),
        "ego_visible": datasets.Value("bool"),
        "unsure": datasets.Value("bool"),
        "best_exo_cam": datasets.Value("string"),
        "ego_cam": datasets.Value("string"),
        "exo_cams": datasets.List(datasets.Value("string")),
        "ego_video": datasets.Value("string"),  # relative to the egoexo download root
        "exo_videos": datasets.List(datasets.Value("string")),
        "parent_task_name": datasets.Value("string"),  # the scenario
        "task_name": datasets.Value("string"),
        "split": datasets.Value("string"),
        "duration_sec": datasets.Value("float64"),  # of the take
        "text": datasets.Value("string"),  # null in annotations-only exports
        "text_sha1": datasets.Value("string"),
    }
)

TAKE_FEATURES = datasets.Features(
    {
        "take_uid": datasets.Value("string"),
        "take_name": datasets.Value("string"),
        "root_dir": datasets.Value("string"),
        "duration_sec": datasets.Value("float64"),
        "parent_task_name": datasets.Value("string"),
        "task_name": datasets.Value("string"),
        "university_name": datasets.Value("string"),
        "best_exo": datasets.Value("string"),
        "ego_cam": datasets.Value("string"),
        "exo_cams": datasets.List(datasets.Value("string")),
        "ego_video": datasets.Value("string"),
        "exo_videos": datasets.List(datasets.Value("string")),
        "num_annotations": datasets.Value("int32"),
        "num_clips": datasets.Value("int32"),
        "beta_sec": datasets.Value("float64"),  # both annotators merged
        "split": datasets.Value("string"),
    }
)
FEATURES = {"clips": CLIP_FEATURES, "takes": TAKE_FEATURES}


@dataclass
class EgoExoClipConfig(datasets.BuilderConfig):
    """Builder options; see :class:`datasets_scripts.ego_exoclip.plan.EgoExoClipOptions`."""

    egoexo_root: str | None = None
    alpha: float | str = PAPER_ALPHA_SEC
    sequence: str = "take"
    variant: str = "full"
    annotations_only: bool = False
    check_videos: bool = True
    skip_bad: bool = False
    min_clip_sec: float = DEFAULT_MIN_CLIP_SEC

    def to_options(self, num_proc: int = 1) -> EgoExoClipOptions:
        if not self.egoexo_root:
            raise ValueError("EgoExoClip needs egoexo_root=<folder of your egoexo download>")
        return EgoExoClipOptions(
            egoexo_root=self.egoexo_root,
            alpha=self.alpha,
            sequence=self.sequence,
            variant=self.variant,
            annotations_only=self.annotations_only,
            check_videos=self.check_videos,
            skip_bad=self.skip_bad,
            min_clip_sec=self.min_clip_sec,
            num_proc=num_proc,
        )


class EgoExoClip(datasets.GeneratorBasedBuilder):
    """Ego-ExoClip from a local Ego-Exo4D download (see the module docstring).

    ``plan`` (optional) is a precomputed :class:`BuildPlan`, so that building both configs parses
    the annotations once; ``num_proc`` parallelises the video checks of the plan.
    """

    BUILDER_CONFIG_CLASS = EgoExoClipConfig
    BUILDER_CONFIGS = [
        EgoExoClipConfig(name="clips", description="one row per narration: eq. 1 clip, ego and exo video paths"),
        EgoExoClipConfig(name="takes", description="one row per kept take"),
    ]
    DEFAULT_CONFIG_NAME = "clips"

    def __init__(self, *args, plan: BuildPlan | None = None, num_proc: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self._plan = plan
        self._num_proc = num_proc

    @property
    def plan(self) -> BuildPlan:
        if self._plan is None:
            self._plan = plan_ego_exoclip(self.config.to_options(self._num_proc))
        return self._plan

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=(
                "Ego-ExoClip: Ego-Exo4D atomic descriptions cut into synchronized ego-exo clips (Exo2Ego, eq. 1)"
            ),
            features=FEATURES[self.config.name],
            homepage="https://docs.ego-exo4d-data.org/",
            license="Ego-Exo4D license agreement (annotations and videos are not redistributable)",
        )

    def _split_generators(self, dl_manager):
        rows = self.plan.clips if self.config.name == "clips" else self.plan.takes
        # At least one shard per worker process, so that num_proc > 1 really runs in parallel.
        num_shards = max(1, min(len(rows), max(self._num_proc, -(-len(rows) // ROWS_PER_SHARD))))
        size = -(-len(rows) // num_shards) if rows else 1
        shards = [rows[i : i + size] for i in range(0, len(rows), size)] or [[]]
        return [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"shards": shards})]

    def _generate_examples(self, shards):
        key = "clip_id" if self.config.name == "clips" else "take_uid"
        for shard in shards:
            for row in shard:
                yield row[key], row
