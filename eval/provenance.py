"""What a result came from: package versions, the project's git revision, model and data revisions."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import torch

from datasets_scripts.hub_export import BUILD_INFO_NAME
from exo2ego_base.provenance import package_versions

PACKAGES = (
    "exo2ego",
    "torch",
    "transformers",
    "accelerate",
    "datasets",
    "huggingface_hub",
    "safetensors",
    "numpy",
    "av",
    "pillow",
    "sentence-transformers",
    "rouge-score",
)


def environment_versions() -> dict[str, str]:
    """Python and library versions (``"not installed"`` where missing)."""
    return package_versions(PACKAGES)


def git_revision(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """``{"commit", "dirty"}`` of the git checkout holding ``path`` (this package by default); None values
    outside a checkout or without git."""
    where = Path(path or __file__).resolve()
    where = where if where.is_dir() else where.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
        status = subprocess.run(
            ["git", "status", "--porcelain"], cwd=where, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}
    if commit.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def weights_sha256(model) -> str:
    """SHA-256 over every tensor of ``model.state_dict()`` (name, dtype, shape, bytes): changes when the weights
    are retrained or loaded in another dtype. Copies one tensor at a time to the CPU."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach()
        digest.update(f"{name}\x1f{tensor.dtype}\x1f{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).contiguous().cpu().view(torch.uint8).numpy())  # buffer, not copied
    return digest.hexdigest()


def processor_sha256(processor) -> str | None:
    """SHA-256 of a processor's saved settings and chat template (frames, image size, prompt format)."""
    if processor is None or not hasattr(processor, "to_json_string"):
        return None
    text = processor.to_json_string() + "\x1f" + str(getattr(processor, "chat_template", None))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def model_revision(model, processor=None) -> dict[str, Any]:
    """Name or path of a loaded model, its Hub commit when it came from the Hub, its weight files, and hashes of
    its weights and processor (what a resumed run checks)."""
    config = model.config
    name = getattr(config, "_name_or_path", None) or getattr(model, "name_or_path", None)
    info: dict[str, Any] = {
        "name_or_path": name,
        "commit_hash": getattr(config, "_commit_hash", None),
        "class": type(model).__name__,
        "dtype": str(getattr(model, "dtype", "")),
    }
    if name and os.path.isdir(name):
        info["weights"] = {path.name: path.stat().st_size for path in sorted(Path(name).glob("*.safetensors"))}
    info["num_parameters"] = int(sum(parameter.numel() for parameter in model.parameters()))
    info["weights_sha256"] = weights_sha256(model)
    info["processor_sha256"] = processor_sha256(processor)
    return info


def dataset_revision(dataset_dir: str | os.PathLike) -> dict[str, Any]:
    """A local EgoBench folder's ``build_info.json`` SHA-256 (its content version), or the Hub id."""
    path = Path(dataset_dir)
    info: dict[str, Any] = {"path": str(dataset_dir)}
    build_info = path / BUILD_INFO_NAME
    if build_info.is_file():
        info["build_info_sha256"] = hashlib.sha256(build_info.read_bytes()).hexdigest()
    elif not path.exists():
        info["hub_id"] = str(dataset_dir)
    return info
