"""Run reports and experiment trackers, from a run directory's saved files.

:mod:`kgglm.report.html` writes ``report.html`` and PNG figures (matplotlib);
:mod:`kgglm.report.trackers` logs a run to TensorBoard, MLflow, W&B or CSV;
:mod:`kgglm.report.saved` reads the saved files (no plotting library is imported).
"""
