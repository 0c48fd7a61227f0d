"""The Hub Space: `app.py` (Gradio video chat) and its `requirements.txt`; `exo2ego app` runs the same file."""
