"""``ml1m``: the KGGLM paper's preprocessed ML1M, downloaded from its public repository and converted.

The paper's code (GitHub ``mirkomarras/kgglm``, folder ``data/ml1m/preprocessed/``) ships ML1M with a
DBpedia graph as numbered tables. :func:`download_ml1m` fetches the files of :data:`SOURCES` from
:data:`DEFAULT_URL` (``raw.githubusercontent.com`` at a pinned commit; ``KGGLM_ML1M_URL`` overrides
it), checks each against its pinned SHA-256, and :func:`convert_paper_ml1m` turns them into atomic files:

* ``ml1m.kg`` / ``.train.kg`` / ``.test.kg`` from ``kg_final.txt`` / ``kg_train.txt`` / ``kg_test.txt``:
  entity numbers become DBpedia resource names (``e_map.txt``'s ``entity`` URI without
  ``http://dbpedia.org/resource/``; its ``name`` column is the part after the last ``/`` and is not
  unique: ``Face/Off`` reads ``Off``), relation numbers ``r_map.txt`` names. Exact duplicate triples
  are dropped, the first one kept, each file on its own (so some test triples are also in train).
* ``ml1m.link`` from ``i2kg_map.txt`` (movie id, entity of its ``eid``); ``ml1m.item`` from
  ``products.txt`` (id, title, genre); ``ml1m.user`` from ``users.txt`` (id, gender, age; spaces in
  a token become ``_``: ``Under 18`` reads ``Under_18``).
* ``ml1m.train.inter``: the repository has no original-id train file, so ``mapping/train.txt.gz``
  (numbered users and movies) is mapped back through ``mapping/user.txt`` and ``mapping/product.txt``
  (``new_id -> rating_id``). The inversion is checked: ``mapping/valid.txt.gz`` and
  ``mapping/test.txt.gz`` mapped the same way must equal ``valid.txt`` and ``test.txt``, row for row.
  ``ml1m.valid.inter`` / ``.test.inter`` are ``valid.txt`` / ``test.txt``; ``ml1m.inter`` is the three
  splits one after the other, in that order.

The result is written the way every download is (:func:`kgglm.data.download.install`: staged in a
temporary folder, SHA-256 of every file recorded, ``ml1m.inter`` moved in last); a read-only data
root falls back to the per-user cache. Files put by hand in ``ROOT/ml1m/preprocessed/`` (the upstream
layout) are used instead of downloading them, after the same checksum test (the offline route).
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from kgglm.data.atomic import DatasetError
from kgglm.data.download import KG_HEADER, LINK_HEADER
from kgglm.data.fetch import install, obtain, prepare_folder, remove_empty, write_table

__all__ = ["DEFAULT_URL", "NAME", "SOURCES", "URL_ENV", "convert_paper_ml1m", "download_ml1m", "ml1m_url"]

logger = logging.getLogger(__name__)

NAME = "ml1m"
COMMIT = "c38fa65de3df855157fa61a710b36e8b1e43768c"  # mirkomarras/kgglm main, 2024-11-25
DEFAULT_URL = f"https://raw.githubusercontent.com/mirkomarras/kgglm/{COMMIT}/data/ml1m/preprocessed"
URL_ENV = "KGGLM_ML1M_URL"
DBPEDIA = "http://dbpedia.org/resource/"
INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
ITEM_HEADER = "item_id:token\tmovie_title:token_seq\tgenre:token"
USER_HEADER = "user_id:token\tgender:token\tage:token"
INTER_COLUMNS = ["user", "item", "rating", "timestamp"]  # the split files have no header
# the upstream files used, with their SHA-256 at COMMIT
SOURCES: dict[str, str] = {
    "e_map.txt": "0eb575a451f23f3654b7ff1a3f85a8c4c976cb2316e9137a87544b7739b3dad1",
    "r_map.txt": "268a23f5fd9ee8e116541e06d9962ff658c63a24de9022afd456def22075fcdb",
    "i2kg_map.txt": "9a31c166c144582f48a1b32f67f69b752bbd1fbb75740955440bd507a39babc9",
    "kg_final.txt": "c370dd9e84fb5c8b85ba5877bcdacc524442cb60a6f1ea10f0e9e86748c3a098",
    "kg_train.txt": "2e627a28809a872f6e5acc66e80bf64e5dcf5fda7aedf225be2d917455587d57",
    "kg_test.txt": "12398b07b00469b1b3aa596c618fe3fbeea6e111d3edfadff776d8b6d7797bf0",
    "products.txt": "2a72ab2e042b6dd03595f6e7a473c040385f1d7bed3acd345f1ec7d943c5bf8f",
    "users.txt": "b246547e4579b29b1c3421c82bff7e77abd3541979b37f2fdc68f87eedb34182",
    "valid.txt": "a168ab3f908558c6351fbc11ba54bcdb11c35b126558f476d7c44b28ecec9bd9",
    "test.txt": "af644fcdd4ddfdd5e7310c7bb8ee2ef078b5b281cf0c7e26305f8ff42db9142e",
    "mapping/user.txt": "303193e359d4584780dcf779f422c746ea9b0c7a7534202ce0524d82a8a30552",
    "mapping/product.txt": "04c733eb50cf049ba3c10dc164f899b742a79eaa4f5dbe40f351ff33b4ce8587",
    "mapping/train.txt.gz": "63ed42ae02618250d683ef9ba260905dc37b20076d50d1ba723bae5d7c9916af",
    "mapping/valid.txt.gz": "2cc5654300dc40501055c3d0aabd18d6127a1cb1f534a61d13e6fcef4bd30e9c",
    "mapping/test.txt.gz": "bf6acfa63f8e0a6b26763f5eb0e7d632266f9187d99ea1961dc170884de6d324",
}


def ml1m_url(base_url: str | None = None) -> str:
    """The folder URL of the paper's files: ``base_url``, else ``KGGLM_ML1M_URL``, else :data:`DEFAULT_URL`."""
    return (base_url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")


def download_ml1m(root: str | Path, *, base_url: str | None = None, hashes: Mapping[str, str] | None = None,
                  show_progress: bool = True) -> Path:
    """Download the paper's ML1M files, convert them and install the atomic files in ``ROOT/ml1m/``.

    Args:
        root: the data root (the per-user cache when it is read-only).
        base_url: the folder holding the upstream files (overrides ``KGGLM_ML1M_URL``).
        hashes: expected SHA-256 per file of :data:`SOURCES` (default: :data:`SOURCES`' pinned ones).
        show_progress: show pooch's download progress bars.
    """
    want = dict(SOURCES if hashes is None else hashes)
    folder, created = prepare_folder(Path(root), NAME)
    base = ml1m_url(base_url)
    offline = (f"could not download {NAME} from {{url}} ({{exc}}). Offline? Either fetch the files "
               f"{', '.join(want)} of {base}/ by hand and put them, keeping the mapping/ folder, in "
               f"{folder / 'preprocessed'}/ (they are converted from there on the next run), or put ready "
               f"atomic files {NAME}.inter, {NAME}.kg and {NAME}.link in DIR/{NAME}/ and pass --data-path DIR "
               "or set KGGLM_DATA=DIR")
    mismatch = "Expected the file of the paper's repository at the commit kgglm pins (paper_ml1m.SOURCES)"
    try:
        with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
            src, stage = Path(tmp) / "preprocessed", Path(tmp) / "out"
            stage.mkdir()
            for rel, sha in want.items():
                (src / rel).parent.mkdir(parents=True, exist_ok=True)
                got = obtain(f"{base}/{rel}", sha, folder / "preprocessed" / rel, (src / rel).parent,
                             show_progress=show_progress, offline=offline, mismatch=mismatch)
                if got != src / rel:
                    shutil.copyfile(got, src / rel)
            counts = convert_paper_ml1m(src, stage)
            install(NAME, stage, folder, {f"preprocessed/{rel}": sha for rel, sha in want.items()})
    except BaseException:
        remove_empty(created)
        raise
    logger.info("built %s in %s from %s: %s", NAME, folder, base, ", ".join(f"{k} {v}" for k, v in counts.items()))
    return folder


def convert_paper_ml1m(src: str | Path, out: str | Path, name: str = NAME) -> dict[str, int]:
    """Write the atomic files of ``name`` in ``out`` from the paper's ``preprocessed/`` folder ``src``.

    Returns row counts per written file (and the duplicate triples dropped). See the module docstring
    for what each file is made of; every mapping is checked (an unknown number is a DatasetError naming
    the file, row and field).
    """
    src, out = Path(src), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entities = _entities(src)
    relations = _read(src / "r_map.txt", ["id", "name"]).set_index("id")["name"]
    _unique(relations.index.to_series(), src / "r_map.txt", "id")
    counts: dict[str, int] = {}
    for file, suffix in (("kg_final.txt", "kg"), ("kg_train.txt", "train.kg"), ("kg_test.txt", "test.kg")):
        raw = _read(src / file, ["entity_head", "relation", "entity_tail"])
        kept = raw[~raw.duplicated()]
        triples = pd.DataFrame({
            "head": _lookup(kept["entity_head"], entities, src / file, "entity_head", "e_map.txt eid"),
            "relation": _lookup(kept["relation"], relations, src / file, "relation", "r_map.txt id"),
            "tail": _lookup(kept["entity_tail"], entities, src / file, "entity_tail", "e_map.txt eid")})
        write_table(out / f"{name}.{suffix}", KG_HEADER, triples)
        counts[f"{name}.{suffix}"], counts[f"{file} duplicates dropped"] = len(triples), len(raw) - len(kept)
    i2kg = _read(src / "i2kg_map.txt", ["eid", "pid"])
    _unique(i2kg["pid"], src / "i2kg_map.txt", "pid")
    link = pd.DataFrame({"item": i2kg["pid"],
                         "entity": _lookup(i2kg["eid"], entities, src / "i2kg_map.txt", "eid", "e_map.txt eid")})
    products = _read(src / "products.txt", ["pid", "name", "genre"])
    users = _read(src / "users.txt", ["uid", "gender", "age"])
    tables = {"link": (LINK_HEADER, link), "item": (ITEM_HEADER, _tokens(products, ["pid", "genre"])),
              "user": (USER_HEADER, _tokens(users, ["uid", "gender", "age"]))}
    for suffix, (header, frame) in tables.items():
        write_table(out / f"{name}.{suffix}", header, frame)
        counts[f"{name}.{suffix}"] = len(frame)
    splits = _splits(src)
    for split, frame in splits.items():
        write_table(out / f"{name}.{split}.inter", INTER_HEADER, frame)
        counts[f"{name}.{split}.inter"] = len(frame)
    write_table(out / f"{name}.inter", INTER_HEADER, pd.concat(list(splits.values()), ignore_index=True))
    counts[f"{name}.inter"] = sum(counts[f"{name}.{s}.inter"] for s in splits)
    return counts


# --------------------------------------------------------------------------------------- internals
def _read(path: Path, columns: list[str], *, header: bool = True) -> pd.DataFrame:
    """The ``columns`` of a tab-separated file as strings (``.gz`` read as such); with ``header=False``
    the file has exactly these columns and no header line."""
    if not path.is_file():
        raise DatasetError(f"{path}: missing; expected the paper's preprocessed ML1M file")
    try:
        frame = pd.read_csv(path, sep="\t", header=0 if header else None, dtype=str, quoting=csv.QUOTE_NONE,
                            keep_default_na=False, na_filter=False, encoding="utf-8", compression="infer")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot parse ({type(exc).__name__}: {exc}); expected tab-separated "
                           f"columns {', '.join(columns)}") from None
    if not header:
        if frame.shape[1] != len(columns):
            raise DatasetError(f"{path}: {frame.shape[1]} tab-separated values per line, expected {len(columns)} "
                               f"({', '.join(columns)})")
        frame.columns = columns
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DatasetError(f"{path}: header lacks {', '.join(missing)}; expected columns {', '.join(columns)} "
                           f"(found {', '.join(map(str, frame.columns))})")
    return frame[columns].reset_index(drop=True)


def _where(path: Path, position: int, header: bool = True) -> str:
    """``path:line`` of the data row at ``position`` (0-based)."""
    return f"{path}:{position + (2 if header else 1)}"


def _lookup(values: pd.Series, table: pd.Series, path: Path, field: str, what: str, header: bool = True) -> pd.Series:
    """``values`` mapped through ``table``; a value not in it is a DatasetError naming the row."""
    mapped = values.map(table)
    bad = mapped.isna().to_numpy()
    if bad.any():
        row = int(bad.argmax())
        raise DatasetError(f"{_where(path, row, header)}: {field} {values.iloc[row]!r} is not a known {what} "
                           f"({int(bad.sum())} rows like it); expected the paper's consistent files")
    return mapped.reset_index(drop=True)


def _unique(values: pd.Series, path: Path, field: str) -> None:
    dup = values.duplicated().to_numpy()
    if dup.any():
        row = int(dup.argmax())
        raise DatasetError(f"{_where(path, row)}: {field} {values.iloc[row]!r} is listed twice; expected one row each")


def _entities(src: Path) -> pd.Series:
    """eid -> DBpedia resource name (the ``entity`` URI without its prefix)."""
    path = src / "e_map.txt"
    e_map = _read(path, ["eid", "entity"])
    _unique(e_map["eid"], path, "eid")
    bad = ~e_map["entity"].str.startswith(DBPEDIA).to_numpy()
    if bad.any():
        row = int(bad.argmax())
        raise DatasetError(f"{_where(path, row)}: entity {e_map['entity'].iloc[row]!r}; expected a URI "
                           f"starting with {DBPEDIA}")
    names = e_map["entity"].str.slice(len(DBPEDIA))
    spaced = names.str.contains(r"\s|^$", regex=True).to_numpy()
    if spaced.any():
        row = int(spaced.argmax())
        raise DatasetError(f"{_where(path, row)}: entity {e_map['entity'].iloc[row]!r}; expected a resource name "
                           "without white space")
    _unique(names, path, "entity")
    return pd.Series(names.to_numpy(), index=e_map["eid"].to_numpy())


def _tokens(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``frame`` with white space inside the values of ``columns`` (atomic ``token`` fields) as ``_``."""
    return frame.assign(**{c: frame[c].str.strip().str.replace(r"\s+", "_", regex=True) for c in columns})


def _splits(src: Path) -> dict[str, pd.DataFrame]:
    """train, valid and test with the original ids; the mapped-back valid and test must equal the files."""
    users = _read(src / "mapping" / "user.txt", ["new_id", "rating_id"])
    products = _read(src / "mapping" / "product.txt", ["new_id", "rating_id"])
    for table, file in ((users, "user.txt"), (products, "product.txt")):
        _unique(table["new_id"], src / "mapping" / file, "new_id")
    user_of, item_of = (t.set_index("new_id")["rating_id"] for t in (users, products))
    splits = {}
    for split in ("train", "valid", "test"):
        path = src / "mapping" / f"{split}.txt.gz"
        numbered = _read(path, INTER_COLUMNS, header=False)
        splits[split] = numbered.assign(
            user=_lookup(numbered["user"], user_of, path, "user", "mapping/user.txt new_id", header=False),
            item=_lookup(numbered["item"], item_of, path, "item", "mapping/product.txt new_id", header=False))
        if split == "train":
            continue
        given = _read(src / f"{split}.txt", INTER_COLUMNS, header=False)
        differ = (given.to_numpy() != splits[split].to_numpy()).any(axis=1) if len(given) == len(numbered) else None
        if differ is None or differ.any():
            at = "its length" if differ is None else f"data row {int(differ.argmax()) + 1}"
            raise DatasetError(f"{path} mapped back through mapping/user.txt and mapping/product.txt differs from "
                               f"{src / f'{split}.txt'} at {at}; expected the same interactions (the mapping "
                               "that rebuilds the train split would be wrong)")
        splits[split] = given
    return splits
