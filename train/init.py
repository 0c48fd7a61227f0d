"""Initialization: both vision towers (and the connector) learn their own domain with VTG; LLM frozen.

    accelerate launch [--config_file train/accelerate/ddp.yaml] train/init.py --config train/configs/init.yaml \
        [--key value ...]

The stage's row of the table is `train.stages.STAGES["init"]`; arguments are described in `train/arguments.py` and
`train/README.md`.
"""

from train.pipeline import main

if __name__ == "__main__":
    raise SystemExit(main("init"))
