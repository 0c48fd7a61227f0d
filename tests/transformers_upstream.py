"""transformers' own common test mixins, from the source distribution of the INSTALLED transformers version.

Nothing of transformers' test code lives in this repository: the sdist is downloaded with pip into a cache folder
(`~/.cache/exo2ego/transformers-tests/<version>`, or `$EXO2EGO_TRANSFORMERS_TESTS_CACHE`) the first time and imported
from there as the package `transformers_upstream_tests`. `$EXO2EGO_TRANSFORMERS_TESTS` may point at the `tests/`
folder of a transformers checkout of the same version instead (it has every helper module).

The sdist ships only the top-level `tests/test_*_common.py` files, not the helper modules they import. The missing ones
are replaced by empty stand-ins that run none of their tests: `exporters.test_export.ExportTesterMixin` (export
tests), `generation.test_utils.GenerationTesterMixin` (so `GENERATION_MIXIN_AVAILABLE` is False and the generation
tests are skipped), `utils.test_configuration_utils.config_common_kwargs` (read only for configs without sub-configs)
and `fetch_hub_objects_for_ci.url_to_local_path`, which upstream CI uses to read Hub media from local copies: here the
test images (`hf-internal-testing/fixtures_image_utils`) map to synthetic images of the same name written into the
cache folder, so the image chat-template tests run offline, and other media (videos, audio) stay URLs, whose tests
need torchcodec or librosa and are skipped without them.
"""

import importlib
import importlib.util
import os
import subprocess
import sys
import tarfile
import tempfile
import types
from pathlib import Path

import transformers

PACKAGE = "transformers_upstream_tests"
VERSION = transformers.__version__
GENERATION_MIXIN_AVAILABLE = False


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "exo2ego" / "transformers-tests"
    return Path(os.environ.get("EXO2EGO_TRANSFORMERS_TESTS_CACHE", default)) / VERSION


def fetch_tests_dir() -> Path:
    """The `tests/` folder of transformers `VERSION`: downloaded once into the cache (temp folder, then rename)."""
    if os.environ.get("EXO2EGO_TRANSFORMERS_TESTS"):
        return Path(os.environ["EXO2EGO_TRANSFORMERS_TESTS"])
    target = cache_dir() / "tests"
    if (target / "__init__.py").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--retries",
            "1",
            "--timeout",
            "30",
            "--no-binary",
            ":all:",
            "--no-deps",
            f"transformers=={VERSION}",
            "--dest",
            work,
        ]
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600)
        archives = list(Path(work).glob("transformers-*.tar.gz"))
        if done.returncode or not archives:
            raise RuntimeError(f"pip could not download the transformers {VERSION} sdist: {done.stderr[-500:]}")
        prefix = f"{archives[0].name[: -len('.tar.gz')]}/tests/"
        with tarfile.open(archives[0]) as archive:
            members = [member for member in archive.getmembers() if member.name.startswith(prefix) and member.isfile()]
            for member in members:
                member.name = member.name[len(prefix) :]
            archive.extractall(Path(work) / "tests", members=members, filter="data")
        # ConfigTester imports its folder's __init__.py, which the sdist does not ship.
        (Path(work) / "tests" / "__init__.py").touch()
        os.replace(Path(work) / "tests", target)
    return target


def _stand_in(name: str, **attributes) -> None:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    sys.modules[name] = module


HUB_TEST_IMAGES = "https://huggingface.co/datasets/hf-internal-testing/fixtures_image_utils/resolve/main/"


def local_test_image(url: str) -> str:
    """A synthetic local stand-in (640x480 RGB, seeded by the name) for a Hub test image; other URLs unchanged."""
    if not url.startswith(HUB_TEST_IMAGES):
        return url
    import numpy as np
    from PIL import Image

    name = url[len(HUB_TEST_IMAGES) :]
    path = cache_dir() / "media" / name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(sum(name.encode())).integers(0, 256, (480, 640, 3), dtype=np.uint8)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=path.suffix, delete=False) as handle:
            Image.fromarray(pixels).save(handle, format="JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG")
        os.replace(handle.name, path)
    return str(path)


def load() -> types.ModuleType:
    """Import the upstream tests folder as the package `transformers_upstream_tests` (stand-ins for what it lacks)."""
    global GENERATION_MIXIN_AVAILABLE
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    tests_dir = fetch_tests_dir()
    spec = importlib.util.spec_from_loader(PACKAGE, loader=None, is_package=True)
    package = importlib.util.module_from_spec(spec)
    package.__path__ = [str(tests_dir)]
    sys.modules[PACKAGE] = package
    GENERATION_MIXIN_AVAILABLE = (tests_dir / "generation" / "test_utils.py").is_file()
    if not (tests_dir / "exporters" / "test_export.py").is_file():
        _stand_in(f"{PACKAGE}.exporters")
        _stand_in(f"{PACKAGE}.exporters.test_export", ExportTesterMixin=type("ExportTesterMixin", (), {}))
    if not GENERATION_MIXIN_AVAILABLE:
        _stand_in(f"{PACKAGE}.generation")
        _stand_in(f"{PACKAGE}.generation.test_utils", GenerationTesterMixin=type("GenerationTesterMixin", (), {}))
    if not (tests_dir / "utils" / "test_configuration_utils.py").is_file():
        _stand_in(f"{PACKAGE}.utils")
        _stand_in(f"{PACKAGE}.utils.test_configuration_utils", config_common_kwargs={})
    if importlib.util.find_spec("fetch_hub_objects_for_ci") is None:
        _stand_in("fetch_hub_objects_for_ci", url_to_local_path=local_test_image)
    return package


def module(name: str) -> types.ModuleType:
    """`transformers_upstream_tests.<name>`, e.g. `test_modeling_common`."""
    load()
    return importlib.import_module(f"{PACKAGE}.{name}")
