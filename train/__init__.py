"""Exo2Ego training: the stage table (`train.stages`), the Trainer subclass (`train.trainer`), data and collator,
the VideoLLaMA2 converter and the stage scripts `init.py`, `stage1.py`, `stage2.py`, `stage3.py`."""
