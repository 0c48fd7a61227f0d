"""The synthetic Ego-Exo world: scripted table-top actions rendered as synchronized ego and exo videos,
written in the real Ego-Exo4D layout together with synthetic EgoIT and EgoBench rows.

``exo2ego data synth --out ROOT [--takes N] [--seed S]`` or, from Python::

    from datasets_scripts.synthetic import WorldConfig, generate_world
    generate_world("world", WorldConfig(num_takes=6, seed=0))
"""

from .render import read_frame_marker
from .world import WorldConfig, generate_world, plan_world

__all__ = ["WorldConfig", "generate_world", "plan_world", "read_frame_marker"]
