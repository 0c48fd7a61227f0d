"""placeholder"""


def add_parser(subparsers):
    """`exo2ego app` is added with the Gradio app."""
