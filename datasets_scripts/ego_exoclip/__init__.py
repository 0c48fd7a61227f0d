"""Ego-ExoClip: Ego-Exo4D atomic descriptions turned into synchronized ego-exo clips (Exo2Ego eq. 1).

CLI: ``exo2ego data ego-exoclip --egoexo-root ROOT --out OUT [--alpha 1.92|auto] [--sequence take|annotation]
[--variant full|448] [--annotations-only] [--restore-text REPO] [--num-proc N] [--push-to-hub REPO]``.
"""

from .builder import CLIP_FEATURES, TAKE_FEATURES, EgoExoClip, EgoExoClipConfig
from .clips import PAPER_ALPHA_SEC, clip_bounds, estimate_alpha
from .export import build_ego_exoclip, restore_text
from .plan import EgoExoClipOptions, plan_ego_exoclip

__all__ = [
    "CLIP_FEATURES",
    "TAKE_FEATURES",
    "EgoExoClip",
    "EgoExoClipConfig",
    "EgoExoClipOptions",
    "PAPER_ALPHA_SEC",
    "build_ego_exoclip",
    "clip_bounds",
    "estimate_alpha",
    "plan_ego_exoclip",
    "restore_text",
]
