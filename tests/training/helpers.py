"""What the training tests share: a tiny model and run config, and a settings dict as CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scratchlm.training.run_config import TrainConfig

TINY_MODEL = ["n_layer=2", "d_model=64", "n_head=4", "ffn_hidden=128"]

TINY_RUN: dict[str, Any] = {
    "preset": "tiny",
    "set": TINY_MODEL,
    "context_length": 64,
    "tokenizer": "char",
    "batch_size": 8,
    "max_steps": 20,
    "eval_every": 10,
    "eval_tokens": 4096,
    "sample_tokens": 16,
    "save_every": 100,
    "warmup_steps": 5,
    "quiet": True,
    "data_workers": 1,
    "seed": 11,
}


def tiny_run(corpus: Path, out: Path, **overrides: Any) -> TrainConfig:
    """A few-second training run of a tiny model on `corpus` (character tokenizer)."""
    return TrainConfig(**{**TINY_RUN, "data": str(corpus), "out": str(out), **overrides})


def as_flags(settings: dict[str, Any]) -> list[str]:
    """{"batch_size": 8, "set": [...], "quiet": True} -> ["--batch-size", "8", "--set", ..., "--quiet"]."""
    flags: list[str] = []
    for name, value in settings.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif isinstance(value, list):
            for item in value:
                flags += [flag, str(item)]
        elif value is not None and value is not False:
            flags += [flag, str(value)]
    return flags
