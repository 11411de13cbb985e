"""kgglm: KGGLM, a generative language model over a knowledge graph for explainable recommendation."""

__version__ = "0.1.0"
