"""Benchmark tasks scored during training (--eval-tasks): at every evaluation, the built-in scorer
(`scratchlm eval --tasks`'s, evaluation/scoring.py) runs zero-shot on the first
--eval-tasks-limit examples of each task, and the trainer logs one number per task and the
centered aggregate next to the validation loss.

The task files are read once, when the trainer is built: a missing file or an unknown task fails
before any data is tokenized. Scoring must not change the training trajectory: the model is put
in eval mode and back, and the RNG states are restored afterwards (the scorer draws no random
numbers today; the fork makes that a guarantee rather than an accident). Under torchrun every rank
scores the same examples, as every rank runs the validation loss: an FSDP forward needs all ranks,
and under DDP the others would only wait for rank 0 at the next collective.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from scratchlm.errors import ScratchLMError
from scratchlm.evaluation.examples import Example, TaskSpec
from scratchlm.evaluation.scoring import BenchmarkReport, run_benchmarks
from scratchlm.evaluation.tasks import load_task
from scratchlm.model import GPT
from scratchlm.tokenizer import Tokenizer
from scratchlm.training.run_config import TrainConfig, eval_task_names

# The metrics.jsonl keys: task/<name>/<metric>, task/<name>/centered, task/centered_aggregate.
TASK_PREFIX = "task/"
AGGREGATE_KEY = "task/centered_aggregate"
# Not a number (so TensorBoard skips it): per task its metric, chance level and example count,
# what the report's table needs besides the values.
INFO_KEY = "task_info"
SECONDS_KEY = "task_seconds"


@dataclass
class TrainingBenchmarks:
    """The tasks' examples, read once; `score` runs them on the model being trained."""

    tasks: list[tuple[TaskSpec, list[Example]]]

    @classmethod
    def load(cls, config: TrainConfig, log: Callable[[str], None] = print) -> TrainingBenchmarks:
        """Read the first --eval-tasks-limit examples (zero-shot) of every --eval-tasks task from
        --eval-task-data, or from the Hugging Face hub without it (as `scratchlm eval --tasks`)."""
        assert config.eval_tasks is not None
        folder = Path(config.eval_task_data) if config.eval_task_data else None
        if folder is not None and not folder.is_dir():
            raise ScratchLMError(
                f"--eval-task-data {folder} is not a directory; pass the folder holding the task "
                "files (the file names of shared/data/evals), or leave it out to read the hub"
            )
        tasks = [
            load_task(name, task_data=folder, num_fewshot=0, limit=config.eval_tasks_limit)
            for name in eval_task_names(config.eval_tasks)
        ]
        examples = sum(len(found) for _, found in tasks)
        log(
            f"eval tasks: {len(tasks)} task(s), {examples:,} examples scored zero-shot at each "
            "evaluation"
        )
        return cls(tasks)

    def score(
        self,
        model: GPT,
        tokenizer: Tokenizer,
        *,
        batch_size: int,
        device: torch.device,
        autocast: AbstractContextManager[Any],
    ) -> dict[str, Any]:
        """The metrics.jsonl fields of one evaluation (see `benchmark_record`), scoring
        `batch_size` continuations per forward (the training micro-batch fits, so these do); the
        model's train/eval mode and every RNG state are as they were."""
        was_training = model.training
        # CUDA's generator too when training there (fork_rng restores the CPU one always).
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            model.eval()
            try:
                with autocast:
                    report = run_benchmarks(model, tokenizer, self.tasks, batch_size=batch_size)
            finally:
                model.train(was_training)
        return benchmark_record(report)


def benchmark_record(report: BenchmarkReport) -> dict[str, Any]:
    """task/<name>/<primary metric> and task/<name>/centered per task (MMLU's subjects pooled
    into one, as in the aggregate), task/centered_aggregate, the seconds spent, and `task_info`
    (per task: metric, chance, examples)."""
    record: dict[str, Any] = {}
    info: dict[str, dict[str, Any]] = {}
    for entry in report.entries:
        record[f"{TASK_PREFIX}{entry.name}/{entry.metric}"] = entry.value
        record[f"{TASK_PREFIX}{entry.name}/centered"] = entry.centered
        info[entry.name] = {
            "metric": entry.metric,
            "chance": entry.random_baseline,
            "examples": entry.examples,
        }
    record[AGGREGATE_KEY] = report.aggregate
    record[SECONDS_KEY] = report.stats.seconds
    record[INFO_KEY] = info
    return record


def summary_line(record: dict[str, Any]) -> str:
    """The console's line for an evaluation: "tasks: centered aggregate 0.0123 (hellaswag
    0.0100, arc_easy 0.0150; 2.1s)"."""
    parts = [f"{name} {record[f'{TASK_PREFIX}{name}/centered']:.4f}" for name in record[INFO_KEY]]
    return (
        f"tasks: centered aggregate {record[AGGREGATE_KEY]:.4f} ({', '.join(parts)}; "
        f"{record.get(SECONDS_KEY, 0.0):.1f}s)"
    )
