"""Find a dataset's atomic files by name; download and build the known ones (``ml-100k``, ``ml1m``) when absent.

Where a dataset ``NAME`` is looked for, first match wins:

1. ``data_path`` (``--data-path``): ``DATA_PATH/NAME/NAME.inter``, or ``DATA_PATH/NAME.inter`` when
   the path already is the dataset folder;
2. the ``KGGLM_DATA`` environment variable, the same way;
3. the per-user cache ``$XDG_CACHE_HOME/kgglm`` (default ``~/.cache/kgglm``).

When not found and ``NAME`` is a known dataset, it is built in ``ROOT/NAME/`` under the first of those
roots that was given (so ``--data-path`` also says where to download; a read-only root falls back to the
per-user cache, logged). ``ml1m`` comes from the paper's repository (:mod:`kgglm.data.paper_ml1m`, with
pinned SHA-256 sums), ``ml-100k-dbpedia`` is built from ``ml-100k`` and ``ml1m`` (found or downloaded,
:mod:`kgglm.data.dbpedia_link`); ``ml-100k`` is built from RecBole's archives:

* RecBole's processed zip (``ProcessedDatasets/MovieLens/ml-100k.zip``) gives ``NAME.inter``,
  ``.item`` and ``.user`` as they are;
* RecBole's ``KGDatasets/MovieLens-KG.zip`` holds no atomic files but KB4Rec's raw Freebase files
  (``link.kg``, ``relation.kg``, ``hop1.kg``..``hop3.kg``, ``extra.kg``: tab-separated, no header).
  :func:`convert_kb4rec` turns them into ``NAME.link`` and ``NAME.kg`` the way RecBole's
  ``conversion_tools/add_knowledge.py`` does (see its docstring).

Downloads go through ``pooch`` (streamed to a temporary file, hash-checked, then moved), archives are
read from a temporary folder that is deleted afterwards, and every output file is moved into place
only when all of them are ready, ``NAME.inter`` last, so an interrupted run leaves no dataset that
looks complete. A zip already sitting in ``ROOT/NAME/`` under its upstream name is used instead of
downloading it (the offline route). Upstream publishes no checksums, so the SHA-256 of every zip and
built file is recorded at the first build in ``NAME/.kgglm-sha256.json`` (trust on first use): later
loads verify the files and later downloads the zips against it. The base URL can be overridden with
``KGGLM_DOWNLOAD_URL`` (tests serve zips from 127.0.0.1).
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kgglm.data.atomic import DatasetError, read_atomic
from kgglm.data.fetch import (
    install,
    load_checksums,
    obtain,
    prepare_folder,
    remove_empty,
    sha256,
    verify_checksums,
    write_table,
)
from kgglm.data.locate import CHECKSUM_FILE, cache_dir, candidate_roots, find_dataset, valid_name

__all__ = ["CHECKSUM_FILE", "KNOWN_DATASETS", "cache_dir", "candidate_roots", "convert_kb4rec", "download_dataset",
           "download_url", "resolve_dataset", "verify_checksums"]

logger = logging.getLogger(__name__)

DEFAULT_DOWNLOAD_URL = "https://recbole.s3-accelerate.amazonaws.com"
REQUIRED_SUFFIXES = (".inter", ".kg", ".link")
KG_HEADER = "head_id:token\trelation_id:token\ttail_id:token"
LINK_HEADER = "item_id:token\tentity_id:token"


@dataclass(frozen=True)
class KnownDataset:
    """Where a known dataset comes from: a zip of atomic files plus a KB4Rec zip to convert."""

    atomic_zip: str  # URL path under the base URL; gives NAME.inter/.item/.user
    kg_zip: str  # URL path of the KB4Rec raw files
    hop: int = 1  # add_knowledge.py's default
    caveat: str = ""  # logged as a warning after each build


# ml-100k numbers its movies 1..1682 on its own, while KB4Rec's link.kg uses MovieLens-20M movie ids
# (GoldenEye is 2 in ml-100k, 10 in ML-20M). add_knowledge.py joins them as they are, and so do we, so
# that the result matches the ml-100k.kg/.link RecBole and hopwise ship; the KG genres of those links
# follow the ML-20M movie with the same number, not the ml-100k one.
KNOWN_DATASETS: dict[str, KnownDataset] = {
    "ml-100k": KnownDataset(
        "ProcessedDatasets/MovieLens/ml-100k.zip", "KGDatasets/MovieLens-KG.zip",
        caveat="ml-100k items are linked to KB4Rec entities by raw id as RecBole/hopwise do, but ml-100k ids "
               "are not the MovieLens-20M ids KB4Rec uses, so most items are linked to another movie's entity"),
}


def download_url(base_url: str | None = None) -> str:
    """The base URL of the archives: ``base_url``, else ``KGGLM_DOWNLOAD_URL``, else RecBole's bucket."""
    return (base_url or os.environ.get("KGGLM_DOWNLOAD_URL") or DEFAULT_DOWNLOAD_URL).rstrip("/")


def resolve_dataset(
    name: str,
    data_path: str | Path | None = None,
    *,
    download: bool = True,
    show_progress: bool = True,
) -> Path:
    """The folder holding ``NAME.inter`` (and ``.kg``, ``.link``...), building a known dataset if needed."""
    if not valid_name(name):
        raise DatasetError(f"dataset name {name!r}: expected a plain name such as 'ml-100k'")
    folder = find_dataset(name, data_path)
    if name == "ml-100k-dbpedia":  # built from two other data sets (each found or downloaded)
        return _dbpedia_build(folder, data_path, download=download, show_progress=show_progress)
    if folder is not None:
        verify_checksums(folder)
        return folder
    roots = candidate_roots(data_path)
    searched = ", ".join(str(r / name) for r in roots)
    if name not in KNOWN_DATASETS and name != "ml1m":
        raise DatasetError(
            f"dataset '{name}': {name}.inter not found in {searched}; expected a folder DATA_PATH/{name}/ "
            f"with atomic files {name}.inter, {name}.kg and {name}.link (pass --data-path DATA_PATH or "
            f"set KGGLM_DATA)")
    if not download:
        raise DatasetError(f"dataset '{name}': not found in {searched} and downloading is off")
    if name == "ml1m":  # the paper's files, from its repository
        from kgglm.data.paper_ml1m import download_ml1m

        return download_ml1m(roots[0], show_progress=show_progress)
    return download_dataset(name, roots[0], show_progress=show_progress)


def _dbpedia_build(found: Path | None, data_path, *, download: bool, show_progress: bool) -> Path:
    """``found`` when it is a current build of ``ml-100k-dbpedia``, else a new build; a build of another
    kgglm version whose sources are out of reach is used, with a warning (better than none)."""
    from kgglm.data.dbpedia_link import NAME, build_ml100k_dbpedia, is_current_build

    if found is not None and is_current_build(found):
        verify_checksums(found)
        return found
    if found is not None:
        logger.warning("%s: %s was built by another kgglm version (no current %s.report.json): rebuilding",
                       NAME, found, NAME)
    try:
        return build_ml100k_dbpedia(data_path, download=download, show_progress=show_progress)
    except DatasetError as exc:
        if found is None:
            raise
        logger.warning("%s: cannot rebuild (%s); using the older build in %s", NAME, exc, found)
        verify_checksums(found)
        return found


def download_dataset(
    name: str,
    root: str | Path,
    *,
    base_url: str | None = None,
    hashes: Mapping[str, str] | None = None,
    show_progress: bool = True,
) -> Path:
    """Download a known dataset's zips, convert the KG, and install the atomic files in ``ROOT/NAME/``.

    Args:
        name: a key of :data:`KNOWN_DATASETS`.
        root: the data root; the dataset lands in ``ROOT/NAME/``.
        base_url: overrides ``KGGLM_DOWNLOAD_URL`` and the default bucket.
        hashes: expected SHA-256 per zip file name (e.g. ``{"ml-100k.zip": "ab12..."}``); when absent
            the hash recorded at the first download is expected, if any.
        show_progress: show pooch's download progress bar.
    """
    spec = KNOWN_DATASETS[name]
    folder, created = prepare_folder(Path(root), name)
    try:
        sums = load_checksums(folder)
        base = download_url(base_url)
        with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
            stage = Path(tmp) / "out"
            stage.mkdir()
            zips, urls = {}, [f"{base}/{spec.atomic_zip}", f"{base}/{spec.kg_zip}"]
            offline = (f"could not download {name} from {{url}} ({{exc}}). Offline? Either fetch {' and '.join(urls)} "
                       f"by hand and put both zips, unopened, in {folder}/ (they are converted from there on the "
                       f"next run), or put ready atomic files {name}.inter, {name}.kg and {name}.link (e.g. the "
                       f"ml-100k folder that RecBole/hopwise ship in dataset_example/) in DIR/{name}/ and pass "
                       f"--data-path DIR or set KGGLM_DATA=DIR")
            mismatch = (f"Expected the SHA-256 recorded at the first download in {folder / CHECKSUM_FILE} (delete "
                        "that file to accept a new upstream file)")
            for rel_url, url in zip((spec.atomic_zip, spec.kg_zip), urls):
                want = (hashes or {}).get(Path(rel_url).name) or sums["zips"].get(rel_url)
                zips[rel_url] = obtain(url, want, folder / Path(url).name, Path(tmp), show_progress=show_progress,
                                       offline=offline, mismatch=mismatch)
                sums["zips"][rel_url] = sha256(zips[rel_url])
            _extract_atomic(zips[spec.atomic_zip], name, stage, f"{base}/{spec.atomic_zip}")
            n_links, n_triples = convert_kb4rec(zips[spec.kg_zip], stage / f"{name}.inter", stage, name, hop=spec.hop)
            logger.info("%s: linked %d items, kept %d KG triples (hop %d)", name, n_links, n_triples, spec.hop)
            if spec.caveat:
                logger.warning("%s: %s", name, spec.caveat)
            install(name, stage, folder, sums["zips"])
    except BaseException:
        remove_empty(created)
        raise
    logger.info("built %s in %s", name, folder)
    return folder


def convert_kb4rec(kg_zip: str | Path, inter_path: str | Path, out_dir: str | Path, name: str, *,
                   hop: int = 1, item_field: str = "item_id") -> tuple[int, int]:
    """Write ``NAME.link`` and ``NAME.kg`` from a KB4Rec zip; return (links, triples).

    Same selection as RecBole's ``add_knowledge.py``: items of the .inter file that ``link.kg`` maps
    (``item<TAB>entity``; a repeated item keeps its last entity) seed the graph; hop ``k`` keeps the
    ``hop{k}.kg`` triples whose relation is listed in ``relation.kg`` and whose head or tail is a seed,
    and their new entities seed hop ``k+1``; finally ``extra.kg`` triples of a listed relation that
    touch an entity seeded so far are added. Unlike the original, exact duplicate triples are dropped.
    Item ids are matched as they are: KB4Rec's ``link.kg`` uses MovieLens-20M movie ids.
    Vectorised with pandas; triple files are streamed in chunks so a large hop file fits in memory.
    """
    kg_zip, out_dir = Path(kg_zip), Path(out_dir)
    if not 1 <= hop <= 3:
        raise DatasetError(f"hop {hop}: expected 1, 2 or 3 (KB4Rec ships hop1.kg..hop3.kg)")
    items = pd.unique(read_atomic(inter_path, required=(item_field,), usecols=(item_field,)).column(item_field))
    try:
        with zipfile.ZipFile(kg_zip) as zf:
            members = _kb4rec_members(zf, kg_zip, hop)
            link = _read_all(zf, members["link.kg"], ["item", "entity"])
            link = link.drop_duplicates("item", keep="last")
            link = link[link["item"].isin(items)]  # link.kg's order
            if not len(link):
                raise DatasetError(f"{kg_zip}: none of the {len(items)} items of {inter_path} is in link.kg; "
                                   "expected KB4Rec item ids (MovieLens movie ids)")
            relations = _read_all(zf, members["relation.kg"], ["relation"])["relation"]
            relations = relations[relations != ""].unique()
            seeds, history, kept = link["entity"].unique(), np.array([], dtype=object), []
            for k in range(1, hop + 1):
                history = pd.unique(np.concatenate([history, seeds]))
                triples = _select(zf, members[f"hop{k}.kg"], relations, seeds)
                kept.append(triples)
                # hash-based set difference: np.setdiff1d sorts object arrays, far slower
                touched = pd.unique(triples[["head", "tail"]].to_numpy().ravel())
                seeds = touched[~pd.Series(touched).isin(history).to_numpy()]
            kept.append(_select(zf, members["extra.kg"], relations, history))
    except zipfile.BadZipFile as exc:
        raise DatasetError(f"{kg_zip}: not a valid zip ({exc}); expected KB4Rec's MovieLens-KG.zip") from None
    kg = pd.concat(kept, ignore_index=True).drop_duplicates()
    write_table(out_dir / f"{name}.link", LINK_HEADER, link[["item", "entity"]])
    write_table(out_dir / f"{name}.kg", KG_HEADER, kg)
    return len(link), len(kg)


# --------------------------------------------------------------------------------------- internals
def _extract_atomic(zip_path: Path, name: str, stage: Path, url: str) -> None:
    """Copy ``NAME.inter/.item/.user`` found at the zip root or one folder down into ``stage``."""
    wanted = {f"{name}{s}" for s in (".inter", ".item", ".user")}
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = _members_by_name(zf, wanted)
            for fname, info in members.items():
                with zf.open(info) as src, open(stage / fname, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except zipfile.BadZipFile as exc:
        raise DatasetError(f"{url}: not a valid zip ({exc}); expected a zip archive (a corrupted or "
                           "truncated download?)") from None
    if f"{name}.inter" not in members:
        raise DatasetError(f"{url}: no {name}.inter at the zip root or one folder down; expected RecBole's "
                           "atomic files")


def _members_by_name(zf: zipfile.ZipFile, wanted: set[str]) -> dict[str, zipfile.ZipInfo]:
    """Members named in ``wanted`` at the zip root or one folder down, the shallowest copy winning."""
    found: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        parts = Path(info.filename).parts
        if info.is_dir() or len(parts) > 2 or parts[0] == "__MACOSX" or parts[-1] not in wanted:
            continue
        if parts[-1] not in found or len(parts) < len(Path(found[parts[-1]].filename).parts):
            found[parts[-1]] = info
    return found


def _kb4rec_members(zf: zipfile.ZipFile, path: Path, hop: int) -> dict[str, zipfile.ZipInfo]:
    needed = ["link.kg", "relation.kg", *[f"hop{k}.kg" for k in range(1, hop + 1)], "extra.kg"]
    members = _members_by_name(zf, set(needed))
    missing = [n for n in needed if n not in members]
    if missing:
        raise DatasetError(f"{path}: {', '.join(missing)} missing at the zip root or one folder down; expected "
                           "KB4Rec's raw files link.kg, relation.kg, hop1.kg..hop3.kg and extra.kg")
    return members


def _read_raw(zf: zipfile.ZipFile, info: zipfile.ZipInfo, names: list[str],
              chunksize: int = 1 << 20) -> Iterator[pd.DataFrame]:
    """Chunks of a headerless tab-separated member as stripped strings; a bad row is a DatasetError."""
    where = f"{zf.filename}:{info.filename}"
    with zf.open(info) as raw:
        try:
            # no ``names``: given names, pandas would silently turn a surplus first column into the index
            reader = pd.read_csv(raw, sep="\t", header=None, dtype=str, engine="c",
                                 quoting=csv.QUOTE_NONE, keep_default_na=False, na_filter=False,
                                 skip_blank_lines=True, encoding="utf-8", chunksize=chunksize)
            for chunk in reader:
                if chunk.shape[1] != len(names):
                    raise DatasetError(f"{where}: {chunk.shape[1]} tab-separated values per line, expected "
                                       f"{len(names)} ({', '.join(names)})")
                chunk.columns = names
                # CRLF ends are the parser's business; a missing trailing field reads as NaN
                chunk = chunk.fillna("")
                short = (chunk[names[-1]] == "").to_numpy()
                if short.any():
                    raise DatasetError(f"{where}: data row {chunk.index[int(np.argmax(short))] + 1} has fewer than "
                                       f"{len(names)} tab-separated values; expected {', '.join(names)}")
                yield chunk
        except pd.errors.EmptyDataError:  # an empty member (e.g. no extra triples) has no rows
            return
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{where}: cannot parse ({exc}); expected {len(names)} tab-separated "
                               f"values per line ({', '.join(names)})") from None


def _concat(parts: list[pd.DataFrame], names: list[str]) -> pd.DataFrame:
    if not parts:  # an empty member
        return pd.DataFrame({n: pd.Series([], dtype=object) for n in names})
    return pd.concat(parts, ignore_index=True)


def _read_all(zf: zipfile.ZipFile, info: zipfile.ZipInfo, names: list[str]) -> pd.DataFrame:
    return _concat(list(_read_raw(zf, info, names)), names)


def _select(zf: zipfile.ZipFile, info: zipfile.ZipInfo, relations: np.ndarray, seeds: np.ndarray) -> pd.DataFrame:
    """Triples of ``info`` with a relation in ``relations`` and a head or tail in ``seeds``."""
    parts = []
    for chunk in _read_raw(zf, info, ["head", "relation", "tail"]):
        keep = chunk["relation"].isin(relations) & (chunk["head"].isin(seeds) | chunk["tail"].isin(seeds))
        parts.append(chunk[keep.to_numpy()])
    return _concat(parts, ["head", "relation", "tail"])


