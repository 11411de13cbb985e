"""Where a dataset's atomic files live (no pandas, no downloads: the parsed-dataset cache and the
downloader both start here).

A dataset ``NAME`` is looked for, first match wins, in ``data_path`` (``--data-path``), then
``$KGGLM_DATA``, then the per-user cache ``$XDG_CACHE_HOME/kgglm`` (default ``~/.cache/kgglm``):
``ROOT/NAME/NAME.inter``, or ``ROOT/NAME.inter`` when the root already is the dataset folder.
"""

from __future__ import annotations

import os
from pathlib import Path

CHECKSUM_FILE = ".kgglm-sha256.json"  # SHA-256 of a downloaded dataset's files, next to them


def cache_dir() -> Path:
    """The per-user cache folder (``$XDG_CACHE_HOME/kgglm`` or ``~/.cache/kgglm``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kgglm"


def candidate_roots(data_path: str | os.PathLike | None = None) -> list[Path]:
    """The data roots searched, in order."""
    roots = [Path(data_path).expanduser()] if data_path else []
    if os.environ.get("KGGLM_DATA"):
        roots.append(Path(os.environ["KGGLM_DATA"]).expanduser())
    roots.append(cache_dir())
    return roots


def valid_name(name: str) -> bool:
    """A plain dataset name (no path separators, not ``.``/``..``)."""
    return bool(name) and "/" not in name and name not in (".", "..")


def find_dataset(name: str, data_path: str | os.PathLike | None = None) -> Path | None:
    """The folder holding ``NAME.inter`` under the first root that has it, or None (not on disk, or
    not a plain name)."""
    if not valid_name(name):
        return None
    for root in candidate_roots(data_path):
        for folder in (root / name, root):
            if (folder / f"{name}.inter").is_file():
                return folder
    return None
