"""The one dispatch of task, model and stage (kgglm.tasks.run.plan) and the task name it shares."""

from __future__ import annotations

import pytest

from kgglm.config import Config, ConfigError
from kgglm.tasks import kg_completion
from kgglm.tasks.recommendation import RECOMMENDATION_STAGES
from kgglm.tasks.run import KG_COMPLETION, plan


def _config(model: str = "KGGLM", **keys) -> Config:
    return Config(model, "toy", config_dict=keys)


def test_whole_job_and_single_stages():
    job = plan(_config(), pipeline=True)
    assert (job.task, job.stage, job.dir_stage, job.train_stage, job.report) == \
        ("recommendation", "pipeline", "run", "pretrain+finetune", True)
    for keys in ({"pretrain_epochs": 0}, {"pre_model_path": "saved/KGGLM-pretrain/"}):  # no pre-training runs
        assert plan(_config(**keys), pipeline=True).train_stage == "finetune"
    job = plan(_config(train_stage="pretrain"), pipeline=False)
    assert (job.stage, job.dir_stage, job.train_stage, job.report) == ("pretrain", "pretrain", "pretrain", False)
    job = plan(_config(train_stage="finetune", pre_model_path="saved/KGGLM-pretrain/"), pipeline=False)
    assert (job.stage, job.train_stage) == ("finetune", "finetune")
    assert {j.stage for j in (plan(_config(), pipeline=True), job)} <= set(RECOMMENDATION_STAGES)


def test_finetune_without_pretrained_model_fails_before_any_run(tmp_path):
    with pytest.raises(ConfigError, match="needs pre_model_path"):
        plan(_config(train_stage="finetune", checkpoint_dir=str(tmp_path)), pipeline=False)
    assert not any(tmp_path.iterdir())  # no run directory was made


@pytest.mark.parametrize("pipeline", [True, False])
def test_a_baseline_is_fitted_and_evaluated_either_way(pipeline):
    job = plan(_config("Pop"), pipeline=pipeline)
    assert (job.task, job.stage, job.dir_stage, job.train_stage, job.report) == \
        ("recommendation", "baseline", "eval", None, False)


@pytest.mark.parametrize("pipeline", [True, False])
def test_knowledge_completion_runs_kgglm_only(pipeline):
    assert KG_COMPLETION == kg_completion.TASK
    job = plan(_config(task="kg_completion"), pipeline=pipeline)
    assert (job.task, job.dir_stage, job.train_stage, job.report) == (KG_COMPLETION, "kgc", KG_COMPLETION, True)
    with pytest.raises(ConfigError, match="task kg_completion runs KGGLM"):
        plan(_config("Pop", task="kg_completion"), pipeline=pipeline)
