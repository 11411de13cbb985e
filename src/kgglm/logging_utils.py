"""Logging for runs: the ``kgglm`` logger to the console and, during a run, to its log file.

Only the package's own logger is configured (never the root logger), so embedding kgglm in an
application does not change that application's logging. The level comes from the ``state`` key.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOGGER_NAME = "kgglm"
FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
DATEFMT = "%Y-%m-%d %H:%M:%S"
_CONSOLE_FLAG = "_kgglm_console"


def setup_logging(level: str | int = "INFO") -> logging.Logger:
    """Send ``kgglm.*`` records at ``level`` and above to stderr (idempotent); return the logger."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(_level(level))
    # An application (or pytest) that configured the root logger gets our records through it;
    # otherwise we print them ourselves. Records still propagate, so nothing is printed twice.
    if not logging.getLogger().handlers and not any(getattr(h, _CONSOLE_FLAG, False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT, DATEFMT))
        setattr(handler, _CONSOLE_FLAG, True)
        logger.addHandler(handler)
    return logger


@contextmanager
def log_to_file(path: str | os.PathLike, level: str | int = "INFO") -> Iterator[Path]:
    """Also write ``kgglm.*`` records to ``path`` while the block runs (the run's log file)."""
    setup_logging(level)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT, DATEFMT))
    handler.setLevel(_level(level))
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    try:
        yield path
    finally:
        logger.removeHandler(handler)
        handler.close()


def _level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    value = logging.getLevelName(str(level).upper())
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {level!r} (state must be DEBUG, INFO, WARNING, ERROR or CRITICAL)")
    return value
