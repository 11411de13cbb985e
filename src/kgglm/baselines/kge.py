"""Knowledge-graph-embedding baselines for knowledge completion (TransE, DistMult, RotatE, ComplEx)
through PyKEEN, an optional extra (``pip install pykeen``).

The models train on exactly the train triples of a :class:`~kgglm.data.kg_split.KGSplit`. PyKEEN
ids: entity ``node - n_users`` (every item and entity node, so PyKEEN ranks over the same candidates
as :mod:`kgglm.evaluate.kg_ranking`), relation ``relation - 1`` (the user-item relation 0 is not a
KG relation). Each trained model is evaluated twice on the tail side:

* with PyKEEN's own filtered ``RankBasedEvaluator`` (filter: train, + valid when testing, + the
  evaluated triples, which PyKEEN always adds), realistic ranks;
* with :func:`kgglm.evaluate.kg_ranking.evaluate_tail_ranking` on the model's ``score_t`` scores.

The two must agree: an independent check of our metric code.

Training uses PyKEEN's sLCWA loop (negative sampling, each model's default loss) or, on request,
LCWA with a softmax cross-entropy over all tails (1-N scoring), epoch by epoch until ``epochs`` or
``time_budget_s`` of CPU time is spent.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from kgglm.data.kg_split import KGSplit
from kgglm.evaluate.kg_ranking import evaluate_tail_ranking

logger = logging.getLogger(__name__)

KGE_MODELS = ("TransE", "DistMult", "RotatE", "ComplEx")


def pykeen_available() -> bool:
    try:
        import pykeen  # noqa: F401
    except ImportError:
        return False
    return True


def _require_pykeen():
    if not pykeen_available():
        raise ImportError("the KGE baselines need PyKEEN: pip install pykeen (keep your torch: "
                          "pip install pykeen -c <(echo torch==$(python -c 'import torch;print(torch.__version__)')))")


@dataclass
class KGEResult:
    """A trained PyKEEN model with its metrics (ours and PyKEEN's) and timings."""

    name: str
    model: Any
    epochs: int
    train_cpu_seconds: float
    train_wall_seconds: float
    losses: list[float] = field(default_factory=list)
    best_epoch: int | None = None  # with select_on_valid: the epoch whose weights were kept
    valid_history: list[dict[str, float]] = field(default_factory=list)  # epoch, cpu_seconds, valid mrr
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # split -> our kg_ranking metrics
    pykeen_metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # split -> PyKEEN's


def _mapped(triples: np.ndarray, n_users: int) -> torch.Tensor:
    t = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
    return torch.from_numpy(np.column_stack([t[:, 0] - n_users, t[:, 1] - 1, t[:, 2] - n_users]))


def triples_factory(split: KGSplit, part: str = "train"):
    """A PyKEEN ``TriplesFactory`` of one part of ``split`` over all item/entity nodes and KG relations."""
    _require_pykeen()
    from pykeen.triples import TriplesFactory

    data = split.dataset
    n_ent, n_rel = data.n_items + data.n_entities, data.n_relations - 1
    names = data.node_tokens()[data.n_users:]
    # labels only for display; ids are fixed by our node layout (items may share tokens with entities)
    entity_to_id = {f"{i}:{names[i]}": i for i in range(n_ent)}
    relation_to_id = {str(data.relation_tokens[r + 1]): r for r in range(n_rel)}
    return TriplesFactory(_mapped(split.triples(part), data.n_users), entity_to_id=entity_to_id,
                          relation_to_id=relation_to_id, num_entities=n_ent, num_relations=n_rel)


def train_kge(name: str, split: KGSplit, *, embedding_dim: int = 64, epochs: int = 100, batch_size: int = 1024,
              learning_rate: float = 1e-2, seed: int = 2024, time_budget_s: float | None = None,
              num_negs_per_pos: int = 16, loop: str = "slcwa", select_on_valid: bool = False,
              valid_every_s: float = 60.0) -> KGEResult:
    """Train PyKEEN model ``name`` (one of :data:`KGE_MODELS`) on the train triples of ``split``.

    ``loop='slcwa'`` (default): negative sampling with each model's PyKEEN default loss; cheap epochs.
    ``loop='lcwa'``: 1-N scoring with softmax cross-entropy; much stronger per epoch for DistMult/ComplEx
    but an epoch costs ``(h, r) pairs x entities x dim`` (TransE/RotatE broadcast that on CPU: slow).
    Trains epoch by epoch until ``epochs`` or ``time_budget_s`` seconds of CPU time. With
    ``select_on_valid`` the filtered valid MRR is computed after the first epoch that ends
    ``valid_every_s`` CPU seconds after the previous check, and after the last epoch; the weights of
    the best check are kept (model selection on valid, as the KGGLM side does). Those evaluations are
    part of the CPU time and of the budget.
    """
    _require_pykeen()
    from pykeen.models import model_resolver
    from pykeen.training import LCWATrainingLoop, SLCWATrainingLoop

    if name not in KGE_MODELS:
        raise ValueError(f"model must be one of {KGE_MODELS}, got {name!r}")
    tf = triples_factory(split, "train")
    torch.manual_seed(seed)
    extra = {"loss": "crossentropy"} if loop == "lcwa" else {}
    model = model_resolver.make(name, triples_factory=tf, embedding_dim=embedding_dim, random_seed=seed, **extra)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    if loop == "lcwa":
        trainer = LCWATrainingLoop(model=model, triples_factory=tf, optimizer=optimizer)
    else:
        trainer = SLCWATrainingLoop(model=model, triples_factory=tf, optimizer=optimizer,
                                    negative_sampler_kwargs={"num_negs_per_pos": num_negs_per_pos})
    losses: list[float] = []
    history: list[dict[str, float]] = []
    best: tuple[float, dict | None, int | None] = (float("-inf"), None, None)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    epoch, next_check = 0, valid_every_s
    while epoch < epochs:
        epoch += 1
        # one epoch per call, continuing the same weights and optimizer: lets us stop on a CPU-time budget
        out = trainer.train(triples_factory=tf, num_epochs=epoch, batch_size=batch_size, use_tqdm=False,
                            continue_training=epoch > 1, clear_optimizer=False)
        losses.append(float(out[-1]) if out else float("nan"))
        spent = time.process_time() - cpu0
        last = epoch >= epochs or (time_budget_s is not None and spent >= time_budget_s)
        if select_on_valid and (last or spent >= next_check):
            mrr = tail_metrics(model, split, "valid", ks=(10,))["mrr"]
            history.append({"epoch": epoch, "cpu_seconds": round(time.process_time() - cpu0, 1), "mrr": mrr})
            logger.info("%s: epoch %d, %.0fs CPU, valid MRR %.4f", name, epoch, history[-1]["cpu_seconds"], mrr)
            if mrr > best[0]:
                best = (mrr, copy.deepcopy(model.state_dict()), epoch)
            next_check = time.process_time() - cpu0 + valid_every_s
        if last:
            break
    if best[1] is not None:
        model.load_state_dict(best[1])
    res = KGEResult(name=name, model=model, epochs=epoch, train_cpu_seconds=round(time.process_time() - cpu0, 2),
                    train_wall_seconds=round(time.perf_counter() - wall0, 2), losses=losses, best_epoch=best[2],
                    valid_history=history)
    logger.info("%s: %d epochs, %.1fs CPU, final loss %.4f", name, epoch, res.train_cpu_seconds, losses[-1])
    return res


def kge_score_fn(model, n_users: int):
    """``(heads, relations) -> [B, n_items + n_entities]`` scores of every tail node (higher is better)."""
    @torch.no_grad()
    def score(heads: np.ndarray, relations: np.ndarray) -> torch.Tensor:
        model.eval()
        hr = torch.from_numpy(np.column_stack([np.asarray(heads) - n_users, np.asarray(relations) - 1]))
        # slice over tails: translational models broadcast [B, tails, dim] otherwise (GBs on ml-100k)
        return model.score_t(hr, slice_size=1024).float()
    return score


def evaluate_kge(result: KGEResult, split: KGSplit, part: str = "test", *, batch_size: int = 64,
                 ks: tuple[int, ...] = (1, 3, 10), with_pykeen: bool = True) -> dict[str, float]:
    """Our filtered metrics of ``result.model`` on ``part`` (and PyKEEN's, into ``result.pykeen_metrics``)."""
    ours = tail_metrics(result.model, split, part, ks=ks, batch_size=batch_size)
    result.metrics[part] = ours
    if with_pykeen:
        result.pykeen_metrics[part] = pykeen_tail_metrics(result.model, split, part, ks=ks, batch_size=batch_size)
    return ours


def tail_metrics(model, split: KGSplit, part: str, *, ks: tuple[int, ...] = (1, 3, 10),
                 batch_size: int = 64) -> dict[str, float]:
    """Our filtered tail-ranking metrics (:mod:`kgglm.evaluate.kg_ranking`) of a PyKEEN model on ``part``."""
    data = split.dataset
    filters = [split.train] if part == "valid" else [split.train, split.valid]
    return evaluate_tail_ranking(kge_score_fn(model, data.n_users), split.triples(part),
                                 filter_triples=filters, n_relations=data.n_relations,
                                 n_candidates=data.n_items + data.n_entities, candidate_offset=data.n_users,
                                 type_triples=split.train, ks=ks, batch_size=batch_size)


def pykeen_tail_metrics(model, split: KGSplit, part: str, *, ks: tuple[int, ...] = (1, 3, 10),
                        batch_size: int = 64) -> dict[str, float]:
    """PyKEEN's filtered ``RankBasedEvaluator`` on the tail side, realistic ranks."""
    _require_pykeen()
    from pykeen.evaluation import RankBasedEvaluator
    from pykeen.typing import LABEL_TAIL

    n_users = split.dataset.n_users
    filters = [split.train] if part == "valid" else [split.train, split.valid]
    evaluator = RankBasedEvaluator(filtered=True)
    res = evaluator.evaluate(model, _mapped(split.triples(part), n_users),
                             additional_filter_triples=[_mapped(f, n_users) for f in filters],
                             targets=[LABEL_TAIL], batch_size=batch_size, use_tqdm=False)
    out = {"mrr": float(res.get_metric("tail.realistic.inverse_harmonic_mean_rank")),
           "mr": float(res.get_metric("tail.realistic.arithmetic_mean_rank"))}
    out.update({f"hits@{k}": float(res.get_metric(f"tail.realistic.hits_at_{k}")) for k in ks})
    return out
