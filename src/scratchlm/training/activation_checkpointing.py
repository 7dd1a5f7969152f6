"""Activation checkpointing (--activation-checkpointing): each transformer block recomputes its
activations in backward instead of storing them, trading about a third more compute for memory.

`apply_activation_checkpointing(model)` is called before any `fully_shard`/DDP/compile wrapping.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from scratchlm.kv_cache import KVCache
from scratchlm.model import GPT, AttentionMask, Block


class _CheckpointedForward:
    """Replaces one Block's `forward` (an instance attribute, so no module is wrapped and the
    state_dict keys stay `blocks.{i}.attention.q_proj.weight`, ...).

    In training with gradients on, the block runs under non-reentrant `torch.utils.checkpoint`:
    autograd keeps only the block's inputs and recomputes its activations during backward (the RNG
    state is restored first, so dropout masks repeat exactly). Inference (eval mode, no_grad, or a
    KV cache) passes straight through. Composes with FSDP2: `fully_shard(block)` applied afterwards
    hooks `block.__call__`, which still calls this; its pre-backward hook gathers the parameters
    before the recomputation needs them (torchtitan's order: checkpointing first, then sharding).
    """

    def __init__(self, block: Block) -> None:
        self.block = block

    def __call__(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        mask: AttentionMask,
        kv_cache: KVCache | None,
    ) -> torch.Tensor:
        # type(block).forward, not Block.forward: fully_shard swaps in a subclass of Block.
        forward = type(self.block).forward
        if kv_cache is not None or not self.block.training or not torch.is_grad_enabled():
            return forward(self.block, x, rope, mask, kv_cache)
        output = checkpoint(forward, self.block, x, rope, mask, kv_cache, use_reentrant=False)
        assert isinstance(output, torch.Tensor)
        return output


def apply_activation_checkpointing(model: GPT) -> None:
    """Recompute each transformer block's activations in backward instead of storing them.

    Memory for activations drops from n_layer full layers to n_layer block inputs (B, T, d_model)
    plus one layer being recomputed; the price is one extra forward of the blocks (about a third
    more compute per step). Weights and gradients are unchanged: a run with and without it gives
    the same gradients, and checkpoints load either way (state_dict keys do not change).
    Call before `fully_shard` / DDP / `torch.compile`. Calling it twice is harmless.
    """
    for block in model.blocks:
        assert isinstance(block, Block)
        if isinstance(block.__dict__.get("forward"), _CheckpointedForward):
            continue
        # object.__setattr__: an instance attribute shadowing the class's forward method.
        object.__setattr__(block, "forward", _CheckpointedForward(block))


def has_activation_checkpointing(model: GPT) -> bool:
    return any(
        isinstance(block.__dict__.get("forward"), _CheckpointedForward) for block in model.blocks
    )
