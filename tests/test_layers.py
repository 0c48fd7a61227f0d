"""The layer rule (README "Layout"): each project package imports only packages of lower layers, and no two modules
import each other, directly or through others, not even through an import inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Lowest first. A package may import itself and the packages listed before it; `benchmarks`, like the tests, stands
# outside the layers and measures any of them (the server included).
LAYERS = ["modeling_exo2ego", "exo2ego_base", "datasets_scripts", "eval", "model_card", "train", "exo2ego"]
CONSUMERS = {"benchmarks": set(LAYERS)}
PACKAGES = [*LAYERS, *CONSUMERS]


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Every project module `path` imports, at any depth of the file (function-local imports included)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import module` imports pkg.module where that is a module
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        found.update(target for target in targets if target.split(".")[0] in PACKAGES)
    return found


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            modules[module_name(path)] = path
    return modules


MODULES = project_modules()
IMPORTS = {name: imported_modules(path) for name, path in MODULES.items()}


def test_each_package_imports_only_lower_layers():
    violations = []
    for name, targets in IMPORTS.items():
        package = name.split(".")[0]
        allowed = CONSUMERS.get(package) or set(LAYERS[: LAYERS.index(package)])
        for target in sorted(targets):
            top = target.split(".")[0]
            if top != package and top not in allowed:
                violations.append(f"{name} imports {target}")
    assert not violations, "imports against the layer rule:\n" + "\n".join(violations)


def test_the_remote_code_bundle_imports_no_project_package():
    outside = {t for name, targets in IMPORTS.items() if name.startswith("modeling_exo2ego") for t in targets}
    assert {t for t in outside if not t.startswith("modeling_exo2ego")} == set()


STAGE2_LOSS_NAMES = {"KL_MODES", "clip_moments", "kl_alignment_loss", "cycle_consistency_loss"}


def module_level_names(path: Path) -> set[str]:
    """Names a module binds at its top level: functions, classes, assignments and imports (re-exports)."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(target.id for target in targets if isinstance(target, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


def test_the_remote_code_bundle_holds_the_model_and_no_training_losses():
    """The bundle every release ships under `trust_remote_code` carries no training code: no module of it mentions
    `torch.distributed` or defines (or re-exports) a stage-2 loss; those live in `train.losses`."""
    bundle = {name: path for name, path in MODULES.items() if name.split(".")[0] == "modeling_exo2ego"}
    assert {"modeling_exo2ego", "modeling_exo2ego.modeling_exo2ego"} <= set(bundle)
    for name, path in bundle.items():
        assert "torch.distributed" not in path.read_text(encoding="utf-8"), name
        assert not module_level_names(path) & STAGE2_LOSS_NAMES, name
    assert STAGE2_LOSS_NAMES <= module_level_names(MODULES["train.losses"])
    import modeling_exo2ego
    from train import losses

    assert not {"kl_alignment_loss", "cycle_consistency_loss"} & set(modeling_exo2ego.__all__)
    assert losses.kl_alignment_loss.__module__ == losses.cycle_consistency_loss.__module__ == "train.losses"


def test_no_import_cycles_between_modules():
    graph = {name: {t for t in targets if t in MODULES and t != name} for name, targets in IMPORTS.items()}
    # a module imports its package's __init__ when imported; cycles through __init__ re-exports are not lazy circles
    graph = {name: {t for t in targets if not name.startswith(t + ".")} for name, targets in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*stack[stack.index(target) :], target]))
            elif target not in state:
                visit(target, [*stack, target])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize(
    "bad", ["from exo2ego.demo import run_demo", "import train.pipeline", "from eval import report"]
)
def test_the_checker_sees_an_upward_import(tmp_path, bad):
    """The checks above would pass on an empty graph: an upward import in a probe module must be seen."""
    probe = tmp_path / "datasets_scripts" / "egoit" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text(bad + "\n")
    assert {t.split(".")[0] for t in imported_modules(probe, tmp_path)} & {"exo2ego", "train", "eval"}
