"""Quantized weights for CPU decoding: q8 / q4 blocks (GGUF's Q8_0 / Q4_0) or bf16, read by the
fused decode kernels (scratchlm.inference.kernels).

Decoding one token at batch 1 reads every weight once, so its speed is bytes of weights over memory
bandwidth: q8 reads 1.0625 bytes per weight, q4 0.5625, bf16 2, against fp32's 4. Every linear
layer (q/k/v/o, gate/up/down, lm_head; a tied head gets its own copy) is packed; embeddings, norms
and biases stay fp32. Each packed layer's weight is a `PackedWeight`: the kernel reads its
blocks (decode steps, batches and prompts of every length), and every PyTorch path (prompt
scoring, a fallback) reads it as the dequantized values, made per op. Both compute with the same
weights, and the linear layers take their packed bytes only, not an fp32 copy on top. Where the
kernels cannot run (SCRATCHLM_KERNELS=0, no compiler) every step is a PyTorch step, so the model
holds plain fp32 weights of the dequantized values instead. Formats and scale rules:
scratchlm.inference.kernels.quant.

With a checkpoint directory the packed weights are written once beside it
(`quantized-q8.safetensors`, ..., keyed by a checksum of the weights they were made from; under
the scratchlm cache directory when the checkpoint's is read-only) and reused by later loads; a file
made from other weights is ignored and rewritten.

The earlier `int8` (fbgemm dynamic quantization) is retired: q8 decodes faster at every size
measured (docs/benchmarks.md); `--quantize int8` says so.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from scratchlm.data.sources import default_cache_root
from scratchlm.errors import ScratchLMError
from scratchlm.inference.kernels.loader import kernels_enabled, load_library
from scratchlm.inference.kernels.quant import (
    BLOCK,
    FORMAT_VERSION,
    FORMATS,
    ROW_GROUP,
    PackedMatrix,
    attach,
    model_linears,
    pack_model,
    weights_checksum,
)
from scratchlm.io_utils import atomic_write_bytes
from scratchlm.model import GPT

logger = logging.getLogger(__name__)

QUANTIZATIONS = ("none", *FORMATS)
RETIRED = {"int8": "q8"}  # old name -> its replacement


def check_quantization(method: str) -> None:
    """Refuse an unknown or retired quantization name."""
    if method in RETIRED:
        raise ScratchLMError(
            f"--quantize {method} (fbgemm dynamic int8) was replaced by --quantize "
            f"{RETIRED[method]}, which decodes faster; use {RETIRED[method]}"
        )
    if method not in QUANTIZATIONS:
        raise ScratchLMError(f"unknown quantization {method!r}; use one of {QUANTIZATIONS}")


def packed_file_name(method: str) -> str:
    return f"quantized-{method}.safetensors"


def packed_file_candidates(checkpoint_dir: Path, method: str, checksum: str) -> list[Path]:
    """Where a checkpoint's packed weights may live: beside it, else in the scratchlm cache."""
    cached = default_cache_root() / "quantized" / f"{checksum[:32]}-{packed_file_name(method)}"
    return [checkpoint_dir / packed_file_name(method), cached]


def _expected(method: str, shape: torch.Size) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    """The dtype and shape of each stored part of a weight (out_features, in_features)."""
    rows, columns = shape
    if method == "bf16":
        return {"data": (torch.bfloat16, (rows, columns))}
    blocks, groups = -(-columns // BLOCK), -(-rows // ROW_GROUP)
    width = ROW_GROUP * (BLOCK if method == "q8" else BLOCK // 2)
    dtype = torch.int8 if method == "q8" else torch.uint8
    return {
        "data": (dtype, (groups, blocks, width)),
        "scales": (torch.float16, (groups * ROW_GROUP, blocks)),
    }


def read_packed(
    path: Path, model: GPT, method: str, checksum: str
) -> dict[str, PackedMatrix] | None:
    """The packed matrices stored at `path`, or None when it is missing, unreadable, or made from
    other weights or by another format version (stale)."""
    if not path.is_file():
        return None
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if (
                metadata.get("weights_sha256") != checksum
                or metadata.get("format") != method
                or metadata.get("format_version") != FORMAT_VERSION
            ):
                logger.info("ignoring stale quantized weights %s (made from other weights)", path)
                return None
            matrices: dict[str, PackedMatrix] = {}
            for name, linear in model_linears(model):
                parts: dict[str, torch.Tensor] = {}
                for part, (dtype, shape) in _expected(method, linear.weight.shape).items():
                    tensor = handle.get_tensor(f"{name}.{part}")
                    if tensor.dtype != dtype or tuple(tensor.shape) != shape:
                        return None
                    parts[part] = tensor
                rows, columns = linear.weight.shape
                matrices[name] = PackedMatrix(
                    method, parts["data"], parts.get("scales"), rows, columns
                )
    except (OSError, ValueError, RuntimeError, safetensors.SafetensorError) as error:
        logger.info("ignoring unreadable quantized weights %s: %s", path, error)
        return None
    return matrices


def write_packed(path: Path, matrices: dict[str, PackedMatrix], method: str, checksum: str) -> None:
    """Write packed matrices atomically (raises OSError when `path` cannot be written)."""
    tensors: dict[str, torch.Tensor] = {}
    for name, matrix in matrices.items():
        tensors[f"{name}.data"] = matrix.data.contiguous()
        if matrix.scales is not None:
            tensors[f"{name}.scales"] = matrix.scales.contiguous()
    metadata = {"format": method, "format_version": FORMAT_VERSION, "weights_sha256": checksum}
    atomic_write_bytes(path, safetensors.torch.save(tensors, metadata=metadata))


def _packed_for_checkpoint(
    model: GPT, method: str, checksum: str, checkpoint_dir: Path
) -> dict[str, PackedMatrix]:
    """The checkpoint's packed weights: read from a valid file, else made and written (beside the
    checkpoint, else in the cache when that directory cannot be written)."""
    candidates = packed_file_candidates(checkpoint_dir, method, checksum)
    for path in candidates:
        matrices = read_packed(path, model, method, checksum)
        if matrices is not None:
            logger.debug("reusing quantized weights %s", path)
            return matrices
    matrices = pack_model(model, method)
    for path in candidates:
        try:
            write_packed(path, matrices, method, checksum)
        except OSError as error:
            logger.debug("cannot write quantized weights to %s: %s", path, error)
            continue
        logger.info("wrote quantized weights to %s", path)
        break
    else:
        logger.warning(
            "scratchlm: could not save the %s weights (beside the checkpoint or in %s); they "
            "will be quantized again at the next start",
            method,
            default_cache_root(),
        )
    return matrices


def kernels_available() -> bool:
    """Whether the decode kernels run here (enabled, and built or buildable)."""
    return kernels_enabled() and load_library() is not None


def quantize_for_cpu(
    model: GPT,
    method: str = "q8",
    *,
    checkpoint_dir: str | Path | None = None,
    inplace: bool = False,
) -> GPT:
    """`model` with its linear layers in format `method` for the CPU decode kernels (a copy unless
    `inplace`; "none" returns `model` itself). With `checkpoint_dir` (the checkpoint the weights
    came from) the packed weights are read from / written to a file beside it."""
    check_quantization(method)
    if method == "none":
        return model
    if model.token_embedding.weight.device.type != "cpu":
        raise ScratchLMError(
            f"--quantize {method} runs on CPU only; on a GPU use --precision bf16 instead"
        )
    if model.token_embedding.weight.dtype != torch.float32:
        raise ScratchLMError(
            f"--quantize {method} starts from fp32 weights; drop --precision or use fp32"
        )
    if not inplace:
        model = copy.deepcopy(model)
    checksum = weights_checksum(model, method)
    if checkpoint_dir is None:
        matrices = pack_model(model, method)
    else:
        matrices = _packed_for_checkpoint(model, method, checksum, Path(checkpoint_dir))
    attach(model, matrices, method, checksum, keep_fp32=not kernels_available())
    return model
