"""The error types that mean bad input, shared by every command-line entry point (``kgglm`` and
``python -m kgglm.serve``): those print a one-line message and exit with status 2, no traceback.

Nothing is imported here: each type is looked up among the modules already loaded.
"""

from __future__ import annotations

import sys

USER_ERRORS = {"kgglm.config": "ConfigError", "kgglm.data.atomic": "DatasetError",
               "kgglm.train.checkpoint": "CheckpointError"}


def user_errors() -> tuple[type[Exception], ...]:
    """The error types that mean bad input (a message and exit status 2, no traceback), among the
    modules loaded so far: an error type whose module was never imported cannot have been raised,
    and importing it only to catch it would cost a command that does not need it (pandas, torch)."""
    return tuple(getattr(sys.modules[m], name) for m, name in USER_ERRORS.items() if m in sys.modules)
