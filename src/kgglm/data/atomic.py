"""Reader for RecBole/hopwise atomic files (``NAME.inter``, ``.kg``, ``.link``, ``.item``, ``.user``).

An atomic file is tab-separated text whose first line names each column as ``field:type`` with
type ``token``, ``token_seq``, ``float`` or ``float_seq``. CRLF line ends, a UTF-8 BOM and blank
lines (trailing or not) are tolerated.

Speed and clear errors pull in different directions, so the reader does both in two passes:
a vectorised NumPy scan of the raw bytes counts the tabs on every line (finding a row with the
wrong number of columns and its true line number costs a few milliseconds even for a million
rows), then pandas' C parser reads the columns as strings. Every error is a :class:`DatasetError`
whose message names the file, the line, the field and what was expected.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")
_BOM = b"\xef\xbb\xbf"


class DatasetError(ValueError):
    """Bad or missing dataset input; the message says where (file, line, field) and what was expected."""


@dataclass
class AtomicTable:
    """The columns of one atomic file, as strings (token, token_seq) or float64 (float).

    ``float_seq`` columns hold tuples of floats. ``lines[i]`` is the 1-based line number of row ``i``
    in the file, so later checks (duplicates, conflicting links) can point at the right line.
    """

    path: Path
    types: dict[str, str]  # field name -> type, in header order
    frame: pd.DataFrame  # one column per selected field, named without the type
    lines: np.ndarray  # int64, (n_rows,)

    def __len__(self) -> int:
        return len(self.frame)

    def __contains__(self, name: str) -> bool:
        return name in self.frame.columns

    def column(self, name: str) -> np.ndarray:
        """Values of field ``name`` as a NumPy array (object for tokens, float64 for floats)."""
        return self.frame[name].to_numpy()

    def where(self, row: int, name: str | None = None) -> str:
        """'FILE line N[, field F]' for error messages."""
        text = f"{self.path} line {int(self.lines[row])}"
        return text + (f", field '{name}'" if name else "")


def read_header(path: Path) -> dict[str, str]:
    """Field name -> type of the header of an atomic file (only the first line is read)."""
    path = Path(path)
    with open(path, "rb") as f:
        first = f.readline()
    return _parse_header(path, first)


def read_atomic(
    path: str | Path,
    required: tuple[str, ...] | list[str] = (),
    usecols: tuple[str, ...] | list[str] | None = None,
    *,
    allow_empty: bool = False,
) -> AtomicTable:
    """Read an atomic file; check its header, its column counts and its float values.

    Every column declared ``float`` or ``float_seq`` is checked, also when ``usecols`` leaves it out.

    Args:
        path: the file.
        required: fields that must be in the header (error otherwise).
        usecols: fields to return (default all); fields not in the header are skipped silently,
            so optional columns (e.g. ``timestamp``) can be asked for.
        allow_empty: when False, a file without data rows is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found (expected a tab-separated atomic file with a "
                           f"'field:type' header)")
    data = path.read_bytes()
    data = data.removeprefix(_BOM)
    end = data.find(b"\n")
    types = _parse_header(path, data if end < 0 else data[:end + 1])
    names = list(types)
    missing = [f for f in required if f not in types]
    if missing:
        found = ", ".join(f"{n}:{t}" for n, t in types.items())
        raise DatasetError(f"{path} line 1: header lacks required field '{missing[0]}' "
                           f"(expected a column '{missing[0]}:<type>'; found {found})")
    lines = _check_columns(path, data, len(names))
    selected = names if usecols is None else [n for n in names if n in set(usecols)]
    # Declared float columns are checked even when the caller does not use them: a file whose header
    # promises numbers but holds garbage is broken, and saying so beats loading it silently.
    parsed = [n for n in names if n in selected or types[n] in ("float", "float_seq")]
    if not len(lines) and not allow_empty:
        raise DatasetError(f"{path} line 2: no data rows (expected at least one row after the header)")

    body = data[end + 1:] if end >= 0 else b""
    if len(lines):
        try:
            frame = pd.read_csv(
                io.BytesIO(body), sep="\t", header=None, names=names, usecols=parsed, dtype=str,
                engine="c", quoting=csv.QUOTE_NONE, keep_default_na=False, na_filter=False,
                skip_blank_lines=True, encoding="utf-8",
            )
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{path} line {_first_undecodable_line(data)}: not UTF-8 text ({exc.reason}); "
                               "expected UTF-8 encoded tab-separated text") from None
        except pd.errors.ParserError as exc:  # the byte scan should have caught it; keep it readable
            raise DatasetError(f"{path}: cannot parse ({exc}); expected tab-separated text") from None
        if len(frame) != len(lines):  # defensive: the scan and pandas disagree on what a row is
            raise DatasetError(f"{path}: read {len(frame)} rows but found {len(lines)} non-blank lines; "
                               "expected one row per line")
        frame = frame[parsed]  # pandas keeps file order; make the column order ours
    else:
        frame = pd.DataFrame({n: pd.Series([], dtype=object) for n in parsed})
    frame.columns = parsed
    table = AtomicTable(path, types, frame, lines)
    for name in parsed:
        if types[name] == "float":
            frame[name] = _parse_float(table, name)
        elif types[name] == "float_seq":
            frame[name] = _parse_float_seq(table, name)
    if len(parsed) != len(selected):  # drop the columns that were only parsed to be checked
        table.frame = frame[selected]
    return table


# --------------------------------------------------------------------------------------- internals
def _parse_header(path: Path, first: bytes) -> dict[str, str]:
    first = first.removeprefix(_BOM)
    try:
        text = first.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path} line 1: header is not UTF-8 text ({exc})") from exc
    if not text.strip():
        raise DatasetError(f"{path} line 1: empty header (expected tab-separated 'field:type' columns, "
                           f"e.g. 'user_id:token')")
    types: dict[str, str] = {}
    for column in text.split("\t"):
        name, sep, ftype = column.strip().partition(":")
        if not sep or not name:
            raise DatasetError(f"{path} line 1: header field '{column}' has no type (expected "
                               f"'name:type' with type one of {', '.join(FIELD_TYPES)})")
        if ftype not in FIELD_TYPES:
            raise DatasetError(f"{path} line 1, field '{name}': unknown type '{ftype}' (expected one "
                               f"of {', '.join(FIELD_TYPES)})")
        if name in types:
            raise DatasetError(f"{path} line 1, field '{name}': appears twice in the header "
                               "(expected unique field names)")
        types[name] = ftype
    return types


def _check_columns(path: Path, data: bytes, n_fields: int) -> np.ndarray:
    """Line numbers (1-based) of the non-blank data lines; error on a wrong column count.

    Vectorised: line ``k`` spans the bytes between newline ``k-1`` and newline ``k``; its tab count
    is the number of tab positions in that span, found with one ``searchsorted``.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(buf == 10)
    if not len(newlines) or newlines[-1] != len(buf) - 1:
        newlines = np.append(newlines, len(buf))  # last line without a final newline
    starts = np.concatenate([[0], newlines[:-1] + 1])
    tabs = np.bincount(np.searchsorted(newlines, np.flatnonzero(buf == 9)), minlength=len(newlines))
    length = newlines - starts
    # a line ending in '\r' (CRLF) is one byte shorter than it looks
    has_cr = np.zeros(len(newlines), dtype=bool)
    nonempty = length > 0
    has_cr[nonempty] = buf[np.minimum(newlines[nonempty] - 1, len(buf) - 1)] == 13
    blank = (length - has_cr) == 0
    line_no = np.arange(1, len(newlines) + 1, dtype=np.int64)
    body = ~blank & (line_no > 1)
    bad = np.flatnonzero(body & (tabs != n_fields - 1))
    if len(bad):
        k = int(bad[0])
        raise DatasetError(f"{path} line {k + 1}: found {tabs[k] + 1} tab-separated values, expected "
                           f"{n_fields} (one per header field)")
    return line_no[body]


def _first_undecodable_line(data: bytes) -> int:
    for k, line in enumerate(data.split(b"\n"), start=1):  # error path only
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return k
    return 0


def _parse_float(table: AtomicTable, name: str) -> np.ndarray:
    raw = table.frame[name]
    try:
        return raw.replace("", "nan").astype(np.float64).to_numpy()
    except ValueError:
        values = pd.to_numeric(raw, errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy() & (raw.str.strip() != "").to_numpy())
        row = int(bad[0])
        raise DatasetError(f"{table.where(row, name)}: '{raw.iloc[row]}' is not a number "
                           f"(expected a float)") from None


def _parse_float_seq(table: AtomicTable, name: str) -> np.ndarray:
    out = np.empty(len(table), dtype=object)
    for row, text in enumerate(table.frame[name].to_numpy()):  # rare column type, no fast path needed
        try:
            out[row] = tuple(float(v) for v in str(text).split())
        except ValueError:
            raise DatasetError(f"{table.where(row, name)}: '{text}' is not a space-separated list of "
                               f"numbers (expected float_seq)") from None
    return out
