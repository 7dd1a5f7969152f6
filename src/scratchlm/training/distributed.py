"""Data-parallel training on PyTorch's own engine: torchrun + DDP, or FSDP2 (`fully_shard`).

`torchrun --nproc_per_node=N -m scratchlm train ...` starts N processes with RANK, LOCAL_RANK and
WORLD_SIZE in their environment; `init_distributed` turns that into a process group (NCCL on
GPUs, gloo on CPU) and one device per process. Without torchrun everything here is a no-op and the
trainer runs as one process.

Checkpoints are world-size independent: the model and optimizer are always saved as *full* state
dicts keyed by parameter name (`torch.distributed.checkpoint.state_dict` gathers FSDP shards), and
the data loader's position is a global cursor. A run saved by 4 ranks resumes on 1, and back.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from scratchlm.errors import ScratchLMError


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None  # None: a single process, no process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.backend is not None


SINGLE_PROCESS = DistributedContext()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device_name: str) -> tuple[DistributedContext, str]:
    """Join the process group torchrun set up; returns (context, the device this rank uses)."""
    if not launched_by_torchrun():
        return SINGLE_PROCESS, device_name
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world_size = int(os.environ["WORLD_SIZE"])
    use_cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    if device_name.startswith("cuda:"):
        raise ScratchLMError(
            "--device cuda:N cannot be combined with torchrun (each rank takes GPU LOCAL_RANK); "
            "pass --device cuda or auto, and choose GPUs with CUDA_VISIBLE_DEVICES"
        )
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise ScratchLMError(
                f"rank {rank} wants GPU {local_rank} but only {torch.cuda.device_count()} are "
                "visible; lower --nproc_per_node to the number of GPUs"
            )
        torch.cuda.set_device(local_rank)
        backend, device = "nccl", f"cuda:{local_rank}"
    elif device_name in ("auto", "cpu"):
        backend, device = "gloo", "cpu"
    else:
        raise ScratchLMError(
            f"--device {device_name} is not supported with torchrun; use --device cuda or cpu"
        )
    if not dist.is_initialized():
        # A generous timeout: rank 0 may spend minutes tokenizing data while the others wait.
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=60))
    return DistributedContext(rank, local_rank, world_size, backend), device


def shutdown(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        # Without this barrier a rank that finishes first can tear down the group while another
        # is still inside a collective (gloo aborts the process).
        dist.barrier()
        dist.destroy_process_group()


def local_world_size(context: DistributedContext) -> int:
    """How many of this run's processes run on this host (torchrun's LOCAL_WORLD_SIZE): they
    share its RAM."""
    if not context.enabled:
        return 1
    return int(os.environ.get("LOCAL_WORLD_SIZE", context.world_size))


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        dist.barrier()


def all_reduce_mean(value: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """The mean over ranks (gloo has no AVG op: sum, then divide)."""
    if not context.enabled:
        return value
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / context.world_size


def max_over_ranks(value: int, context: DistributedContext, device: torch.device) -> int:
    """The largest of the ranks' values, on every rank (a stop signal any rank received stops
    them all at the same step)."""
    if not context.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def broadcast_object(value: Any, context: DistributedContext) -> Any:
    """Rank 0's value on every rank (used for decisions that must agree, like stopping)."""
    if not context.enabled:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather_objects(value: Any, context: DistributedContext) -> list[Any]:
    """Every rank's value, in rank order, on every rank."""
    if not context.enabled:
        return [value]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


@contextmanager
def main_process_first(context: DistributedContext) -> Iterator[None]:
    """Rank 0 runs the block first (tokenizer training, data preparation: results are cached on
    disk), then the other ranks run it and find the cache."""
    if context.enabled and not context.is_main:
        dist.barrier()
    yield
    if context.enabled and context.is_main:
        dist.barrier()


# --- wrapping -------------------------------------------------------------------------------------


def mixed_precision_policy(precision: str) -> MixedPrecisionPolicy:
    """FSDP2: parameters are all-gathered in the compute dtype; gradients are reduced in fp32 so
    summing many ranks' gradients loses nothing."""
    if precision == "bf16":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def shard_model(model: nn.Module, precision: str) -> None:
    """FSDP2 in place: each transformer block is one unit (its parameters are gathered just
    before it runs and freed after), and the root holds the embeddings, final norm and head."""
    if precision == "fp16":
        raise ScratchLMError(
            "--fsdp with --precision fp16 is not supported (FSDP2 needs a sharded gradient "
            "scaler); use --precision bf16 or fp32"
        )
    policy = mixed_precision_policy(precision)
    blocks = getattr(model, "blocks")  # noqa: B009 (any model with a `blocks` ModuleList)
    for block in blocks:
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)


def wrap_data_parallel(model: nn.Module, context: DistributedContext, device: torch.device) -> Any:
    """DDP: every rank holds the whole model; gradients are all-reduced during backward."""
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def gradient_sync(wrapped: Any, fsdp: bool, sync: bool) -> Any:
    """Skip the gradient all-reduce on all but the last micro-batch of an accumulation."""
    if fsdp:
        wrapped.set_requires_gradient_sync(sync)
        return nullcontext()
    if hasattr(wrapped, "no_sync") and not sync:
        return wrapped.no_sync()
    return nullcontext()


# --- world-size independent state ------------------------------------------------------------------


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's tensors on CPU (FSDP shards gathered; every rank must call this; only
    rank 0 receives the tensors, other ranks get an empty dict under FSDP)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(model, options=options)
    return {name: value for name, value in state.items() if isinstance(value, torch.Tensor)}


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer state keyed by parameter name, full (not sharded), on CPU."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(model, optimizer, options=options)


def load_full_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a full state dict on every rank (each rank keeps its own shard under FSDP)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    values: dict[str, Any] = dict(state)
    set_model_state_dict(model, values, options=StateDictOptions(full_state_dict=True))


def load_full_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Load an optimizer state saved by `full_optimizer_state` (any world size), or the older
    index-keyed `optimizer.state_dict()` format of single-process checkpoints."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    keys = list(state.get("state", {}))
    if keys and isinstance(keys[0], int):
        optimizer.load_state_dict(state)
        return
    set_optimizer_state_dict(
        model, optimizer, state, options=StateDictOptions(full_state_dict=True)
    )
