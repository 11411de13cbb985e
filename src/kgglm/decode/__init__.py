"""Explainable recommendation: KG-constrained beam search, ranking and readable explanations."""

from kgglm.decode.beam_search import BeamSearchOutput, beam_search
from kgglm.decode.constraints import GraphConstraint
from kgglm.decode.explain import (
                                    ExplainedList,
                                    ExplainedRecommendation,
                                    explain,
                                    explained,
                                    explained_records,
                                    path_strings,
)
from kgglm.decode.generation import PathGenerationConfig
from kgglm.decode.recommend import (
                                    Recommendations,
                                    make_constraint,
                                    read_recommendations,
                                    recommend,
                                    write_recommendations,
)

__all__ = ["BeamSearchOutput", "ExplainedList", "ExplainedRecommendation", "GraphConstraint", "PathGenerationConfig",
           "Recommendations", "beam_search", "explain", "explained", "explained_records", "make_constraint",
           "path_strings", "read_recommendations", "recommend", "write_recommendations"]
