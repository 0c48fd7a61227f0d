"""A saved checkpoint loads like a Hub release: fresh process, `trust_remote_code=True`, no project packages."""

import json
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from conftest import write_test_video

import modeling_exo2ego
from modeling_exo2ego import Exo2EgoConfig

ALLOWED_DISTRIBUTIONS = ("torch", "transformers", "numpy", "pillow", "av")


def isolated_site_packages(target: Path) -> Path:
    """A folder holding only the allowed distributions and their own requirements (symlinked), for `python -S`."""
    from packaging.requirements import Requirement

    seen, pending = set(), list(ALLOWED_DISTRIBUTIONS)
    while pending:
        name = pending.pop().lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional requirement that is not installed
        seen.add(name)
        for requirement in map(Requirement, dist.requires or []):
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
        for file in dist.files or []:
            top = file.parts[0]
            source = Path(dist.locate_file(top))
            link = target / top
            if top != ".." and not top.endswith(".pth") and source.exists() and not link.exists():
                link.symlink_to(source)
    assert not {"peft", "trl", "datasets", "accelerate"} & seen
    return target


# Runs with `python -S` and PYTHONPATH set to the isolated folder: the project and the training stack are absent.
LOADER = textwrap.dedent(
    """
    import json, sys
    for hidden in ("modeling_exo2ego", "exo2ego", "peft", "datasets"):
        try:
            __import__(hidden)
        except ImportError:
            pass
        else:
            raise SystemExit(f"{hidden} should not be importable here")

    import numpy as np, torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor
    folder, frames_path, video_path = sys.argv[1], sys.argv[2], sys.argv[3]
    frames = np.load(frames_path)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    batch = processor(text=["<video>\\nWhat did I pick up?"], videos=[frames], return_tensors="pt")
    result = {"processor": type(processor).__name__, "input_ids": batch["input_ids"].tolist()}
    # video_io_exo2ego.py (PyAV decoding) and an image, as a still video
    from_file = processor(text=["<video>\\nWhat?"], videos=[(video_path, 0.5, 2.5)])
    from_image = processor(text=["<image>\\nWhat?"], images=[frames[0]])
    for name, inputs in (("file", from_file), ("image", from_image)):
        result[name] = {key: inputs[key].tolist() for key in ("input_ids", "pixel_values_videos")}
    for auto in (AutoModel, AutoModelForImageTextToText, AutoModelForCausalLM):
        model = auto.from_pretrained(folder, trust_remote_code=True, attn_implementation="eager").eval()
        with torch.no_grad():
            logits = model(**batch).logits
        generated = model.generate(**batch, max_new_tokens=5, do_sample=False)
        result[auto.__name__] = {"class": type(model).__name__, "logits": logits[0, -3:].tolist(),
                                 "generated": generated.tolist()}
    print("RESULT" + json.dumps(result))
    """
)


def test_fresh_process_loads_identically_without_project_packages(tiny, tmp_path):
    model, processor = tiny
    folder = tmp_path / "release"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert set(config["auto_map"]) >= {
        "AutoConfig",
        "AutoModel",
        "AutoModelForCausalLM",
        "AutoModelForImageTextToText",
    }
    assert json.loads((folder / "processor_config.json").read_text())["auto_map"]["AutoProcessor"].endswith(
        "Exo2EgoProcessor"
    )
    # The bundle: every module of modeling_exo2ego/ but the package __init__ (which registers the Auto classes).
    bundle = sorted(path.name for path in Path(modeling_exo2ego.__file__).parent.glob("*.py"))
    bundle.remove("__init__.py")
    assert bundle == [
        "configuration_exo2ego.py",
        "modeling_exo2ego.py",
        "processing_exo2ego.py",
        "video_io_exo2ego.py",
    ]
    for module in bundle:
        assert (folder / module).read_bytes() == (Path(modeling_exo2ego.__file__).parent / module).read_bytes()

    frames = np.random.default_rng(0).integers(0, 255, (9, 30, 40, 3), dtype=np.uint8)
    np.save(tmp_path / "frames.npy", frames)
    video = write_test_video(tmp_path / "clip.mp4", num_frames=24)
    batch = processor(text=["<video>\nWhat did I pick up?"], videos=[frames])
    from_file = processor(text=["<video>\nWhat?"], videos=[(video, 0.5, 2.5)])
    from_image = processor(text=["<image>\nWhat?"], images=[frames[0]])
    with torch.no_grad():
        logits = model(**batch).logits[0, -3:]
    generated = model.generate(**batch, max_new_tokens=5, do_sample=False)

    site = tmp_path / "site"
    site.mkdir()
    isolated_site_packages(site)
    env = {
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf_home"),
        "PATH": "/usr/bin:/bin",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": str(site),
        "OMP_NUM_THREADS": str(torch.get_num_threads()),  # same kernels' reduction order as this process
    }
    completed = subprocess.run(
        [sys.executable, "-S", "-c", LOADER, str(folder), str(tmp_path / "frames.npy"), video],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.split("RESULT", 1)[1])
    assert result["processor"] == "Exo2EgoProcessor"
    assert result["input_ids"] == batch["input_ids"].tolist()
    for name, inputs in (("file", from_file), ("image", from_image)):
        assert result[name]["input_ids"] == inputs["input_ids"].tolist()
        assert torch.equal(torch.tensor(result[name]["pixel_values_videos"]), inputs["pixel_values_videos"])
    for name in ("AutoModel", "AutoModelForImageTextToText", "AutoModelForCausalLM"):
        assert result[name]["class"] == "Exo2EgoForConditionalGeneration"
        # Loading is exact; the tolerance only covers a different thread split of the same float kernels.
        torch.testing.assert_close(torch.tensor(result[name]["logits"]), logits, rtol=1e-5, atol=1e-5)
        assert result[name]["generated"] == generated.tolist()


def test_config_round_trips_every_field(tmp_path):
    from exo2ego_base.tiny import tiny_config_kwargs

    config = Exo2EgoConfig(**tiny_config_kwargs(connector_type="stc_v35", mapping_type="mlp"))
    config.save_pretrained(tmp_path)
    loaded = Exo2EgoConfig.from_pretrained(tmp_path)
    for field in ("connector_type", "mapping_type", "num_frames", "video_token_id"):
        assert getattr(loaded, field) == getattr(config, field)
    assert loaded.ego_vision_config.image_size == 32 and loaded.text_config.hidden_size == 64
