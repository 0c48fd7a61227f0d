"""The ten instruction templates per source (``templates.json``, our own text) and the seeded pick."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from datasets_scripts.schema import seeded_choice

TEMPLATES_PATH = Path(__file__).with_name("templates.json")


@functools.cache
def load_templates(path: str | Path = TEMPLATES_PATH) -> dict[str, list[str]]:
    """``{source: [template, ...]}`` from the JSON file (each list holds ten templates)."""
    payload = json.loads(Path(path).read_text(encoding="utf-8"))
    return {source: list(entry["templates"]) for source, entry in payload["sources"].items()}


def templates_sha1(path: str | Path = TEMPLATES_PATH) -> str:
    """Hash of the templates file, recorded in build_info.json so ``instruction_id`` stays meaningful."""
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def choose_instruction(source: str, sample_id: str, seed: int = 0) -> tuple[int, str]:
    """``(instruction_id, instruction)`` for one sample: a seeded hash of its id picks the template."""
    templates = load_templates()[source]
    index = seeded_choice(seed, sample_id, len(templates))
    return index, templates[index]
