"""The download machinery every known data set shares: a file fetched with pooch (hash-checked, or
taken from where the user put it by hand), a writable data folder (the per-user cache when the root is
read-only), and the install step that makes a build appear whole or not at all (staged files moved in
with ``NAME.inter`` last and their SHA-256 recorded in :data:`CHECKSUM_FILE`, checked on later loads).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import pooch

from kgglm import durable
from kgglm.data.atomic import DatasetError
from kgglm.data.locate import CHECKSUM_FILE, cache_dir

__all__ = ["install", "load_checksums", "obtain", "prepare_folder", "remove_empty", "sha256", "verify_checksums",
           "writable_folder", "write_table"]

logger = logging.getLogger(__name__)


def verify_checksums(folder: Path) -> None:
    """Check downloaded files against the SHA-256 recorded at their download (no-op if none)."""
    path = folder / CHECKSUM_FILE
    if not path.is_file():
        return
    for fname, want in load_checksums(folder)["files"].items():
        file = folder / fname
        if file.is_file() and sha256(file) != want:
            raise DatasetError(f"{file}: SHA-256 differs from the one recorded at download in {path}; "
                               "expected the downloaded file unchanged (delete the folder to download "
                               "it again)")


def obtain(url: str, want: str | None, local: Path, tmp: Path, *, show_progress: bool, offline: str,
           mismatch: str) -> Path:
    """``local`` when the user put the file there by hand, else ``url`` downloaded by pooch into ``tmp``.

    ``want`` is the expected SHA-256 (None: unchecked); ``offline`` is the error message when the download
    fails (``{url}`` and ``{exc}`` are filled in) and ``mismatch`` says where ``want`` comes from.
    pooch rather than urllib: it streams to a temporary file, checks the hash and only then renames,
    which is exactly the "nothing half-written" rule, with a tqdm progress bar; it costs one small
    pure-Python dependency (plus ``requests``, which it brings).
    """
    if local.is_file():
        if want and sha256(local) != want:
            raise DatasetError(f"{local}: SHA-256 {sha256(local)} differs from the expected {want}; "
                               "expected the upstream file (delete it to download it again)")
        logger.info("using %s instead of downloading %s", local, url)
        return local
    try:
        downloader = pooch.HTTPDownloader(progressbar=show_progress, timeout=60)
        return Path(pooch.retrieve(url, known_hash=f"sha256:{want}" if want else None, fname=local.name,
                                   path=tmp, downloader=downloader))
    except ValueError as exc:  # pooch's hash mismatch; it has already deleted the download
        raise DatasetError(f"{url}: {exc} {mismatch}") from None
    except OSError as exc:  # requests' errors are OSErrors too: no network, refused, HTTP 404...
        raise DatasetError(offline.replace("{url}", url).replace("{exc}", str(exc))) from None


def install(name: str, stage: Path, folder: Path, sources: Mapping[str, str]) -> None:
    """Move every file of ``stage`` into ``folder``, ``NAME.inter`` last (it marks the data set complete),
    recording their SHA-256 and the ``sources``' (file name to SHA-256) in :data:`CHECKSUM_FILE` before it."""
    built = sorted(stage.iterdir(), key=lambda p: p.name == f"{name}.inter")
    if not built or built[-1].name != f"{name}.inter":
        raise DatasetError(f"{stage}: no {name}.inter was built; expected the atomic files of {name}")
    sums = {"zips": dict(sources), "files": {p.name: sha256(p) for p in built}}
    for path in built[:-1]:
        durable.move(path, folder / path.name)
    durable.write_json(folder / CHECKSUM_FILE, sums, indent=2, sort_keys=True)
    durable.move(built[-1], folder / built[-1].name)


def writable_folder(folder: Path) -> Path | None:
    """``folder``, created if needed, when a file can be written in it; else None."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        return None
    return folder


def prepare_folder(root: Path, name: str) -> tuple[Path, list[Path]]:
    """``ROOT/NAME``, created, or the per-user cache's ``NAME`` folder when ROOT is read-only (logged), and
    the folders this call made, deepest first (for :func:`remove_empty` when the download fails)."""
    for base in dict.fromkeys([root, cache_dir()]):
        folder = base / name
        created = [p for p in (folder, *folder.parents) if not p.exists()]
        if writable_folder(folder) is not None:
            if base != root:
                logger.warning("%s: %s is read-only; building into the per-user cache %s", name, root, folder)
            return folder, created
        remove_empty(created)
    raise DatasetError(f"{name}: cannot write to {root / name} nor {cache_dir() / name}; expected a writable "
                       "data root (pass --data-path DIR or set XDG_CACHE_HOME)")


def remove_empty(created: list[Path]) -> None:
    """Remove the folders in ``created`` (deepest first) while they are empty: a failed first download
    leaves no empty folders behind."""
    for path in created:
        try:
            path.rmdir()
        except OSError:
            break


def write_table(path: Path, header: str, frame: pd.DataFrame) -> None:
    """Write an atomic file durably (:mod:`kgglm.durable`), so a reader never sees half of it."""
    with durable.open_atomic(path, "w", newline="\n") as f:
        f.write(header + "\n")
        frame.to_csv(f, sep="\t", header=False, index=False, quoting=csv.QUOTE_NONE, lineterminator="\n")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def load_checksums(folder: Path) -> dict:
    path = folder / CHECKSUM_FILE
    if not path.is_file():
        return {"zips": {}, "files": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {"zips": dict(data.get("zips", {})), "files": dict(data.get("files", {}))}
    except (ValueError, AttributeError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc}); expected the checksum record") from None
