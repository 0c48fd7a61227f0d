"""Exo2Ego for transformers.

This folder is also the Hub remote-code bundle (`trust_remote_code=True` downloads its modules), so the
modules import only torch, transformers, numpy, Pillow and (optionally) PyAV, and each other by relative import.
Importing the package registers the classes with the Auto factories, so the installed project needs no trust flag.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor

from .configuration_exo2ego import AUTO_MAP, Exo2EgoConfig, num_connector_tokens
from .modeling_exo2ego import (
    Exo2EgoCausalLMOutput,
    Exo2EgoForConditionalGeneration,
    Exo2EgoModel,
    Exo2EgoModelOutput,
    Exo2EgoPreTrainedModel,
    Exo2EgoVideoOutput,
)
from .processing_exo2ego import Exo2EgoProcessor
from .video_io_exo2ego import DecodedClipCache, VideoClip, read_video_frames, sample_timestamps

AutoConfig.register("exo2ego", Exo2EgoConfig, exist_ok=True)
for auto_class in (AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText):
    auto_class.register(Exo2EgoConfig, Exo2EgoForConditionalGeneration, exist_ok=True)
AutoProcessor.register(Exo2EgoConfig, Exo2EgoProcessor, exist_ok=True)
# Both this and AUTO_MAP (written into every config by Exo2EgoConfig) are needed: register_for_auto_class sets
# `_auto_class`, the only thing that makes save_pretrained copy the remote-code modules next to the weights, but it
# maps one Auto class per class; AUTO_MAP adds the other Auto model classes (AutoModelForCausalLM,
# AutoModelForImageTextToText) that a saved folder must load with under trust_remote_code=True.
Exo2EgoConfig.register_for_auto_class()
Exo2EgoForConditionalGeneration.register_for_auto_class("AutoModel")
Exo2EgoProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "AUTO_MAP",
    "DecodedClipCache",
    "Exo2EgoConfig",
    "Exo2EgoModel",
    "Exo2EgoPreTrainedModel",
    "Exo2EgoForConditionalGeneration",
    "Exo2EgoModelOutput",
    "Exo2EgoCausalLMOutput",
    "Exo2EgoVideoOutput",
    "Exo2EgoProcessor",
    "VideoClip",
    "num_connector_tokens",
    "read_video_frames",
    "sample_timestamps",
]
