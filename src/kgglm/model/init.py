"""Building a model without its random initialisation, for one whose every weight is then loaded."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                  "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
                  "sparse_")


@contextlib.contextmanager
def no_weight_init() -> Iterator[None]:
    """Skip ``torch.nn.init``'s random initialisation of modules built in the block (as Hugging Face's
    ``no_init_weights``): for a model whose every weight a checkpoint then overwrites (a strict
    load). Process-wide while it lasts: for a command's single thread, not for a server."""
    init = torch.nn.init
    names = [n for n in INIT_FUNCTIONS if hasattr(init, n)]
    saved = {n: getattr(init, n) for n in names}

    def skip(tensor, *args, **kwargs):
        return tensor

    try:
        for n in names:
            setattr(init, n, skip)
        yield
    finally:
        for n, f in saved.items():
            setattr(init, n, f)
