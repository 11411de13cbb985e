"""Explainable recommendation: KG-constrained beam search, ranking and readable explanations."""

from kgglm.decode.beam_search import BeamSearchOutput, beam_search
from kgglm.decode.constraints import GraphConstraint, excluded_items_csr
from kgglm.decode.recommend import (Recommendations, explain, make_constraint, read_recommendations, recommend,
                                    write_recommendations)

__all__ = ["BeamSearchOutput", "GraphConstraint", "Recommendations", "beam_search", "excluded_items_csr",
           "explain", "make_constraint", "read_recommendations", "recommend", "write_recommendations"]
