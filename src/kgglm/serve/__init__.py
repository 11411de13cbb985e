"""``kgglm serve``: an HTTP API for explained recommendations and a page to explore them.

Start it with ``kgglm serve --checkpoint DIR`` (or ``python -m kgglm.serve --checkpoint DIR``); the
model, training graph and seen-item masks load once, concurrent requests are decoded together.
Needs the ``serve`` extra (``pip install kgglm[serve]``: FastAPI, uvicorn).
"""

from kgglm.serve.commands import add_parser, serve_main

__all__ = ["add_parser", "serve_main"]
