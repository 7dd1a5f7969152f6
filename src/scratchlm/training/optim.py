"""AdamW with decay on weight matrices only, and the learning-rate schedules."""

from __future__ import annotations

import math

import torch
from torch import nn

SCHEDULES = ("cosine", "wsd", "constant")


def build_optimizer(
    model: nn.Module,
    *,
    learning_rate: float,
    weight_decay: float,
    betas: tuple[float, float],
    device: torch.device,
) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices (dim >= 2: linear weights, embeddings), none on norms and
    biases. Fused kernels where this PyTorch has them for the device."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        (decay if parameter.dim() >= 2 else no_decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    fused = device.type in ("cuda", "cpu", "mps")
    try:
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=fused)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas)


def learning_rate_at(
    step: int,
    progress: float,
    *,
    peak: float,
    warmup_steps: int,
    schedule: str,
    min_ratio: float,
    decay_fraction: float,
) -> float:
    """Learning rate for optimizer step `step` (0-based) at run progress in [0, 1].

    Progress is the fraction of the binding budget used (steps, tokens or time), so the same
    schedule shape serves step-, token- and time-limited runs.
    - warmup: linear from peak/warmup_steps to peak over the first `warmup_steps` steps;
    - cosine: then cosine from peak down to min_ratio * peak at progress 1;
    - wsd (warmup-stable-decay): peak until progress 1 - decay_fraction, then linear to the floor;
    - constant: peak.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = min(max(progress, 0.0), 1.0)
    floor = peak * min_ratio
    if schedule == "cosine":
        return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))
    if schedule == "wsd":
        decay_start = 1.0 - decay_fraction
        if progress <= decay_start or decay_fraction <= 0:
            return peak
        return peak - (peak - floor) * (progress - decay_start) / decay_fraction
    return peak
