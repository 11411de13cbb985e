"""Check the ML1M download and conversion against a reference copy of the atomic files, row for row.

The paper's files (``data/ml1m/preprocessed/`` of GitHub ``mirkomarras/kgglm`` at the commit
:mod:`kgglm.data.paper_ml1m` pins) are served from 127.0.0.1 and go through the real download path
(:func:`~kgglm.data.paper_ml1m.download_ml1m`: pinned SHA-256, conversion, install); every produced
file is then compared with the reference folder: byte for byte, and, when that fails, as sorted rows
(the row order of an atomic file is defined by its source, so both are reported).

Usage:
    python benchmarks/check_ml1m_conversion.py --git /path/to/kgglm.git [--expected ../shared/data/ml1m]
    python benchmarks/check_ml1m_conversion.py --source DIR   # a folder with the preprocessed/ layout
    python benchmarks/check_ml1m_conversion.py --online       # download from raw.githubusercontent.com
Exit status 0 when every file matches.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kgglm.data.paper_ml1m import COMMIT, NAME, SOURCES, download_ml1m

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from download_helpers import serve  # noqa: E402 - the tests' 127.0.0.1 server


def compare(got: Path, want: Path) -> tuple[bool, str]:
    """(matches, one line saying how) for a produced file and its reference."""
    if not want.is_file():
        return False, "no reference file"
    a, b = got.read_bytes(), want.read_bytes()
    rows_a, rows_b = a.decode("utf-8").splitlines(), b.decode("utf-8").splitlines()
    if a == b:
        return True, f"{len(rows_a) - 1:>9,} rows  identical bytes (same order)"
    if rows_a[:1] != rows_b[:1]:
        return False, f"headers differ: {rows_a[:1]} vs {rows_b[:1]}"
    if sorted(rows_a[1:]) == sorted(rows_b[1:]):
        return True, f"{len(rows_a) - 1:>9,} rows  same rows in another order (compared sorted)"
    first = next((i for i, (x, y) in enumerate(zip(rows_a, rows_b)) if x != y), min(len(rows_a), len(rows_b)))
    return False, (f"{len(rows_a) - 1:,} vs {len(rows_b) - 1:,} rows; first difference at line {first + 1}: "
                   f"{rows_a[first] if first < len(rows_a) else '<end>'!r} vs "
                   f"{rows_b[first] if first < len(rows_b) else '<end>'!r}")


def stage_sources(args: argparse.Namespace, www: Path) -> None:
    """Put the upstream files in ``www/preprocessed/`` from a git directory or a folder."""
    for rel in SOURCES:
        dst = www / "preprocessed" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if args.git:
            blob = subprocess.run(["git", "--git-dir", args.git, "show", f"{COMMIT}:data/ml1m/preprocessed/{rel}"],
                                  check=True, capture_output=True).stdout
            dst.write_bytes(blob)
        else:
            shutil.copyfile(Path(args.source) / rel, dst)


def main() -> int:
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / NAME
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--git", help="a git directory of mirkomarras/kgglm holding the pinned commit")
    where.add_argument("--source", help="a folder with the repository's data/ml1m/preprocessed/ files")
    where.add_argument("--online", action="store_true", help="download from the pinned upstream URL")
    parser.add_argument("--expected", default=str(default), help="the reference atomic files (default: %(default)s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="check-ml1m-") as tmp:
        t0 = time.perf_counter()
        if args.online:
            folder = download_ml1m(Path(tmp) / "root", show_progress=False)
        else:
            stage_sources(args, Path(tmp) / "www")
            with serve(Path(tmp) / "www") as (url, requests):
                folder = download_ml1m(Path(tmp) / "root", base_url=f"{url}/preprocessed", show_progress=False)
            print(f"served {len(requests)} upstream files from 127.0.0.1; SHA-256 checked against paper_ml1m.SOURCES")
        print(f"download + conversion: {time.perf_counter() - t0:.1f}s; comparing with {args.expected}")
        produced = sorted(p.name for p in folder.iterdir() if p.name.startswith(f"{NAME}."))
        reference = sorted(p.name for p in Path(args.expected).iterdir() if p.name.startswith(f"{NAME}."))
        ok = produced == reference
        if not ok:
            print(f"file sets differ: produced {produced}, reference {reference}")
        for name in produced:
            same, how = compare(folder / name, Path(args.expected) / name)
            ok &= same
            print(f"  {'OK ' if same else 'BAD'} {name:18s} {how}")
    print("all files match" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
