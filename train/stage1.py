"""Stage 1, teacher self-preparation: the exo tower (and connector) on Ego-ExoClip exo clips; LLM frozen.

    accelerate launch [--config_file train/accelerate/ddp.yaml] train/stage1.py --config train/configs/stage1.yaml \
        [--key value ...]

The stage's row of the table is `train.stages.STAGES["stage1"]`; arguments are described in `train/arguments.py` and
`train/README.md`.
"""

from train.pipeline import main

if __name__ == "__main__":
    raise SystemExit(main("stage1"))
