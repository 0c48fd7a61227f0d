"""Stage 2, teacher-student guidance: ego tower, F and G on synchronized ego-exo pairs with VTG + KL + CCL.

    accelerate launch [--config_file train/accelerate/ddp.yaml] train/stage2.py --config train/configs/stage2.yaml \
        [--key value ...]

The stage's row of the table is `train.stages.STAGES["stage2"]`; arguments are described in `train/arguments.py` and
`train/README.md`.
"""

from train.pipeline import main

if __name__ == "__main__":
    raise SystemExit(main("stage2"))
