"""torchrun on CPU with gloo: DDP and FSDP2 match one process with the same global batch, and
their checkpoints resume on a different number of ranks."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from scratchlm.data.stories.corpus import generate_stories
from tests.training.helpers import as_flags, scratchlm_command

pytestmark = pytest.mark.xdist_group("torchrun")

DISTRIBUTED_MODEL = ["n_layer=2", "d_model=64", "n_head=4", "n_kv_head=2", "ffn_hidden=128"]
STEPS = 12


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "stories.txt"
    path.write_text("\n<|endoftext|>\n".join(generate_stories(300, seed=5)), encoding="utf-8")
    return path


def train_arguments(corpus: Path, out: Path, *extra: str) -> list[str]:
    settings = {
        "preset": "tiny",
        "set": DISTRIBUTED_MODEL,
        "context_length": 64,
        "data": corpus,
        "tokenizer": "char",
        "out": out,
        "batch_size": 4,
        # one process: 4 x 64 x 2 micro-batches; two processes: 4 x 64 x 1 each
        "tokens_per_step": 512,
        "max_steps": STEPS,
        "eval_every": 6,
        "eval_tokens": 2048,
        "sample_tokens": 8,
        "log_every": 1,
        "warmup_steps": 2,
        "lr": 3e-3,
        "seed": 7,
        "threads": 1,
        "data_workers": 1,
        "quiet": True,
    }
    return ["train", *as_flags(settings), *extra]


def run(arguments: list[str], processes: int = 1) -> None:
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [*scratchlm_command(processes), *arguments]
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def train_losses(run_dir: Path) -> dict[int, float]:
    """The last logged loss of each step (a resumed run logs its redone steps again)."""
    losses: dict[int, float] = {}
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["kind"] == "train":
            losses[record["step"]] = record["loss"]
    return losses


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    pointer = (run_dir / "latest").read_text(encoding="utf-8").strip()
    return load_file(str(run_dir / pointer / "model.safetensors"))


def assert_same_training(reference: Path, other: Path) -> None:
    expected, found = train_losses(reference), train_losses(other)
    assert sorted(found) == list(range(1, STEPS + 1))
    for step in expected:
        # same windows, same updates; only the order of float sums differs (all-reduce)
        assert found[step] == pytest.approx(expected[step], rel=1e-4, abs=1e-5), step
    reference_weights, other_weights = final_weights(reference), final_weights(other)
    assert reference_weights.keys() == other_weights.keys()
    for name, tensor in reference_weights.items():
        torch.testing.assert_close(other_weights[name], tensor, rtol=1e-3, atol=1e-4)


@pytest.fixture(scope="module")
def single_process_runs(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One-process reference runs, one per optimizer, made on first use."""
    made: dict[str, Path] = {}

    def reference(optimizer: str) -> Path:
        if optimizer not in made:
            out = tmp_path_factory.mktemp(f"single-{optimizer}") / "run"
            run(train_arguments(corpus, out, "--optimizer", optimizer))
            resolved = json.loads((out / "run_config.json").read_text(encoding="utf-8"))
            assert resolved["resolved"]["accumulation"] == 2
            assert resolved["resolved"]["world_size"] == 1
            made[optimizer] = out
        return made[optimizer]

    return reference


# DDP with Muon (the default optimizer), FSDP with AdamW (what --optimizer auto picks under FSDP:
# Muon needs whole matrices).
@pytest.mark.parametrize(("parallelism", "optimizer"), [("ddp", "muon"), ("fsdp", "adamw")])
def test_two_ranks_match_one_process_and_resume_on_one(
    corpus: Path, single_process_runs: Any, tmp_path: Path, parallelism: str, optimizer: str
) -> None:
    extra = ["--fsdp"] if parallelism == "fsdp" else []
    # Two ranks train the first half and stop; one process resumes their checkpoint.
    out = tmp_path / parallelism
    run(train_arguments(corpus, out, "--stop-after-steps", str(STEPS // 2), *extra), processes=2)
    config = json.loads((out / "run_config.json").read_text(encoding="utf-8"))["resolved"]
    assert config["world_size"] == 2 and config["accumulation"] == 1
    assert config["parallelism"] == parallelism and config["optimizer"] == optimizer
    halfway = train_losses(out)
    assert sorted(halfway) == list(range(1, STEPS // 2 + 1))
    run(train_arguments(corpus, out, "--resume", *extra))
    assert_same_training(single_process_runs(optimizer), out)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # only rank 0 logged: one record per step before the resume
    assert sum(1 for record in records if record["kind"] == "train" and record["step"] == 1) == 1


def test_one_process_checkpoint_resumes_on_two_ranks(
    corpus: Path, single_process_runs: Any, tmp_path: Path
) -> None:
    out = tmp_path / "grow"
    run(train_arguments(corpus, out, "--stop-after-steps", str(STEPS // 2)))
    run(train_arguments(corpus, out, "--resume"), processes=2)
    assert_same_training(single_process_runs("muon"), out)


def test_fsdp_micro_batch_auto_estimates_per_rank(corpus: Path, tmp_path: Path) -> None:
    """Under torchrun the ranks choose together: the RAM split over the host's processes, the
    weights sharded under FSDP, one micro-batch for all."""
    out = tmp_path / "auto"
    arguments = train_arguments(corpus, out, "--fsdp", "--micro-batch", "auto")
    steps = arguments.index("--max-steps")
    arguments[steps + 1] = "2"
    run(arguments, processes=2)
    resolved = json.loads((out / "run_config.json").read_text(encoding="utf-8"))["resolved"]
    choice = resolved["micro_batch_choice"]
    assert "/ 2 processes on this host" in choice and "sharded over 2 ranks" in choice
    # 512 tokens per step over 2 ranks at context 64: at most 4 sequences each, no accumulation
    assert resolved["batch_size"] == 4 and resolved["accumulation"] == 1
    assert sorted(train_losses(out)) == [1, 2]
