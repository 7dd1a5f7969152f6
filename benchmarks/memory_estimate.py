"""Calibrate `estimate_training_bytes` against reality on CPU.

For each case a fresh Python process builds the model and a fused AdamW, runs training steps
exactly as the trainer does (forward under autocast, cross-entropy on the float logits,
backward, optimizer step, zero_grad(set_to_none)), and reports
  - tensors: the peak of live tensor bytes over 2 steps (TensorMemoryTracker), against the
    estimate's tensor parts (total minus its CPU runtime and allocator terms);
  - rss: the growth of the peak resident memory (getrusage ru_maxrss) over 8 steps, from its
    value after imports, in another process: what the OS actually had to provide (the
    allocator's fragmentation grows over the first steps, then levels off), against the total.
The estimate must not be much below either.

    .venv/bin/python benchmarks/memory_estimate.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
from typing import Any

CASES: list[tuple[str, int, str, bool, dict[str, Any]]] = [
    # (preset, micro_batch, precision, activation checkpointing, overrides)
    ("tiny", 1, "fp32", False, {}),
    ("tiny", 8, "fp32", False, {}),
    ("tiny", 32, "fp32", False, {}),
    ("tiny", 32, "fp32", True, {}),
    ("tiny", 16, "bf16", False, {}),
    ("small", 8, "fp32", False, {}),
    ("small", 8, "fp32", True, {}),
    ("llama-15m", 4, "fp32", False, {}),
    ("aksis-small", 2, "fp32", False, {"context_length": 256}),
    ("tiny", 16, "fp32", False, {"dropout": 0.1}),
]


def peak_rss_bytes() -> int:
    # Linux reports kilobytes, macOS bytes.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def child(spec: dict[str, Any]) -> dict[str, int]:
    baseline = peak_rss_bytes()
    import contextlib

    import torch

    from scratchlm.config import preset_config
    from scratchlm.model import build_model
    from scratchlm.training.activation_checkpointing import apply_activation_checkpointing
    from scratchlm.training.memory import TensorMemoryTracker
    from scratchlm.training.optim import build_optimizer
    from scratchlm.training.token_weights import weighted_cross_entropy

    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = preset_config(spec["preset"], **spec["overrides"])
    batch, length = spec["micro_batch"], config.context_length
    inputs = torch.randint(0, config.vocab_size, (batch, length))
    targets = torch.randint(0, config.vocab_size, (batch, length))
    baseline = max(baseline, peak_rss_bytes())  # torch imported, before any model memory
    tracker = TensorMemoryTracker() if spec["track_tensors"] else None
    with tracker if tracker is not None else contextlib.nullcontext():
        model = build_model(config)
        if spec["activation_checkpointing"]:
            apply_activation_checkpointing(model)
        model.train()
        optimizer = build_optimizer(
            model,
            learning_rate=1e-3,
            weight_decay=0.1,
            betas=(0.9, 0.95),
            device=torch.device("cpu"),
        )
        autocast = (
            torch.autocast("cpu", dtype=torch.bfloat16)
            if spec["precision"] == "bf16"
            else contextlib.nullcontext()
        )
        for _ in range(spec.get("steps", 2)):
            with autocast:
                logits = model(
                    inputs
                )  # (B, T, padded_vocab), held through backward as in the trainer
                loss = weighted_cross_entropy(logits, targets, None)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            del logits, loss
    if tracker is not None:
        return {"tensors": tracker.peak}
    return {"rss": peak_rss_bytes() - baseline}


def measure(spec: dict[str, Any]) -> dict[str, int]:
    result = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    from scratchlm.config import preset_config
    from scratchlm.training.memory import estimate_training_bytes

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, 1 torch thread")
    header = (
        f"{'case':44s} {'est. tensors':>12s} {'tensors':>9s} {'ratio':>6s} {'estimate':>9s} "
        f"{'rss':>9s} {'ratio':>6s}"
    )
    print(header)
    mib = float(1 << 20)
    for preset, micro_batch, precision, checkpointing, overrides in CASES:
        spec = {
            "preset": preset,
            "micro_batch": micro_batch,
            "precision": precision,
            "activation_checkpointing": checkpointing,
            "overrides": overrides,
        }
        tensors = measure({**spec, "track_tensors": True, "steps": 2})["tensors"]
        rss = measure({**spec, "track_tensors": False, "steps": 8})["rss"]
        config = preset_config(preset, **overrides)
        parts = estimate_training_bytes(
            config, micro_batch, precision=precision, activation_checkpointing=checkpointing
        )
        estimate = parts["total"]
        tensor_parts = estimate - parts["runtime"] - parts["allocator"]
        extra = ",".join(f"{key}={value}" for key, value in overrides.items())
        name = f"{preset} b{micro_batch} {precision}{' ac' if checkpointing else ''} {extra}"
        print(
            f"{name:44s} {tensor_parts / mib:11.1f}M {tensors / mib:8.1f}M "
            f"{tensor_parts / tensors:6.2f} {estimate / mib:8.1f}M {rss / mib:8.1f}M "
            f"{estimate / rss:6.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
