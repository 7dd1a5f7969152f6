"""LoRA: low-rank adapters on linear layers; only the adapters train.

A wrapped layer computes  base(x) + dropout(x) @ A^T @ B^T * (alpha / rank)  with A (rank, in)
initialized like a linear layer and B (out, rank) at zero, so training starts from the base model
exactly. Merging folds  B @ A * (alpha / rank)  into the base weight. We use our own ~60 lines
rather than `peft`: our layers are plain nn.Linear, and owning the wrapper keeps the merged-weight
saving, adapter files and exact resume in our checkpoint format without peft's model wrappers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from scratchlm.errors import ScratchLMError
from scratchlm.model import GPT

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoRASettings:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ScratchLMError(f"--lora-rank must be >= 1, got {self.rank}")
        unknown = [target for target in self.targets if target not in LORA_TARGETS]
        if unknown or not self.targets:
            raise ScratchLMError(
                f"--lora-targets: unknown {unknown}; choose from {', '.join(LORA_TARGETS)}"
            )

    def as_dict(self) -> dict[str, object]:
        values = asdict(self)
        values["targets"] = list(self.targets)
        return values


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, settings: LoRASettings) -> None:
        super().__init__()
        self.base = base
        self.scale = settings.alpha / settings.rank
        device, dtype = base.weight.device, base.weight.dtype
        self.lora_a = nn.Parameter(
            torch.empty(settings.rank, base.in_features, device=device, dtype=dtype)
        )
        self.lora_b = nn.Parameter(
            torch.zeros(base.out_features, settings.rank, device=device, dtype=dtype)
        )
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.dropout = nn.Dropout(settings.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (self.dropout(x) @ self.lora_a.T @ self.lora_b.T) * self.scale

    def merged_weight(self) -> torch.Tensor:
        return self.base.weight + (self.lora_b @ self.lora_a) * self.scale


def apply_lora(model: GPT, settings: LoRASettings) -> int:
    """Freeze the model and wrap the target layers; returns the number of trainable parameters."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    wrapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if name in settings.targets and isinstance(child, nn.Linear):
                setattr(module, name, LoRALinear(child, settings))
                wrapped += 1
    if wrapped == 0:
        raise ScratchLMError(
            f"--lora-targets {','.join(settings.targets)} match no layer of this model"
        )
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def adapter_state(model: GPT) -> dict[str, torch.Tensor]:
    """Only the adapter matrices, by module path (e.g. blocks.0.attention.q_proj.lora_a)."""
    return {
        name: tensor.detach().contiguous()
        for name, tensor in model.state_dict().items()
        if ".lora_" in name
    }


def load_adapter_state(model: GPT, state: dict[str, torch.Tensor]) -> None:
    expected = adapter_state(model)
    if set(state) != set(expected):
        raise ScratchLMError(
            "the adapter file does not match this model and LoRA settings (different --lora-rank or "
            "--lora-targets?); resume with the run's original LoRA flags"
        )
    model.load_state_dict(state, strict=False)


def merged_state(model: GPT) -> dict[str, torch.Tensor]:
    """The model's weights in the plain layout with every adapter folded in (a tied head once)."""
    state: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if ".lora_" in name:
            continue
        state[name.replace(".base.", ".")] = tensor.detach()
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            state[f"{name}.weight"] = module.merged_weight().detach()
    if model.config.tie_embeddings:
        state.pop("lm_head.weight", None)
    return {name: tensor.contiguous() for name, tensor in state.items()}


@torch.no_grad()
def merge_lora(model: GPT) -> GPT:
    """Replace every LoRALinear by a plain Linear holding the merged weight (in place)."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                child.base.weight.copy_(child.merged_weight())
                setattr(module, name, child.base)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model
