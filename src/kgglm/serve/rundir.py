"""The run directory behind a served checkpoint: its ``report.html`` and the metrics of its ``result.json``.

:func:`find_run_dir` walks up from the checkpoint (``RUN/checkpoint/best``, ``RUN/pretrain/checkpoint/...``)
to the first folder holding ``result.json``. :class:`RunFiles` answers the two questions the server
asks of it, read-only: the report's bytes (read on each request, so a report rebuilt by
``kgglm report`` shows; ``None`` when there is none) and the metrics tables (read once).

Nothing a client sends names a file: the report is the one fixed file ``RUN/report.html``, and it is
served only when it is a regular file inside the run directory (a link that leads out of it is refused).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from kgglm.report.saved import REPORT_FILE, RESULT_FILE, ReportError, load_result, metric_columns

MAX_REPORT_BYTES = 64 << 20  # a report inlines its PNG figures: a few hundred kB in practice
SPLITS = ("test", "valid")
# report.html has no script and inlines its style and figures (base64 PNG): it gets a policy of its own,
# stricter than the page's in all but inline style
REPORT_CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'none'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def find_run_dir(checkpoint: str | os.PathLike, levels: int = 3) -> Path | None:
    """The checkpoint folder or the nearest of its ``levels`` parents that holds ``result.json``."""
    start = Path(checkpoint).resolve()
    for folder in [start, *start.parents][: levels + 1]:
        if (folder / RESULT_FILE).is_file():
            return folder
    return None


def _finite(value: object) -> float | int | None:
    """A metric as JSON can write it: numbers kept, NaN and infinities as ``None``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def metrics_tables(result: dict) -> dict[str, dict[str, dict[str, float | int | None]]]:
    """``{split: {column: {metric: value}}}`` for ``test`` and ``valid``: the run's model and its
    baselines (:func:`kgglm.report.saved.metric_columns`), numeric metrics only."""
    tables = {}
    for split in SPLITS:
        cols = metric_columns(result, split)
        tables[split] = {
            str(name): {
                str(k): _finite(v) for k, v in col.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
            for name, col in cols.items()
            if isinstance(col, dict)
        }
    return tables


class RunFiles:
    """The report and metrics of one run directory (or of none: every question then answers ``None``)."""

    def __init__(self, run_dir: str | os.PathLike | None) -> None:
        self.run_dir = Path(run_dir).resolve() if run_dir is not None else None
        self._summary: dict | None = None
        self.error: str | None = (
            None
            if run_dir is not None
            else f"the checkpoint is in no run directory (no {RESULT_FILE} beside it or above it)"
        )

    @property
    def name(self) -> str | None:
        """The run directory's own name (never its place on disk)."""
        return self.run_dir.name if self.run_dir is not None else None

    def _report_path(self) -> Path | None:
        """``RUN/report.html`` when it is a regular file inside the run directory, of at most
        :data:`MAX_REPORT_BYTES`; else ``None``."""
        if self.run_dir is None:
            return None
        path = (self.run_dir / REPORT_FILE).resolve()
        try:
            ok = path.parent == self.run_dir and path.is_file() and path.stat().st_size <= MAX_REPORT_BYTES
        except OSError:
            return None
        return path if ok else None

    def report(self) -> bytes | None:
        """``report.html``'s bytes, or ``None`` when the run has none (see :meth:`_report_path`)."""
        path = self._report_path()
        try:
            return path.read_bytes() if path is not None else None
        except OSError:  # removed between the check and the read
            return None

    def summary(self) -> dict | None:
        """The run's name, model, dataset, stage, whether it has a report, and :func:`metrics_tables`
        (read once), or ``None`` when ``result.json`` cannot be read (:attr:`error` says why)."""
        if self._summary is None and self.run_dir is not None:
            try:
                result = load_result(self.run_dir)
                if not isinstance(result, dict):
                    raise ReportError(
                        f"{self.run_dir / RESULT_FILE}: expected a JSON object, got {type(result).__name__}"
                    )
            except (ReportError, OSError) as exc:
                self.error = str(exc).replace(str(self.run_dir), str(self.name))  # the run, not the path
                return None
            self._summary = {
                "run": self.name,
                "model": result.get("model"),
                "dataset": result.get("dataset"),
                "train_stage": result.get("train_stage"),
                "metrics": metrics_tables(result),
            }
        if self._summary is None:
            return None
        return {**self._summary, "report": self._report_path() is not None}
