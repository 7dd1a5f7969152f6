"""The inference speed of a run's final model, measured with `scratchlm bench`'s own code."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from scratchlm.errors import ScratchLMError

DEFAULT_PROMPT_TOKENS = 32
DEFAULT_NEW_TOKENS = 32


@dataclass
class InferenceSpeed:
    """A measurement, or why there is none (`error`); the report shows either."""

    checkpoint: str | None = None
    values: dict[str, Any] = field(default_factory=dict)  # BenchResult.as_dict()
    error: str | None = None
    skipped: bool = False


def measure_inference_speed(run_dir: Path, new_tokens: int = DEFAULT_NEW_TOKENS) -> InferenceSpeed:
    """Prefill and batch-1 decode tokens/s of the run's final model (best/, else latest) on CPU.

    A short setting (32 prompt tokens, `new_tokens` new ones, one timed run after a warm-up) keeps
    the report quick; CPU so that reports of runs from different machines compare. Failures
    (no checkpoint, a damaged one) become the report's message instead of a crash."""
    if new_tokens < 2:
        raise ScratchLMError(
            f"--bench-tokens must be at least 2 (got {new_tokens}): decode speed needs a second token"
        )
    from scratchlm.checkpoint import load_checkpoint, resolve_checkpoint
    from scratchlm.inference.bench import run_benchmark

    try:
        checkpoint_dir = resolve_checkpoint(run_dir)
    except ScratchLMError as error:
        return InferenceSpeed(error=f"no checkpoint to measure: {error}")
    try:
        loaded = load_checkpoint(checkpoint_dir, "cpu")
        context = loaded.config.context_length
        # Fit prompt + new tokens into the context: half each at most for short contexts.
        prompt_tokens = max(1, min(DEFAULT_PROMPT_TOKENS, context // 2))
        decode_tokens = max(2, min(new_tokens, context - prompt_tokens))
        result = run_benchmark(
            loaded.model,
            prompt_tokens=prompt_tokens,
            new_tokens=decode_tokens,
            batch_sizes=(1,),
            num_runs=1,
        )
    except Exception as error:  # any failure is reported on the page, the rest still renders
        return InferenceSpeed(
            checkpoint=_relative_name(checkpoint_dir, run_dir),
            error=f"{type(error).__name__}: {error}",
        )
    values = result.as_dict()
    values["threads"] = torch.get_num_threads()
    return InferenceSpeed(checkpoint=_relative_name(checkpoint_dir, run_dir), values=values)


def _relative_name(path: Path, run_dir: Path) -> str:
    try:
        return str(path.resolve().relative_to(run_dir.resolve()))
    except ValueError:
        return path.name
