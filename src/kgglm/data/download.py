"""Find a dataset's atomic files by name, downloading the known ones (``ml-100k``) when absent.

Where a dataset ``NAME`` is looked for, first match wins:

1. ``data_path`` (``--data-path``): ``DATA_PATH/NAME/NAME.inter``, or ``DATA_PATH/NAME.inter`` when
   the path already is the dataset folder;
2. the ``KGGLM_DATA`` environment variable, the same way;
3. the per-user cache ``$XDG_CACHE_HOME/kgglm`` (default ``~/.cache/kgglm``).

When not found and ``NAME`` is a known dataset, its zips are downloaded into the first of those
roots that was given (so ``--data-path`` also says where to download) with a progress bar. Files may
sit at a zip's root or one folder down. After the first download the SHA-256 of every zip and
extracted file is kept in ``NAME/.kgglm-sha256.json``; later loads verify the files and later
downloads the zips against it. The base URL can be overridden with ``KGGLM_DOWNLOAD_URL`` (tests
serve zips from 127.0.0.1).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm.auto import tqdm

from kgglm.data.atomic import DatasetError

log = logging.getLogger(__name__)

DEFAULT_DOWNLOAD_URL = "https://recbole.s3-accelerate.amazonaws.com"
CHECKSUM_FILE = ".kgglm-sha256.json"
# dataset -> [(url path under the base URL, file suffixes taken from that zip)]
KNOWN_DATASETS: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "ml-100k": [
        ("ProcessedDatasets/MovieLens/ml-100k.zip", (".inter", ".item", ".user")),
        ("KGDatasets/MovieLens-KG.zip", (".kg", ".link")),
    ],
}
REQUIRED_SUFFIXES = (".inter", ".kg", ".link")


def cache_dir() -> Path:
    """The per-user cache folder (``$XDG_CACHE_HOME/kgglm`` or ``~/.cache/kgglm``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kgglm"


def download_url() -> str:
    return os.environ.get("KGGLM_DOWNLOAD_URL", DEFAULT_DOWNLOAD_URL).rstrip("/")


def candidate_roots(data_path: str | Path | None = None) -> list[Path]:
    """The data roots searched, in order."""
    roots = [Path(data_path).expanduser()] if data_path else []
    if os.environ.get("KGGLM_DATA"):
        roots.append(Path(os.environ["KGGLM_DATA"]).expanduser())
    roots.append(cache_dir())
    return roots


def resolve_dataset(
    name: str,
    data_path: str | Path | None = None,
    *,
    download: bool = True,
    show_progress: bool = True,
) -> Path:
    """The folder holding ``NAME.inter`` (and ``.kg``, ``.link``...), downloading a known dataset if needed."""
    if not name or "/" in name or name in (".", ".."):
        raise DatasetError(f"dataset name {name!r}: expected a plain name such as 'ml-100k'")
    roots = candidate_roots(data_path)
    for root in roots:
        for folder in (root / name, root):
            if (folder / f"{name}.inter").is_file():
                verify_checksums(folder)
                return folder
    searched = ", ".join(str(r / name) for r in roots)
    if name not in KNOWN_DATASETS:
        raise DatasetError(
            f"dataset '{name}': {name}.inter not found in {searched}; expected a folder DATA_PATH/{name}/ "
            f"with atomic files {name}.inter, {name}.kg and {name}.link (pass --data-path DATA_PATH or "
            f"set KGGLM_DATA)")
    if not download:
        raise DatasetError(f"dataset '{name}': not found in {searched} and downloading is off")
    return download_dataset(name, roots[0], show_progress=show_progress)


def download_dataset(name: str, root: str | Path, *, show_progress: bool = True) -> Path:
    """Download and extract a known dataset into ``ROOT/NAME/``; return that folder."""
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    sums = _load_checksums(folder)
    for rel_url, suffixes in KNOWN_DATASETS[name]:
        url = f"{download_url()}/{rel_url}"
        with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
            zip_path = Path(tmp) / "archive.zip"
            _fetch(url, zip_path, name, folder, show_progress)
            digest = _sha256(zip_path)
            known = sums["zips"].get(rel_url)
            if known and known != digest:
                raise DatasetError(f"{url}: SHA-256 {digest} differs from {known} recorded at the first "
                                   f"download in {folder / CHECKSUM_FILE}; expected the same file "
                                   "(delete that file to accept the new one)")
            sums["zips"][rel_url] = digest
            for path in _extract(zip_path, name, suffixes, folder, url):
                sums["files"][path.name] = _sha256(path)
    missing = [f"{name}{s}" for s in REQUIRED_SUFFIXES if not (folder / f"{name}{s}").is_file()]
    if missing:
        raise DatasetError(f"downloaded {name} into {folder} but {', '.join(missing)} missing; expected "
                           "the zips to contain them")
    _write_json(folder / CHECKSUM_FILE, sums)
    log.info("downloaded %s into %s", name, folder)
    return folder


def verify_checksums(folder: Path) -> None:
    """Check downloaded files against the SHA-256 recorded at their download (no-op if none)."""
    path = folder / CHECKSUM_FILE
    if not path.is_file():
        return
    for fname, want in _load_checksums(folder)["files"].items():
        file = folder / fname
        if file.is_file() and _sha256(file) != want:
            raise DatasetError(f"{file}: SHA-256 differs from the one recorded at download in {path}; "
                               "expected the downloaded file unchanged (delete the folder to download "
                               "it again)")


# --------------------------------------------------------------------------------------- internals
def _fetch(url: str, dest: Path, name: str, folder: Path, show_progress: bool) -> None:
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(dest, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {Path(url).name}",
                      disable=not show_progress) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DatasetError(
            f"could not download {name} from {url} ({reason}). Offline? Put the atomic files "
            f"{name}.inter, {name}.kg and {name}.link (optionally {name}.item) in a folder "
            f"DIR/{name}/ and pass --data-path DIR (or set KGGLM_DATA=DIR); expected {folder} to be "
            "writable and the URL reachable otherwise") from None


def _extract(zip_path: Path, name: str, suffixes: tuple[str, ...], folder: Path, url: str) -> list[Path]:
    """Copy ``NAME<suffix>`` members found at the zip root or one folder down into ``folder``."""
    wanted = {f"{name}{s}" for s in suffixes}
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = {}
            for info in zf.infolist():
                parts = Path(info.filename).parts
                if info.is_dir() or len(parts) > 2 or parts[-1] not in wanted:
                    continue
                if parts[-1] not in members or len(parts) < len(Path(members[parts[-1]].filename).parts):
                    members[parts[-1]] = info  # prefer the shallowest copy
            out = []
            for fname, info in sorted(members.items()):
                tmp = folder / f".{fname}.tmp"
                with zf.open(info) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.replace(tmp, folder / fname)
                out.append(folder / fname)
    except zipfile.BadZipFile as exc:
        raise DatasetError(f"{url}: not a valid zip ({exc}); expected a zip archive") from None
    if not out:
        raise DatasetError(f"{url}: none of {', '.join(sorted(wanted))} at the zip root or one folder down")
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _load_checksums(folder: Path) -> dict:
    path = folder / CHECKSUM_FILE
    if not path.is_file():
        return {"zips": {}, "files": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {"zips": dict(data.get("zips", {})), "files": dict(data.get("files", {}))}
    except (ValueError, AttributeError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc}); expected the checksum record") from None


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)
