from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from scratchlm.data import TokenShards
from scratchlm.data.stories.corpus import generate_stories
from scratchlm.errors import ScratchLMError
from scratchlm.training.optim import learning_rate_at
from scratchlm.training.run_config import TrainConfig, parse_duration
from scratchlm.training.trainer import train
from tests.training.helpers import tiny_run


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "stories.txt"
    path.write_text("\n<|endoftext|>\n".join(generate_stories(600, seed=3)), encoding="utf-8")
    return path


def unigram_entropy(shards: TokenShards) -> float:
    tokens = shards.read(0, shards.num_tokens).astype(np.int64)
    counts = np.bincount(tokens).astype(np.float64)
    probabilities = counts[counts > 0] / counts.sum()
    return float(-(probabilities * np.log(probabilities)).sum())


def test_loss_falls_well_below_unigram_entropy(corpus: Path, tmp_path: Path) -> None:
    result = train(
        tiny_run(corpus, tmp_path / "run", max_steps=300, eval_every=100, lr=3e-3, tensorboard=True)
    )
    datasets = Path(os.environ["SCRATCHLM_CACHE"]) / "datasets"
    data_dir = next(path for path in datasets.iterdir() if (path / "manifest.json").is_file())
    entropy = unigram_entropy(TokenShards.open(data_dir, "train"))
    assert result.best_val_loss is not None
    assert result.best_val_loss < entropy - 0.6, (result.best_val_loss, entropy)
    run = tmp_path / "run"
    for name in ("metrics.jsonl", "loss.svg", "run_config.json", "tokenizer.json", "latest"):
        assert (run / name).exists(), name
    assert (run / "best" / "model.safetensors").is_file()
    assert any((run / "tensorboard").iterdir())  # --tensorboard asked for event files
    chart = (run / "loss.svg").read_text(encoding="utf-8")
    assert chart.startswith("<svg xmlns=") and 'data-series="validation loss"' in chart
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert len(evals) == 3 and all("sample" in r and "val_perplexity" in r for r in evals)


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    pointer = (run / "latest").read_text().strip()
    return load_file(str(run / pointer / "model.safetensors"))


def test_resume_is_bit_identical(corpus: Path, tmp_path: Path) -> None:
    # dropout > 0 so that restoring the RNG matters; accumulation so the data position matters
    common = {"dropout": 0.1, "tokens_per_step": 1024, "eval_every": 7}
    train(tiny_run(corpus, tmp_path / "straight", **common))
    train(tiny_run(corpus, tmp_path / "paused", stop_after_steps=9, **common))
    assert "step_000009" in (tmp_path / "paused" / "latest").read_text()
    train(tiny_run(corpus, tmp_path / "paused", resume=True, **common))
    straight, resumed = final_weights(tmp_path / "straight"), final_weights(tmp_path / "paused")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name


def test_resume_of_a_finished_run_is_a_no_op(corpus: Path, tmp_path: Path) -> None:
    first = train(tiny_run(corpus, tmp_path / "run", max_steps=5))
    again = train(tiny_run(corpus, tmp_path / "run", max_steps=5, resume=True))
    assert again.steps == first.steps == 5


def test_resume_refusals(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(ScratchLMError, match="no checkpoint to resume"):
        train(tiny_run(corpus, tmp_path / "empty", resume=True))
    train(tiny_run(corpus, tmp_path / "run", max_steps=3))
    with pytest.raises(ScratchLMError, match="already holds a training run"):
        train(tiny_run(corpus, tmp_path / "run", max_steps=3))
    with pytest.raises(ScratchLMError, match="different"):
        train(tiny_run(corpus, tmp_path / "run", max_steps=6, resume=True, set=["n_layer=3"]))


def test_schedules() -> None:
    common = {"peak": 1.0, "warmup_steps": 10, "min_ratio": 0.1, "decay_fraction": 0.2}
    assert learning_rate_at(0, 0.0, schedule="cosine", **common) == pytest.approx(0.1)
    assert learning_rate_at(9, 0.0, schedule="cosine", **common) == pytest.approx(1.0)
    assert learning_rate_at(50, 0.5, schedule="cosine", **common) == pytest.approx(0.55)
    assert learning_rate_at(99, 1.0, schedule="cosine", **common) == pytest.approx(0.1)
    assert learning_rate_at(50, 0.7, schedule="wsd", **common) == pytest.approx(1.0)
    assert learning_rate_at(50, 0.9, schedule="wsd", **common) == pytest.approx(0.55)
    assert learning_rate_at(50, 0.9, schedule="constant", **common) == pytest.approx(1.0)


def test_durations_and_config_validation() -> None:
    assert (
        parse_duration("90s") == 90
        and parse_duration("5m") == 300
        and parse_duration("1.5h") == 5400
    )
    assert parse_duration("300") == 300
    with pytest.raises(ScratchLMError):
        parse_duration("five minutes")
    with pytest.raises(ScratchLMError, match="batch-size"):
        TrainConfig(batch_size=0).validate()
    assert math.isfinite(TrainConfig().val_fraction)
