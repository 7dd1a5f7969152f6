"""Fitting a run in memory: a training-memory estimate, the automatic micro-batch
(`--micro-batch auto`), gradient accumulation, and a one-line out-of-memory message
(activation checkpointing, the other way to fit, is in activation_checkpointing.py).

How the pieces fit in the trainer:
- `auto_micro_batch(...)` picks the micro-batch: on CPU from the estimate and the available RAM,
  on CUDA by probing real forward+backward passes (`search_micro_batch`);
- `derive_accumulation(...)` turns --tokens-per-step into accumulation steps;
- `is_out_of_memory(error)` / `out_of_memory_message(...)` turn an OOM mid-run into one line that
  names the flags to change.
"""

from __future__ import annotations

import functools
import gc
import math
import os
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from scratchlm.config import ModelConfig
from scratchlm.errors import ScratchLMError

GiB = 1 << 30
# On CPU the micro-batch may use this fraction of MemAvailable: the rest is for what the estimate
# leaves out (evaluation and sampling, checkpoint writing, the data loader, the Python heap) and
# for other programs, whose use of memory changes during a long run.
CPU_SAFETY_FRACTION = 0.75
# On GPU a probed micro-batch is kept only if 10% more sequences also fit (fragmentation grows
# over a run; evaluation and checkpointing allocate too).
GPU_MARGIN = 0.1
# What a CPU training process holds beyond its tensors once the first step has run: oneDNN/MKL
# kernel buffers, OpenMP thread state, the allocator's bookkeeping (measured: 95 MiB of peak RSS
# growth for a 43 MiB step of the tiny preset, 1 thread; benchmarks/memory_estimate.py).
CPU_RUNTIME_BYTES = 128 << 20
PRECISIONS = ("fp32", "bf16", "fp16")


# --- the estimate ---------------------------------------------------------------------------------


def _activation_size(precision: str) -> int:
    if precision not in PRECISIONS:
        raise ScratchLMError(f"precision must be one of {PRECISIONS} (got {precision!r})")
    return 4 if precision == "fp32" else 2


def _norm_bytes_per_token(config: ModelConfig, act: int, consumers: int) -> int:
    """What autograd keeps for one norm and the linear layers reading its output, per token.

    The input x (the fp32 residual stream: 4 bytes); RMSNorm also x * rsqrt(mean(x²)) (fp32; on
    CPU F.rms_norm decomposes into pow/rsqrt/mul and the mul keeps it); then the linear layers'
    input: one fp32 tensor shared by all readers, or under autocast one 16-bit cast per reader
    (autocast caches casts of weights only, so q, k and v each keep their own copy).
    """
    saved = 4 + (4 if config.norm == "rmsnorm" else 0)
    saved += consumers * act if act != 4 else 4
    # plus the per-token statistics: rsqrt (RMSNorm) or mean and rstd (LayerNorm), fp32
    return saved * config.d_model + (4 if config.norm == "rmsnorm" else 8)


def layer_activation_bytes_per_token(
    config: ModelConfig, precision: str, *, device_type: str = "cpu"
) -> int:
    """Bytes autograd keeps per token for one transformer block (forward done, backward pending).

    The method of Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
    Transformer Models", section 4: 34*h + 5*a*s bytes per token and layer for a 16-bit GPT-3
    block), redone for this Block by listing the tensors each op saves for its backward. With
    d = d_model, hq = n_head*head_dim, hkv = n_kv_head*head_dim, f = ffn_hidden and s the
    activation size (4 bytes in fp32, 2 under bf16/fp16 autocast; the residual stream and the
    norms' internals stay fp32 because the master weights do):
      - two norms (`_norm_bytes_per_token`): 4d (+4d for RMSNorm's x * rsqrt) + the linear
        layers' input (4d, or one 16-bit copy per reading layer under autocast) + statistics;
      - QK-norm: q and k before and after normalization, fp32: 8 * (hq + hkv);
      - attention: q, k, v, the output and the o_proj input (a copy when the kernel's output
        layout is (B, heads, T, dim)): s * (3*hq + 2*hkv), plus the log-sum-exp (4 * n_head).
        The T x T scores are NOT stored: CUDA's flash/memory-efficient kernels never
        materialize them, and neither does PyTorch's CPU flash kernel, which serves training
        without dropout (torch 2.13: `_scaled_dot_product_flash_attention_for_cpu`). With
        dropout off CUDA, SDPA takes the math path and stores fp32 scores, probabilities,
        dropout mask and dropped probabilities: 13 bytes per score, n_head * T scores per token;
      - MLP: SwiGLU keeps gate, silu(gate), up and their product (4*f*s); GELU, GELU-tanh,
        Leaky ReLU and ReLU² keep the pre- and post-activation (2*f*s);
      - dropout > 0: the two residual dropout masks.
    Checked against autograd's saved tensors in tests/training/test_memory.py (fp32 and bf16;
    SwiGLU/GELU/ReLU², RMSNorm/LayerNorm, MHA/GQA, QK-norm, dropout): 0-8% above, never below.
    For tiny (d 128, f 384) that is 11,800 bytes per token in fp32, about 92*d, against
    Korthikanti's 34*d (16-bit, no SwiGLU, no fp32 norm internals).
    """
    assert config.n_kv_head is not None and config.head_dim is not None
    assert config.ffn_hidden is not None
    act = _activation_size(precision)
    d, f = config.d_model, config.ffn_hidden
    hq, hkv = config.n_head * config.head_dim, config.n_kv_head * config.head_dim
    swiglu = config.mlp == "swiglu"
    total = _norm_bytes_per_token(config, act, 3) + _norm_bytes_per_token(
        config, act, 2 if swiglu else 1
    )
    if config.qk_norm:
        total += 8 * (hq + hkv) + 4 * (config.n_head + config.n_kv_head)
    total += act * (3 * hq + 2 * hkv) + 4 * config.n_head
    total += (4 if swiglu else 2) * f * act
    if config.dropout > 0:
        total += 2 * 4 * d  # the two residual dropout masks
        if device_type != "cuda":
            # math-path SDPA (CPU/MPS, even under autocast): fp32 scores, probabilities, dropout
            # mask and dropped probabilities, 4 + 4 + 1 + 4 bytes per score, and an fp32 copy
            # of the output
            total += 13 * config.n_head * config.context_length + 4 * hq
    return total


def estimate_training_bytes(
    config: ModelConfig,
    micro_batch: int,
    *,
    precision: str,
    activation_checkpointing: bool,
    optimizer_states: int = 2,
    device_type: str = "cpu",
    shards: int = 1,
) -> dict[str, int]:
    """Peak memory of one process's training step at `micro_batch` sequences of
    config.context_length tokens, in bytes: the parts below and their sum, "total".

      parameters, gradients, optimizer: 4 bytes per parameter each, AdamW keeping
        `optimizer_states` (2) fp32 tensors per parameter. Master weights stay fp32 under
        autocast. Gradients are counted together with the activations because under gradient
        accumulation they live through every micro-batch's forward after the first.
      weight_copies: autocast's 16-bit weight copies, kept for the matmuls' backward (2 bytes per
        parameter; 0 in fp32).
      activations: what autograd stores: n_layer * `layer_activation_bytes_per_token` per token;
        with activation checkpointing only every block's input (fp32, 4 * d_model per token and
        layer). Plus the final norm (and the embedding norm), and the int64 batch.
      logits: (B, T, padded_vocab) in the activation dtype, held by the trainer through backward
        (twice with soft-capping, which keeps its tanh output).
      workspace: the largest transient; they happen at different moments of the step, so only
        one counts: the loss (log-softmax output, then the gradients of it and of the logits, all
        fp32, plus the float copy of 16-bit logits: 12-16 bytes per logit), backward through one
        block (the gradients of its activations, budgeted at one layer's worth, measured under
        half; with checkpointing also the recomputed block: 1.5 layers, measured 1.1-1.3), or
        AdamW's per-parameter temporaries during its step (when the activations are freed).
      gathered (FSDP, `shards` > 1): parameters, gradients and optimizer states above are split
        over the `shards` ranks, and FSDP2 gathers whole weights only while they are needed, in
        the compute dtype: the root's (embeddings, head, final norm: gathered for the whole
        step), two blocks' (the one running and the next, prefetched) and one all-gather buffer;
        and whole fp32 gradients: the root's, one block's and its reduce-scatter copy. The
        gathered weights replace autocast's copies. Checked against two gloo ranks' peak of
        live tensors (tests/training/test_memory.py).
      runtime, allocator (CPU only): PyTorch's kernel and thread buffers (CPU_RUNTIME_BYTES), and
        memory the C allocator holds beyond the live tensors. glibc malloc keeps freed blocks of
        the per-step tensors for reuse, fragmented: measured peak RSS after 30 steps is 1.3x the
        live tensors' peak without checkpointing and 1.7x with it (its recomputation churns
        more). Counted as 35% / 80% of the per-step tensors (activations, logits, workspace).

    Calibration (benchmarks/memory_estimate.py; CPU, 1 thread, torch 2.13, glibc; 10 cases from
    tiny at batch 1 to llama-15m and aksis-small, fp32/bf16, with and without checkpointing and
    dropout): the tensor parts (total minus runtime and allocator) are 1.01-1.20x the measured
    peak of live tensor bytes, the total is 1.11-1.33x the peak RSS growth of a fresh process
    over 8 training steps, except `small` at batch 8 with checkpointing: its RSS varied from 694
    to 775 MiB over 6 runs against an estimate of 742 (0.96-1.07x). A flat share of the per-step
    tensors is the estimate's roughest term; CPU_SAFETY_FRACTION covers the gap. Table in docs/training.md#fitting-memory. On CUDA (no
    runtime/allocator terms: the caching allocator shows in the probe) the probe decides.
    """
    if micro_batch < 1:
        raise ScratchLMError(f"micro_batch must be >= 1 (got {micro_batch})")
    if optimizer_states < 0:
        raise ScratchLMError(f"optimizer_states must be >= 0 (got {optimizer_states})")
    if shards < 1:
        raise ScratchLMError(f"shards must be >= 1 (got {shards})")
    assert config.padded_vocab_size is not None
    act = _activation_size(precision)
    tokens = micro_batch * config.context_length
    n_params = config.n_params
    layer = layer_activation_bytes_per_token(config, precision, device_type=device_type)
    d = config.d_model
    # With checkpointing only every block's input (the fp32 residual, (B, T, d_model)) is stored;
    # the block being recomputed in backward is a transient (below).
    blocks = config.n_layer * (4 * d if activation_checkpointing else layer)
    outside_blocks = _norm_bytes_per_token(config, act, 1)  # the final norm
    if config.embedding_norm:
        outside_blocks += 8 * d  # the embedding output and its normalized form (fp32)
    outside_blocks += 16  # int64 inputs and targets
    activations = tokens * (blocks + outside_blocks)
    vocab_tokens = tokens * config.padded_vocab_size
    logits = vocab_tokens * (act + (act if config.logit_softcap is not None else 0))
    loss_workspace = vocab_tokens * (4 + 8 + (4 if act != 4 else 0))
    block_workspace = tokens * layer * (3 if activation_checkpointing else 2) // 2
    # Under FSDP each rank holds 1/shards of every parameter (and its gradient and states).
    local_params = math.ceil(n_params / shards)
    optimizer_workspace = 4 * local_params - activations
    workspace = max(loss_workspace, block_workspace, optimizer_workspace, 0)
    per_step = activations + logits + workspace
    on_cpu = device_type == "cpu"
    gathered = 0
    if shards > 1:
        per_layer = config.parameter_counts()["n_params_per_layer"]
        root = n_params - config.n_layer * per_layer
        # weights: the root, the running block, the prefetched next one, and one all-gather
        # buffer being copied out; fp32 gradients: the root's (the tied embedding's gradient
        # lives through the whole backward), one block's, and its reduce-scatter copy
        gathered = (root + 3 * per_layer) * act + (root + 2 * per_layer) * 4
    parts = {
        "parameters": 4 * local_params,
        "gradients": 4 * local_params,
        "optimizer": 4 * optimizer_states * local_params,
        "weight_copies": 2 * n_params if act != 4 and shards == 1 else 0,
        "gathered": gathered,
        "activations": activations,
        "logits": logits,
        "workspace": workspace,
        "runtime": CPU_RUNTIME_BYTES if on_cpu else 0,
        "allocator": (per_step * (80 if activation_checkpointing else 35)) // 100 if on_cpu else 0,
    }
    parts["total"] = sum(parts.values())
    return parts


# --- available memory -----------------------------------------------------------------------------


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_memory_bytes() -> int:
    """RAM this process can still use: MemAvailable, capped by a cgroup (container) limit."""
    available: int | None = None
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024  # the file says kB
                break
    except (OSError, ValueError, IndexError):
        available = None
    if available is None:
        try:
            pages = os.sysconf("SC_AVPHYS_PAGES")  # free pages (Linux); not on every OS
        except (AttributeError, ValueError, OSError):
            try:  # macOS: no available-pages count; assume half of physical memory is free
                pages = os.sysconf("SC_PHYS_PAGES") // 2
            except (AttributeError, ValueError, OSError):
                pages = 0
        available = pages * os.sysconf("SC_PAGE_SIZE") if pages > 0 else 4 * GiB
    # A container's memory limit is invisible in /proc/meminfo (it shows the host's).
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",  # cgroup v1
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        limit, usage = _read_int(Path(limit_file)), _read_int(Path(usage_file))
        if limit is not None and usage is not None and limit < 1 << 60:
            available = min(available, max(0, limit - usage))
    return available


# --- the micro-batch ------------------------------------------------------------------------------


def micro_batch_candidates(max_micro_batch: int) -> list[int]:
    """1, 2, 4, ... below max_micro_batch, then max_micro_batch itself.

    Powers of two because token budgets usually are (--tokens-per-step 524288 = 2^19): a
    power-of-two micro-batch times a power-of-two context divides them, so the derived
    accumulation hits the requested tokens per step exactly instead of overshooting by up to one
    micro-batch. (GPU matmul tiles also like them.) The maximum itself is a candidate so that a
    non-power-of-two --batch-size that fits is kept as it is.
    """
    if max_micro_batch < 1:
        raise ScratchLMError(f"the largest micro-batch must be >= 1 (got {max_micro_batch})")
    candidates = []
    batch = 1
    while batch < max_micro_batch:
        candidates.append(batch)
        batch *= 2
    candidates.append(max_micro_batch)
    return candidates


def _release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def search_micro_batch(
    probe: Callable[[int], None],
    max_micro_batch: int,
    *,
    margin: float = GPU_MARGIN,
    release: Callable[[], None] = _release_memory,
) -> tuple[int, str]:
    """The largest candidate micro-batch (see `micro_batch_candidates`) for which `probe` runs,
    keeping `margin` headroom: (micro_batch, explanation).

    `probe(batch)` runs one forward+backward at that size and raises an out-of-memory error
    (`is_out_of_memory`) when it does not fit; other errors propagate. Doubling from 1 finds the
    largest candidate p that runs; then p is kept only if ceil(p * (1 + margin)) sequences also
    run (else the next candidate down). After each OOM `release()` frees the cache.
    Pure in the sense that matters: everything device-specific is in `probe` and `release`, so
    tests drive it with a fake probe on CPU.

    The probe must hold what the real run holds besides activations: the weights, their
    gradients and AdamW's two fp32 states (8 bytes per parameter, e.g. a reserved
    `torch.empty(8 * n_params, dtype=torch.uint8)`), or a large model passes the probe and then
    runs out of memory at its first optimizer step.
    """
    candidates = micro_batch_candidates(max_micro_batch)

    def fits(batch: int) -> bool:
        failed = False
        try:
            probe(batch)
        except Exception as error:  # re-raised below unless it is an out-of-memory error
            if not is_out_of_memory(error):
                raise
            failed = True
        # Outside the except block: the traceback's frames (holding the probe's tensors) are
        # gone, so their memory can actually be released.
        if failed:
            release()
        return not failed

    largest: int | None = None
    for batch in candidates:
        if not fits(batch):
            break
        largest = batch
    if largest is None:
        raise ScratchLMError(
            "even a micro-batch of 1 sequence runs out of memory; use --activation-checkpointing, "
            "a smaller --context-length, --precision bf16, a smaller preset, or --fsdp on several "
            "GPUs"
        )
    index = candidates.index(largest)
    with_margin = math.ceil(largest * (1 + margin))
    if with_margin > largest and not fits(with_margin):
        if index == 0:
            return largest, (
                f"micro-batch 1 (probed; {with_margin} does not fit, so there is less than "
                f"{margin:.0%} headroom)"
            )
        chosen = candidates[index - 1]
        return chosen, (
            f"micro-batch {chosen} (probed: {largest} fits but not {with_margin}, the "
            f"{margin:.0%} headroom)"
        )
    stop = (
        f"{max_micro_batch} is the largest asked for"
        if largest == max_micro_batch
        else f"{candidates[index + 1]} runs out of memory"
    )
    return largest, f"micro-batch {largest} (probed; {stop}; {with_margin} fits for headroom)"


def auto_micro_batch(
    model_config: ModelConfig,
    device: torch.device,
    *,
    precision: str,
    activation_checkpointing: bool,
    max_micro_batch: int,
    probe: Callable[[int], None] | None = None,
    available_bytes: int | None = None,
    shards: int = 1,
    ranks_per_host: int = 1,
) -> tuple[int, str]:
    """The micro-batch for `--micro-batch auto`: (micro_batch, one-line explanation).

    CUDA with a `probe`: `search_micro_batch` (real forward+backward passes decide). Otherwise
    (CPU, MPS's unified memory, CUDA without a probe, or FSDP): the largest candidate whose
    `estimate_training_bytes` total is at most CPU_SAFETY_FRACTION of the available memory
    (`available_bytes`, else MemAvailable/cgroup on CPU/MPS, free GPU memory on CUDA). Call it
    before building the model: the estimate counts the weights and optimizer states too.
    Raises ScratchLMError with the flags to change when not even one sequence fits.

    `shards` > 1 (FSDP over that many ranks): the probe is skipped, since it would train an
    unsharded model and so find less room than the sharded run has; the estimate divides the
    weights and states instead. `ranks_per_host`: processes of this run that share the host's
    RAM (torchrun's LOCAL_WORLD_SIZE on CPU), each getting its share. GPUs are one per rank.
    """
    if device.type == "cuda" and probe is not None and shards == 1:
        return search_micro_batch(probe, max_micro_batch)
    shared_by = 1 if device.type == "cuda" else max(1, ranks_per_host)
    if available_bytes is None:
        if device.type == "cuda":
            available_bytes = int(torch.cuda.mem_get_info(device)[0])
        else:
            available_bytes = available_memory_bytes()
    usable = int(available_bytes * CPU_SAFETY_FRACTION) // shared_by
    candidates = micro_batch_candidates(max_micro_batch)

    def total(batch: int) -> int:
        return estimate_training_bytes(
            model_config,
            batch,
            precision=precision,
            activation_checkpointing=activation_checkpointing,
            device_type=device.type,
            shards=shards,
        )["total"]

    fitting = [batch for batch in candidates if total(batch) <= usable]
    where = "RAM" if device.type != "cuda" else "GPU memory"
    budget = (
        f"{usable / GiB:.1f} GiB usable = {CPU_SAFETY_FRACTION:.0%} of "
        f"{available_bytes / GiB:.1f} GiB available {where}"
        + (f" / {shared_by} processes on this host" if shared_by > 1 else "")
        + (f", weights and states sharded over {shards} ranks" if shards > 1 else "")
    )
    if not fitting:
        fixes = ["a smaller --context-length", "a smaller preset"]
        if not activation_checkpointing:
            fixes.insert(0, "--activation-checkpointing")
        if device.type == "cuda" and shards == 1:
            fixes.append("--fsdp on several GPUs")
        raise ScratchLMError(
            f"even a micro-batch of 1 sequence needs about {total(1) / GiB:.2f} GiB for training "
            f"{model_config.name} at context {model_config.context_length}, more than the "
            f"{budget}; use {', '.join(fixes[:-1])} or {fixes[-1]}"
        )
    chosen = fitting[-1]
    reason = (
        f"{max_micro_batch} is the largest asked for"
        if chosen == max_micro_batch
        else f"{candidates[candidates.index(chosen) + 1]} would need "
        f"{total(candidates[candidates.index(chosen) + 1]) / GiB:.2f} GiB"
    )
    return chosen, (
        f"micro-batch {chosen} (estimated {total(chosen) / GiB:.2f} GiB of the {budget}; {reason})"
    )


def derive_accumulation(
    tokens_per_step: int | None, micro_batch: int, context_length: int, world_size: int
) -> int:
    """Micro-batches each rank accumulates per optimizer step to reach `tokens_per_step`:
    ceil(tokens_per_step / (micro_batch * context_length * world_size)), at least 1 (None: 1)."""
    if micro_batch < 1 or context_length < 1 or world_size < 1:
        raise ScratchLMError(
            f"micro_batch, context_length and world_size must be >= 1 (got {micro_batch}, "
            f"{context_length}, {world_size})"
        )
    if tokens_per_step is None:
        return 1
    if tokens_per_step < 1:
        raise ScratchLMError(f"--tokens-per-step must be >= 1 (got {tokens_per_step})")
    return max(1, math.ceil(tokens_per_step / (micro_batch * context_length * world_size)))


# --- out of memory --------------------------------------------------------------------------------

_OOM_MESSAGES = (
    "out of memory",  # CUDA ("CUDA out of memory", "CUDA error: out of memory"), ROCm, XPU
    "defaultcpuallocator: can't allocate memory",
    "mps backend out of memory",
    "cannot allocate memory",  # ENOMEM from the OS
)


def is_out_of_memory(error: BaseException) -> bool:
    """An allocation failure on any device (torch.OutOfMemoryError, or the RuntimeError/
    MemoryError that CPU and MPS raise)."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    if isinstance(error, RuntimeError):
        message = str(error).lower()
        return any(pattern in message for pattern in _OOM_MESSAGES)
    return False


def out_of_memory_message(
    micro_batch: int,
    accumulation: int,
    *,
    activation_checkpointing: bool,
    fsdp: bool,
    device: torch.device,
    precision: str | None = None,
    micro_batch_auto: bool = False,
) -> str:
    """One line for an OOM mid-run naming the flags to change (only those not already in use)."""
    fixes: list[str] = []
    if micro_batch > 1:
        keeps = (
            " (gradient accumulation keeps --tokens-per-step)"
            if accumulation > 1
            else " (with --tokens-per-step, gradient accumulation keeps the tokens per step)"
        )
        fixes.append(f"lower --batch-size{keeps}")
        if not micro_batch_auto:
            fixes.append("--micro-batch auto")
    if not activation_checkpointing:
        fixes.append("--activation-checkpointing")
    if device.type == "cuda" and not fsdp:
        fixes.append("--fsdp (several GPUs)")
    if device.type != "cpu" and precision == "fp32":
        fixes.append("--precision bf16")
    fixes.extend(["a smaller --context-length", "a smaller --preset"])
    return (
        f"out of memory at --batch-size {micro_batch} (x{accumulation} accumulation) on "
        f"{device.type}: {fixes[0]}, or use {', '.join(fixes[1:])}"
    )


# --- measuring ------------------------------------------------------------------------------------


class TensorMemoryTracker(TorchDispatchMode):
    """Peak bytes of CPU tensor storages created inside the `with` block and alive at once.

    Deterministic (it counts storages, not the allocator's pages), so tests can compare memory
    with and without activation checkpointing exactly, and the estimate can be calibrated against
    it. Storages that existed before the block (weights) are not counted. Autograd's backward on
    CPU runs in the calling thread with this mode active, so gradients are counted too.
    """

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        # id of the storage's Python object -> a weak reference to it. PyTorch keeps one Python
        # object per live storage, so views share it, and the reference dies with the storage.
        self._live: dict[int, weakref.ref[Any]] = {}

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        output = func(*args, **(kwargs or {}))
        for value in tree_flatten(output)[0]:
            if not isinstance(value, torch.Tensor) or value.device.type != "cpu":
                continue
            storage = value.untyped_storage()
            key = id(storage)
            if key not in self._live:
                self._live[key] = weakref.ref(storage, functools.partial(self._forget, key))
        # Sizes are read now, not at creation: FSDP2 resizes its unsharded weights' storages
        # (to the full size before a block runs, to 0 after), outside any dispatched op.
        self.current = sum(
            alive.nbytes()
            for reference in list(self._live.values())
            if (alive := reference()) is not None
        )
        self.peak = max(self.peak, self.current)
        return output

    def _forget(self, key: int, _dead_reference: object) -> None:
        self._live.pop(key, None)
