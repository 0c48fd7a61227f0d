"""The project's base layer, imported by the data builders, training and evaluation (never the other way round):
package versions for provenance, atomic files and staged folders, the one Hub upload, and tiny models.

It imports only `modeling_exo2ego` (the Hub remote-code bundle) and third-party packages; the `exo2ego` package
(command line, demo, serving) sits on top and nothing below imports it. `tests/test_layers.py` enforces this.
"""
