"""Synthetic data sets, generated rather than parsed: a room of their own, beside (not in) the data layer.

* :mod:`kgglm.synthetic.small`: tiny seeded datasets with a planted signal, in memory
  (``make_synthetic_dataset``, ``make_knowledge_dataset``) or as atomic files (``write_atomic``;
  ``python -m kgglm.synthetic.small --out DIR``), for tests, examples and quality checks.
* :mod:`kgglm.synthetic.large`: an Amazon-book-sized data set written as atomic files
  (``python -m kgglm.synthetic.large --out DIR``), for the scale benchmarks.

Both build on :mod:`kgglm.data` (a :class:`~kgglm.data.dataset.Dataset`, the loader); nothing in
the package's pipelines imports them.
"""
