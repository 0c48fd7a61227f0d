"""`exo2ego serve`: an OpenAI-compatible video chat server (FastAPI + uvicorn) around `model.generate`.

Modules: `media` (which video URLs may be read), `protocol` (the chat request schema and its conversion to the
processor's chat format), `request_media` (reading a request's video or image frames into the processor's input),
`engine` (a worker thread batching concurrent requests into one `generate` call), `server` (the FastAPI app) and
`cli` (the command). Needs the `serve` extra: `pip install -e ".[serve]"`.
"""
