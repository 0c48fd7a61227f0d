"""Stage 3, student self-practice: ego tower, F, connector and LoRA on the LLM, instruction-tuned on EgoIT.

    accelerate launch [--config_file train/accelerate/ddp.yaml] train/stage3.py --config train/configs/stage3.yaml \
        [--key value ...]

The stage's row of the table is `train.stages.STAGES["stage3"]`; arguments are described in `train/arguments.py` and
`train/README.md`.
"""

from train.pipeline import main

if __name__ == "__main__":
    raise SystemExit(main("stage3"))
