"""What the training tests share: a tiny model and run config, and a settings dict as CLI flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

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


def scratchlm_command(processes: int = 1) -> list[str]:
    """`python -m scratchlm`, or under `torchrun --standalone` with `processes` ranks."""
    if processes == 1:
        return [sys.executable, "-m", "scratchlm"]
    return [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone"),
        *(f"--nproc_per_node={processes}", "-m", "scratchlm"),
    ]


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


def train_losses(run_dir: Path) -> dict[int, float]:
    """Each step's last logged training loss (a resumed run logs the steps it redoes again); a
    line cut by a kill is skipped."""
    losses: dict[int, float] = {}
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return losses
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("kind") == "train":
            losses[record["step"]] = record["loss"]
    return losses


def records(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [record for record in map(json.loads, lines) if record["kind"] == kind]


def latest_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    pointer = (run_dir / "latest").read_text(encoding="utf-8").strip()
    return load_file(str(run_dir / pointer / "model.safetensors"))


def assert_identical(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> None:
    assert expected.keys() == found.keys()
    for name, tensor in expected.items():
        assert torch.equal(found[name], tensor), name


def signal_when(
    process: subprocess.Popen[str],
    ready: Callable[[], bool],
    signal_number: int,
    *,
    pid: Callable[[], int] | None = None,
    timeout: float = 300.0,
) -> None:
    """Send `signal_number` to the process (or to `pid()`) once ready() holds; fails if the
    process ended first."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if ready():
            os.kill(pid() if pid is not None else process.pid, signal_number)
            return
        time.sleep(0.01)
    process.kill()
    output, errors = process.communicate(timeout=60)
    raise AssertionError(f"the run ended or stalled before the signal: {(output + errors)[-2000:]}")
