"""Web image/video-text pretraining data (VideoLLaMA2 / LLaVA JSON) as initialization captions for the exo encoder."""

# Source names of `--root NAME=DIR`: both use the same record format; the name prefixes the row ids.
SOURCES = ("videollama2", "llava")
