"""TEMPORARY shim during the restructure (removed at integration): use kgglm.tasks.recommendation."""

from kgglm.decode.explain import explained  # noqa: F401
from kgglm.tasks.recommendation import (  # noqa: F401
    evaluate_checkpoint,
    recommend_from_checkpoint,
    resolve_model_checkpoint,  # noqa: F401
)
from kgglm.tasks.recommendation import load_for_inference as load_for_serving  # noqa: F401
