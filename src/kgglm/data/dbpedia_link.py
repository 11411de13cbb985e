"""``ml-100k-dbpedia``: ml-100k's interactions with the paper's ML1M DBpedia graph, linked by title.

ml-100k's own KG files (RecBole/hopwise, and what :mod:`kgglm.data.download` rebuilds) link its movie
numbers to other movies' Freebase entities. This module builds a data set whose interactions, users
and items are ml-100k's, unchanged (``NAME.inter`` is a byte copy, so the seeded split and the CF
baselines are exactly ml-100k's), and whose knowledge is ML1M's DBpedia graph (``ml1m.kg``), joined
through ``ml1m.item`` titles and ``ml1m.link``.

**Matching** (:func:`match_titles`): a title is normalised (accents dropped, case folded, punctuation
removed, a trailing article moved back: "Postino, Il" and "Il Postino" both read "il postino"); each
title also gives its main part without parentheses and every parenthesised alternative title as
further keys. An ml-100k item takes the ML1M movie found at the first tier with
any candidate: the full title and the same year, then the full title and a year within one, then any
key (also the parts around ":" and " - ", for "Star Wars: Episode IV - A New Hope") and a year within
one. Several candidates at that tier is *ambiguous*, none is *missing*: both are reported, never
guessed. When items at different tiers find the same movie, the closer match takes it.

**Duplicates**: ml-100k lists some films twice under two ids (Chasing Amy is 246 and 268), and the
loader allows one item per entity, so the lower id is linked and the other is reported as
``duplicate`` (its interactions stay, it just has no knowledge).

The build (:func:`build_ml100k_dbpedia`) writes ``NAME.inter/.item/.user/.link/.kg`` the way a
download does (temporary files, SHA-256 recorded, ``NAME.inter`` moved in last) plus
``NAME.unmatched.tsv`` and ``NAME.report.json`` (items linked, share of interactions covered).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd

from kgglm import durable
from kgglm.data.atomic import read_atomic
from kgglm.data.download import resolve_dataset
from kgglm.data.fetch import install, prepare_folder, write_table
from kgglm.data.locate import cache_dir, find_dataset

logger = logging.getLogger(__name__)

NAME = "ml-100k-dbpedia"
SOURCES = ("ml-100k", "ml1m")
ARTICLES = ("the", "a", "an", "il", "la", "le", "les", "l", "el", "los", "las", "lo", "das", "der", "die",
            "den", "det", "de", "un", "une", "i", "o", "gli")
_TRAILING_ARTICLE = re.compile(r",\s*((?:" + "|".join(ARTICLES) + r")'?)\s*$", re.IGNORECASE)
_PARENS = re.compile(r"\(([^()]*)\)")
_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")


def normalise(title: str) -> str:
    """Lower-case ASCII words of ``title`` with a trailing article moved back to the front
    ("Postino, Il" and "Il Postino" both read "il postino"; "Boys, Les" is not "Boys, The")."""
    title = title.strip()
    moved = _TRAILING_ARTICLE.search(title)
    if moved:
        title = f"{moved.group(1)} {title[:moved.start()]}"
    text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode().lower()
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.replace("&", " and ")).split())


def title_keys(title: str) -> tuple[str, set[str]]:
    """The full title's key and every key of ``title`` (main part, parenthesised alternatives)."""
    full = normalise(title)
    main = _PARENS.sub(" ", title)
    keys = {full, normalise(main)}
    keys.update(normalise(alt) for alt in _PARENS.findall(title))
    # "Star Wars: Episode V - The Empire Strikes Back": the series name and the subtitle
    keys.update(normalise(part) for part in re.split(r":| - ", main) if len(normalise(part)) >= 4)
    return full, {k for k in keys if k}


def match_titles(items: pd.DataFrame, movies: pd.DataFrame) -> pd.DataFrame:
    """Match ``items`` (columns item, title, year) to ``movies`` (movie, title, year).

    Returns one row per item with columns item, title, year, movie ('' when unmatched) and status:
    ``linked``, ``missing``, ``ambiguous`` (candidates listed in ``note``) or ``duplicate`` (another,
    lower item id took the same movie; named in ``note``).
    """
    cand = movies.assign(**dict(zip(("full", "keys"), zip(*movies["title"].map(title_keys), strict=True))))
    by_key = cand.explode("keys")[["movie", "full", "keys", "year"]]
    left = items.assign(**dict(zip(("full", "keys"), zip(*items["title"].map(title_keys), strict=True))))
    pairs = left.explode("keys").merge(by_key, on="keys", suffixes=("", "_m"))
    pairs = pairs[(pairs["year"] - pairs["year_m"]).abs() <= 1]
    pairs = pairs.assign(tier=np.where(pairs["full"] == pairs["full_m"],
                                       np.where(pairs["year"] == pairs["year_m"], 0, 1), 2))
    pairs = pairs.drop_duplicates(["item", "movie"]).sort_values(["item", "tier", "movie"])
    best = pairs[pairs["tier"] == pairs.groupby("item")["tier"].transform("min")]
    found = best.groupby("item")["movie"].agg(lambda m: list(m))
    tier = best.groupby("item")["tier"].min()
    out = items[["item", "title", "year"]].copy()
    lists = out["item"].map(found)
    count = lists.map(lambda m: len(m) if isinstance(m, list) else 0)
    out["movie"] = np.where(count == 1, lists.map(lambda m: m[0] if isinstance(m, list) else ""), "")
    out["status"] = np.select([count == 1, count > 1], ["linked", "ambiguous"], "missing")
    out["note"] = np.where(count > 1, lists.map(lambda m: "candidates " + " ".join(map(str, m))
                                                 if isinstance(m, list) else ""), "")
    out["tier"] = out["item"].map(tier)
    linked = out[out["status"] == "linked"].sort_values("item", key=_numeric_order).sort_values("tier", kind="stable")
    closer = linked["tier"] > linked.groupby("movie")["tier"].transform("min")  # another item matches it better
    out.loc[closer[closer].index, ["movie", "status"]] = ["", "missing"]
    out.loc[closer[closer].index, "note"] = "its candidate matches another item more closely"
    linked = linked[~closer]
    dup = linked.duplicated("movie", keep="first")
    first = linked[~dup].set_index("movie")["item"]
    out.loc[dup[dup].index, "status"] = "duplicate"
    out.loc[dup[dup].index, "note"] = "same film as item " + linked.loc[dup[dup].index, "movie"].map(first).astype(str)
    out.loc[dup[dup].index, "movie"] = ""
    return out.drop(columns="tier")


def build_ml100k_dbpedia(data_path: str | Path | None = None, root: str | Path | None = None, *,
                         download: bool = True, show_progress: bool = True) -> Path:
    """Build ``ml-100k-dbpedia`` from ``ml-100k`` and ``ml1m`` found as :func:`find_dataset` does.

    ``root``: where to write (default: ``data_path``, else ``$KGGLM_DATA``, else the per-user cache);
    a read-only root falls back to the per-user cache, with a log line saying where.
    """
    sources = {}
    for name in SOURCES:
        folder = find_dataset(name, data_path)
        if folder is None:
            folder = resolve_dataset(name, data_path, download=download, show_progress=show_progress)
        sources[name] = folder
    roots = [Path(p) for p in (root, data_path, os.environ.get("KGGLM_DATA")) if p] + [cache_dir()]
    target, _ = prepare_folder(roots[0], NAME)  # a read-only root: the per-user cache (logged)
    frames, report = link_frames(sources["ml-100k"], sources["ml1m"])
    with tempfile.TemporaryDirectory(dir=target, prefix=".build-") as tmp:
        stage = Path(tmp)
        for suffix in (".inter", ".item", ".user"):
            src = sources["ml-100k"] / f"ml-100k{suffix}"
            if src.is_file():
                shutil.copyfile(src, stage / f"{NAME}{suffix}")
        write_table(stage / f"{NAME}.link", "item_id:token\tentity_id:token", frames["link"])
        write_table(stage / f"{NAME}.kg", "head_id:token\trelation_id:token\ttail_id:token", frames["kg"])
        write_table(stage / f"{NAME}.unmatched.tsv", "item_id\ttitle\tyear\tstatus\tnote", frames["unmatched"])
        durable.write_json(stage / f"{NAME}.report.json", report, indent=2)
        install(NAME, stage, target, {})
    logger.info("built %s in %s: %d of %d items linked, %.1f%% of interactions covered; unmatched in %s",
                NAME, target, report["items_linked"], report["items"], 100 * report["interactions_covered"],
                target / f"{NAME}.unmatched.tsv")
    return target


def link_frames(ml100k: Path, ml1m: Path) -> tuple[dict[str, pd.DataFrame], dict]:
    """The link, KG and unmatched tables of ``ml-100k-dbpedia`` and its build report."""
    item = read_atomic(ml100k / "ml-100k.item", required=("item_id", "movie_title", "release_year"))
    items = pd.DataFrame({"item": item.column("item_id"), "title": item.column("movie_title"),
                          "year": pd.to_numeric(pd.Series(item.column("release_year")), errors="coerce")})
    movie = read_atomic(ml1m / "ml1m.item", required=("item_id", "movie_title"))
    titles = pd.Series(movie.column("movie_title"))
    years = titles.str.extract(_YEAR, expand=False)
    movies = pd.DataFrame({"movie": movie.column("item_id"), "title": titles.str.replace(_YEAR, "", regex=True),
                           "year": pd.to_numeric(years, errors="coerce")})
    link1m = read_atomic(ml1m / "ml1m.link", required=("item_id", "entity_id"))
    entity = pd.Series(link1m.column("entity_id"), index=link1m.column("item_id"))
    movies = movies[movies["movie"].isin(entity.index)]
    matched = match_titles(items, movies)
    linked = matched[matched["status"] == "linked"]
    link = pd.DataFrame({"item": linked["item"], "entity": linked["movie"].map(entity)})
    kg = read_atomic(ml1m / "ml1m.kg", required=("head_id", "relation_id", "tail_id"))
    kg = pd.DataFrame({"head": kg.column("head_id"), "relation": kg.column("relation_id"),
                       "tail": kg.column("tail_id")})
    ents = set(link["entity"])
    kg = kg[kg["head"].isin(ents) | kg["tail"].isin(ents)].drop_duplicates()
    inter = read_atomic(ml100k / "ml-100k.inter", required=("item_id",), usecols=("item_id",))
    covered = float(np.isin(inter.column("item_id"), link["item"].to_numpy()).mean())
    unmatched = matched[matched["status"] != "linked"][["item", "title", "year", "status", "note"]]
    unmatched = unmatched.assign(year=unmatched["year"].astype("Int64").astype(str).replace("<NA>", ""))
    report = {"dataset": NAME, "items": len(items), "items_linked": len(link),
              "interactions_covered": round(covered, 4), "kg_triples": len(kg),
              **{f"items_{s}": int((matched["status"] == s).sum()) for s in ("missing", "ambiguous", "duplicate")},
              "duplicate_handling": "the lower item id is linked, the other reported as 'duplicate'",
              "sources": {"ml-100k": str(ml100k), "ml1m": str(ml1m)}}
    return {"link": link, "kg": kg, "unmatched": unmatched}, report


def _numeric_order(values: pd.Series) -> pd.Series:
    """Sort key: item ids as numbers when they are numbers, else as text."""
    num = pd.to_numeric(values, errors="coerce")
    return num if num.notna().all() else values
