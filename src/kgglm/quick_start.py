"""Quick start: one call runs a stage of KGGLM (or fits and evaluates a baseline) end to end, as in RecBole.

    from kgglm.quick_start import run_kgglm
    run_kgglm(model='KGGLM', dataset='ml-100k', config_dict={'train_stage': 'pretrain', 'pretrain_epochs': 5})
    run_kgglm(model='KGGLM', dataset='ml-100k',
              config_dict={'train_stage': 'finetune', 'pre_model_path': 'saved/KGGLM-pretrain/'})

Every call writes one run directory ``CHECKPOINT_DIR/<model>-<dataset>-<stage>-<time>/`` holding
``config.yaml`` (resolved config), ``run.log``, ``result.json`` (metrics) and, for fine-tuning, the
checkpoints (``checkpoint/best`` is the best validation epoch) and ``recommendations.jsonl``. The
pre-training checkpoint goes to ``CHECKPOINT_DIR/KGGLM-pretrain/`` (hopwise's place), where
``pre_model_path`` finds the newest one. :func:`run_pipeline` runs pretrain, finetune and test in
one run directory (``kgglm run``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from kgglm.config import Config
from kgglm.tasks.recommendation import evaluate_checkpoint, recommend_from_checkpoint
from kgglm.tasks.run import RunResult, run_task

__all__ = ["RunResult", "evaluate_checkpoint", "recommend_from_checkpoint", "run", "run_kgglm", "run_pipeline"]


# ---------------------------------------------------------------------------------- entry points
def run_kgglm(
    model: str = "KGGLM",
    dataset: str = "ml-100k",
    config_file_list: Iterable[str] | None = None,
    config_dict: Mapping | None = None,
    saved: bool = True,
    *,
    cmd_args: Iterable[str] | Mapping | None = None,
    preset: str | None = None,
) -> RunResult:
    """Run one stage: ``train_stage`` pretrain or finetune for KGGLM, or fit and evaluate a baseline
    (``model='Pop'``, ``'BPR'``, ``'LightGCN'``, ``'KGItemKNN'``).

    ``config_file_list``/``config_dict``/``cmd_args`` are config layers (see :mod:`kgglm.config`).
    With ``saved=False`` the run directory (checkpoints included) is removed afterwards and the
    result carries only the metrics.
    """
    config = Config(model, dataset, config_file_list=config_file_list, config_dict=config_dict,
                    cmd_args=cmd_args, preset=preset)
    return run_task(config, pipeline=False, saved=saved)


def run(model: str = "KGGLM", dataset: str = "ml-100k", config_file_list=None, config_dict=None,
        saved: bool = True, **kwargs) -> RunResult:
    """Alias of :func:`run_kgglm` (RecBole's ``run`` spelling)."""
    return run_kgglm(model, dataset, config_file_list, config_dict, saved, **kwargs)


def run_pipeline(
    model: str = "KGGLM",
    dataset: str = "ml-100k",
    config_file_list: Iterable[str] | None = None,
    config_dict: Mapping | None = None,
    *,
    cmd_args: Iterable[str] | Mapping | None = None,
    preset: str | None = None,
) -> RunResult:
    """The whole job in one run directory: pretrain, finetune (validation, early stopping), test,
    the ``baselines`` (default Pop) on the same split, the recommendations export and a few
    explained examples. With ``pre_model_path`` set, pre-training is skipped and that model is
    fine-tuned."""
    config = Config(model, dataset, config_file_list=config_file_list, config_dict=config_dict,
                    cmd_args=cmd_args, preset=preset)
    return run_task(config, pipeline=True)
