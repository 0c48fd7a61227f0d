"""Tiny random-weight Exo2Ego models for trying the API, for tests, benchmarks and the CPU demo.

Everything is built offline: CLIP and Mistral configs at toy sizes, and a byte-level BPE tokenizer trained on a
small built-in corpus (the synthetic world's vocabulary and the chat markup). This module is the base layer's part of
the tiny models, so that every layer, the tests and the benchmarks can build one; `exo2ego.tiny` is their index and
holds the rest: `exo2ego tiny-model --out DIR` (`exo2ego.tiny.checkpoint.save_tiny_model`) saves one as a folder that
loads with `AutoModel`/`AutoProcessor` and `trust_remote_code=True`, optionally after pretraining its LLM and vision
towers (`exo2ego.tiny.language`, `exo2ego.tiny.vision`).

torch, tokenizers and the model load inside the builders: `exo2ego --help` imports this module through the
tiny-model command, and `tiny_config_kwargs` (what the memory planner reads) needs none of them.
"""

from __future__ import annotations

import itertools

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

VIDEO_TOKEN = "<video>"
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", VIDEO_TOKEN]

# Words the synthetic Ego-Exo world, its questions and the prompts use: with enough merges (`TINY_VOCAB_SIZE` leaves
# room) each is one token, so the world's texts are as short in tokens as they are in words.
CORPUS_WORDS = """
C I you me my the a an of to with in on into from at and or what which who where when how why did does do is was are
were be been this that these those it its hand hands left right both picks picked pick up puts put down place placed
moves moved move pours poured pour opens opened open closes closed close pushes pushed push turns turned turn takes
took take holds held hold lifts lifted lift drops dropped drop slides slid slide stacks stacked stack shakes shook
red green blue yellow orange purple white black pink cyan brown gray cube ball sphere cylinder cone cup bowl box
block plate bottle jar pan knife spoon table shelf drawer door counter sink water container lid object objects
first then after before next finally last while video clip camera view frame scene person wearer egocentric
exocentric answer question option options letter best choose select describe happened happening doing action
activity task step goal answer: question: options: A B C D E F G H (A) (B) (C) (D) (E) yes no none all
plain striped checked dotted banded pattern someone Someone colour liquid grasps places shake shows shown happens
recorded recording through eyes own point about am perform here Here below reply respond say saw sentence short briefly
caption Caption one only off back head mounted attention Answer Based Consider Describe In Look Narrate On Pay Please
Summarise Tell The Using Watch What Which Write
""".split()
# BPE vocabulary of the tiny tokenizer (room for every corpus word to be one token) and of its LLM.
TINY_VOCAB_SIZE = 1024
# Words that open a line of the world's prompts (after a newline there is no space before them).
LINE_STARTS = ("What", "Which", "Describe", "Answer", "Options", "A", "B", "C", "D", "E")


def tokenizer_corpus() -> list[str]:
    """Sentences for training the tiny BPE tokenizer (deterministic)."""
    sentences = [" ".join(CORPUS_WORDS), "\n".join(LINE_STARTS)]
    for first, second in itertools.product(CORPUS_WORDS[:60], CORPUS_WORDS[60:160]):
        sentences.append(f"{first} {second}")
    sentences += ["[INST] What did I do? [/INST] C picks up the red cube with the right hand."] * 4
    # Answers start with a space and an option letter (" B. the blue cup"): make " A".." E" single tokens.
    colours = ("red", "green", "blue", "yellow", "purple", "cyan")
    sentences += [f"[/INST] {letter}. the {colour} cup" for letter in "ABCDE" for colour in colours] * 40
    # The synthetic world's patterns (named by its web-exo captions): one token each, so no two share a last token.
    patterns = ("plain", "striped", "checked", "dotted", "banded")
    sentences += [f"a {pattern} {colour} jar" for pattern in patterns for colour in colours] * 40
    return sentences


def build_tiny_tokenizer(vocab_size: int = TINY_VOCAB_SIZE):
    """A byte-level BPE `PreTrainedTokenizerFast` trained offline, with `<video>` as a special token."""
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(tokenizer_corpus(), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"video_token": VIDEO_TOKEN},
        padding_side="left",
    )


def tiny_config_kwargs(
    image_size: int = 32,
    patch_size: int = 4,
    vision_hidden_size: int = 32,
    vision_layers: int = 2,
    text_hidden_size: int = 64,
    text_layers: int = 2,
    vocab_size: int = TINY_VOCAB_SIZE,
    num_frames: int = 4,
    **overrides,
) -> dict:
    """`Exo2EgoConfig` keyword arguments at toy sizes; `overrides` set any other config field."""
    vision = dict(
        hidden_size=vision_hidden_size,
        intermediate_size=2 * vision_hidden_size,
        num_hidden_layers=vision_layers,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
    )
    text = dict(
        hidden_size=text_hidden_size,
        intermediate_size=2 * text_hidden_size,
        num_hidden_layers=text_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        max_position_embeddings=2048,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    kwargs = dict(
        ego_vision_config=vision,
        exo_vision_config=vision,
        text_config=text,
        video_token_id=SPECIAL_TOKENS.index(VIDEO_TOKEN),
        num_frames=num_frames,
        connector_depth=1,
        mapping_ngf=8,
        mapping_n_blocks=2,
    )
    kwargs.update(overrides)
    return kwargs


def build_processor(config, tokenizer):
    """An `Exo2EgoProcessor` matching `config` (frame count, grid, connector) around `tokenizer`."""
    # Deferred, heavy: transformers' image processors and the Exo2Ego model code; exo2ego --help imports this module.
    from transformers import CLIPImageProcessorPil

    from modeling_exo2ego import Exo2EgoProcessor

    size = config.ego_vision_config.image_size
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return Exo2EgoProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        num_frames=config.num_frames,
        grid_size=config.grid_size,
        connector_type=config.connector_type,
    )


def build_tiny_model(seed: int = 0, attn_implementation: str = "sdpa", **config_overrides):
    """A random-weight tiny Exo2Ego model and its processor, reproducible for a seed. Returns (model, processor)."""
    # Deferred, heavy: the Exo2Ego model code loads transformers' models; exo2ego --help imports this module.
    from modeling_exo2ego import Exo2EgoConfig, Exo2EgoForConditionalGeneration

    tokenizer = build_tiny_tokenizer(config_overrides.pop("vocab_size", TINY_VOCAB_SIZE))
    config = Exo2EgoConfig(**tiny_config_kwargs(vocab_size=len(tokenizer), **config_overrides))
    config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = Exo2EgoForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, build_processor(config, tokenizer)
