"""Set-up resolves settings into a new TrainConfig: the caller's object is never changed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from scratchlm.config import preset_config
from scratchlm.model import build_model
from scratchlm.training.distributed import init_distributed
from scratchlm.training.run_config import TrainConfig
from scratchlm.training.setup import DEFAULT_MAX_STEPS, default_max_steps, fit_micro_batch
from scratchlm.training.trainer import Trainer
from tests.conftest import SAMPLE_TEXT
from tests.training.helpers import tiny_run


def test_fit_micro_batch_returns_a_new_config() -> None:
    config = TrainConfig(micro_batch="4", batch_size=16)
    before = dataclasses.asdict(config)
    model_config = preset_config("tiny", n_layer=2, d_model=64, n_head=4, vocab_size=128)
    context, _ = init_distributed("cpu")
    resolved, how = fit_micro_batch(
        config,
        model_config,
        make_model=lambda: build_model(model_config),
        device=torch.device("cpu"),
        precision="fp32",
        dist=context,
        fsdp=False,
        log=lambda message: None,
    )
    assert resolved.batch_size == 4 and how is None
    assert dataclasses.asdict(config) == before


def test_the_default_budget() -> None:
    assert default_max_steps(TrainConfig()) == DEFAULT_MAX_STEPS
    assert default_max_steps(TrainConfig(max_time="5m")) is None
    assert default_max_steps(TrainConfig(max_steps=7)) == 7


def test_the_trainer_leaves_the_callers_config_alone(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(SAMPLE_TEXT * 20, encoding="utf-8")
    config = tiny_run(corpus, tmp_path / "run", micro_batch="auto", max_steps=2, eval_every=2)
    before = dataclasses.asdict(config)
    trainer = Trainer(config)
    result = trainer.run(max_time_s=600.0)
    assert dataclasses.asdict(config) == before
    assert trainer.config.max_time == "600s" and result.steps == 2
