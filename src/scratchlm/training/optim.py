"""The optimizers (AdamW with decay on weight matrices only; Muon for the blocks' matrices with
AdamW for the rest) and the learning-rate schedules."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from scratchlm.errors import ScratchLMError

SCHEDULES = ("cosine", "wsd", "constant")
OPTIMIZERS = ("adamw", "muon")


def build_optimizer(
    model: nn.Module,
    *,
    learning_rate: float,
    weight_decay: float,
    betas: tuple[float, float],
    device: torch.device,
    kind: str = "adamw",
) -> torch.optim.Optimizer:
    """`adamw`: AdamW; weight decay on matrices (dim >= 2: linear weights, embeddings), none on
    norms and biases; fused kernels where this PyTorch has them for the device.
    `muon`: `MuonAdamW`, Muon for the transformer blocks' weight matrices and AdamW for the rest."""
    if kind == "muon":
        return build_muon(
            model,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            betas=betas,
            device=device,
        )
    if kind != "adamw":
        raise ScratchLMError(f"unknown optimizer {kind!r}; use one of {', '.join(OPTIMIZERS)}")
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


# --- Muon -----------------------------------------------------------------------------------------


def newton_schulz_dtype(device_type: str) -> torch.dtype:
    """bf16 on GPUs, where it is fast and precise enough (modded-nanogpt runs it so); fp32 on
    CPU. bf16 there was measured slower on the clock even on a CPU with AVX-512 BF16 (the
    speedrun's best recipe: 8,400-9,100 against 9,600-10,600 tokens/s with 2 threads; equal
    loss at equal tokens; docs/speedrun.md)."""
    return torch.bfloat16 if device_type == "cuda" else torch.float32


def orthogonalize(matrix: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """The nearest semi-orthogonal matrix to `matrix` (its U V^T), approximately, by a quintic
    Newton-Schulz iteration (Keller Jordan's coefficients, tuned to push every singular value
    into about [0.7, 1.2] in 5 steps, which trains as well as the exact U V^T and costs a few
    matmuls). Works on a stack (..., rows, columns) of matrices at once: batching the matrices
    of one shape turns hundreds of tiny matmuls per step into a few (per-op overhead dominates
    at small sizes on CPU). Runs in `newton_schulz_dtype`."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = matrix.to(newton_schulz_dtype(matrix.device.type))
    tall = x.shape[-2] > x.shape[-1]
    if tall:  # iterate on the short side: X X^T is the smaller Gram matrix
        x = x.mT
    # each matrix scaled so its singular values are <= 1, where the iteration converges
    x = x / (torch.linalg.matrix_norm(x, keepdim=True) + 1e-7)
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    if tall:
        x = x.mT
    return x.to(matrix.dtype)


class MuonAdamW(torch.optim.Optimizer):
    """One optimizer with two kinds of parameter groups (`use_muon` True or False), so the
    trainer, the schedules, GradScaler and world-size independent checkpoints see one optimizer.

    Muon groups (hidden weight matrices): Nesterov momentum, then the update is orthogonalized
    (`orthogonalize`) and scaled to the RMS of an AdamW update (0.2 * sqrt(max(rows, cols)),
    Moonshot's "Muon is scalable", 2025), so AdamW's learning-rate scale and weight decay carry
    over (at our sizes twice AdamW's rate measured best: `default_learning_rate`). AdamW groups
    (embeddings, head, norms, biases): plain AdamW, at the same rate."""

    def __init__(self, groups: list[dict[str, Any]], *, learning_rate: float) -> None:
        defaults = {
            "lr": learning_rate,
            "weight_decay": 0.0,
            "momentum": 0.95,
            "nesterov": True,
            "ns_steps": 5,
            "betas": (0.9, 0.95),
            "eps": 1e-8,
            "use_muon": False,
        }
        super().__init__(groups, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["use_muon"]:
                self._muon_step(group)
            else:
                self._adamw_step(group)
        return loss

    def _muon_step(self, group: dict[str, Any]) -> None:
        lr, decay, momentum = group["lr"], group["weight_decay"], group["momentum"]
        by_shape: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        for parameter in group["params"]:
            if parameter.grad is None:
                continue
            gradient = parameter.grad
            state = self.state[parameter]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(gradient)
            buffer = state["momentum_buffer"]
            buffer.mul_(momentum).add_(gradient)
            update = gradient.add(buffer, alpha=momentum) if group["nesterov"] else buffer
            by_shape.setdefault(tuple(parameter.shape), []).append((parameter, update))
        for (rows, columns), pairs in by_shape.items():
            # (count, rows, columns): all matrices of one shape orthogonalized together
            directions = orthogonalize(
                torch.stack([update for _, update in pairs]), group["ns_steps"]
            )
            scale = -lr * 0.2 * math.sqrt(max(rows, columns))
            for (parameter, _), direction in zip(pairs, directions, strict=True):
                parameter.mul_(1.0 - lr * decay)
                parameter.add_(direction, alpha=scale)

    def _adamw_step(self, group: dict[str, Any]) -> None:
        """AdamW with `_foreach` ops: a dozen kernel launches per group, not a dozen per
        parameter."""
        lr, decay, eps = group["lr"], group["weight_decay"], group["eps"]
        beta1, beta2 = group["betas"]
        parameters = [parameter for parameter in group["params"] if parameter.grad is not None]
        if not parameters:
            return
        for parameter in parameters:
            state = self.state[parameter]
            if "step" not in state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(parameter)
                state["exp_avg_sq"] = torch.zeros_like(parameter)
        states = [self.state[parameter] for parameter in parameters]
        gradients = [parameter.grad for parameter in parameters]
        averages = [state["exp_avg"] for state in states]
        squares = [state["exp_avg_sq"] for state in states]
        steps = [state["step"] for state in states]
        torch._foreach_add_(steps, 1.0)
        torch._foreach_lerp_(averages, gradients, 1.0 - beta1)
        torch._foreach_mul_(squares, beta2)
        torch._foreach_addcmul_(squares, gradients, gradients, value=1.0 - beta2)
        counts = [float(step) for step in steps]
        denominators = torch._foreach_sqrt(squares)
        torch._foreach_div_(denominators, [math.sqrt(1.0 - beta2**count) for count in counts])
        torch._foreach_add_(denominators, eps)
        if decay:
            torch._foreach_mul_(parameters, 1.0 - lr * decay)
        torch._foreach_addcdiv_(
            parameters,
            averages,
            denominators,
            [-lr / (1.0 - beta1**count) for count in counts],
        )


def build_muon(
    model: nn.Module,
    *,
    learning_rate: float,
    weight_decay: float,
    betas: tuple[float, float],
    device: torch.device,
) -> MuonAdamW:
    """Muon for every 2-D weight inside the transformer blocks; AdamW for the embeddings and the
    output head (they map tokens, not hidden features: Muon's orthogonal updates do not suit
    them), with decay, and for norms and biases without."""
    del device  # the same code on every device
    muon: list[nn.Parameter] = []
    adam_decay: list[nn.Parameter] = []
    adam_plain: list[nn.Parameter] = []
    seen: set[int] = set()
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad or id(parameter) in seen:
            continue
        seen.add(id(parameter))
        if name.startswith("blocks.") and parameter.dim() == 2:
            muon.append(parameter)
        elif parameter.dim() >= 2:
            adam_decay.append(parameter)
        else:
            adam_plain.append(parameter)
    groups = [
        {"params": muon, "use_muon": True, "weight_decay": weight_decay},
        {"params": adam_decay, "use_muon": False, "weight_decay": weight_decay, "betas": betas},
        {"params": adam_plain, "use_muon": False, "weight_decay": 0.0, "betas": betas},
    ]
    return MuonAdamW([group for group in groups if group["params"]], learning_rate=learning_rate)


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
