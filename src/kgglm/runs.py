"""Run directories and seeding: the small helpers every entry point shares."""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import numpy as np
import torch

from kgglm.config import Config

logger = logging.getLogger(__name__)


def make_run_dir(config: Config, stage: str) -> Path:
    """A new directory ``CHECKPOINT_DIR/<model>-<dataset>-<stage>-<YYYYmmdd-HHMMSS>[-n]``; with
    ``resume``, the newest existing one of that model, dataset and stage (its checkpoints resume)."""
    prefix = f"{config.model}-{config.dataset}-{stage}-"
    if config["resume"]:
        previous = [p for p in Path(config["checkpoint_dir"]).glob(prefix + "*") if p.is_dir()]
        if previous:
            found = max(previous, key=lambda p: p.stat().st_mtime)
            logger.info("resume: continuing in %s", found)
            return found
        logger.warning("resume: no earlier %s* run directory in %s; starting a new run", prefix,
                       config["checkpoint_dir"])
    base = Path(config["checkpoint_dir"]) / f"{prefix}{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1000):
        path = base if n == 0 else base.with_name(f"{base.name}-{n}")
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"cannot create a run directory next to {base}")


def seed_everything(seed: int, reproducibility: bool = True) -> None:
    """Seed Python, NumPy and torch (all devices); cuDNN deterministic when ``reproducibility``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.deterministic = bool(reproducibility)
    torch.backends.cudnn.benchmark = not reproducibility
