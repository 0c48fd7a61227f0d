"""The demo's gates: properties of the synthetic world checked before any training claim, and their measurement
into `gates.json`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from exo2ego.tiny import VISION_REPORT
from exo2ego_base.provenance import write_json_atomic

GATES_FILE = "gates.json"


@dataclass(frozen=True)
class Gate:
    """A property of the world checked before any training claim: `probe`'s accuracy on `group` (a fraction) lies at
    or above `at_least` / at or below `at_most`."""

    name: str
    description: str
    probe: str  # world_exo | world_ego (the pretrained tower, `vision_pretraining.json`) | ego_trained (gate probe)
    group: str
    at_least: float | None = None
    at_most: float | None = None

    def holds(self, value: float) -> bool:
        return (self.at_least is None or value >= self.at_least) and (self.at_most is None or value <= self.at_most)


GATES = (
    Gate(
        "exo_reads_pattern",
        "tower pretrained on web-exo clips reads the pattern on the world's exo views",
        "world_exo",
        "pattern",
        at_least=0.85,
    ),
    Gate(
        "ego_gap",
        "the same tower reads the pattern on the world's ego views (the domain gap)",
        "world_ego",
        "pattern",
        at_most=0.40,
    ),
    Gate(
        "ego_colour",
        "tower trained on ego frames reads the colour on held-out ego clips",
        "ego_trained",
        "colour",
        at_least=0.85,
    ),
)


def measure_gates(
    untrained: Path, clips: Path, world: Path, gate_probe: tuple[int, int, int], seed: int, out: Path
) -> None:
    """Check :data:`GATES` and write them with the probes to `out` (`gates.json`): the pretrained tower's probes
    (from the untrained model's `vision_pretraining.json` in `untrained`) and a tower trained on the ego frames of
    Ego-ExoClip `clips` (`exo2ego.tiny.vision.word_probe`; `gate_probe`: training clips, held-out clips, steps)."""
    # Deferred, heavy: exo2ego.tiny.vision loads transformers' models; exo2ego --help imports this module.
    from exo2ego.tiny.vision import probe_groups, word_probe

    report = untrained / VISION_REPORT
    probes = json.loads(report.read_text())["probes"] if report.is_file() else {}
    train, heldout, steps = gate_probe
    colours = {"colour": probe_groups()["colour"]}
    ego = word_probe(str(clips), str(world), colours, ("ego",), train, heldout, steps, seed=seed)
    probes["ego_trained"] = ego["ego"]
    gates = {}
    for gate in GATES:
        value = probes.get(gate.probe, {}).get(gate.group)
        gates[gate.name] = {
            **asdict(gate),
            "value": value,
            "holds": None if value is None else gate.holds(value),
        }
    write_json_atomic(out, {"gates": gates, "probes": probes})
