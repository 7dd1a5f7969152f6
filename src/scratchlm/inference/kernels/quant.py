"""Block-quantized and bf16 weights for the decode kernels: the quantizers, their inverses, and the
packed copy of a model's linear layers that `decode.cpp` reads.

Formats (GGUF's block layouts, so the numbers match llama.cpp's Q8_0 / Q4_0 files up to rounding):

- `q8`: blocks of 32 weights along a row, one fp16 scale each. d = fp16(amax / 127) with amax the
  block's largest |w|; codes q = clamp(round(w / d), -127, 127) (round half to even; q = 0 when
  d = 0); w ~ q * d. 1.0625 bytes per weight.
- `q4`: blocks of 32 with one fp16 scale: m is the block's value of largest |w| (the first one on
  ties), d = fp16(m / -8), codes q = clamp(round(w / d), -8, 7) stored as q + 8 in a nibble (value j
  of a block in the low nibble of byte j, value j + 16 in its high nibble); w ~ q * d. Mapping the
  extreme value to -8 uses all 16 levels. 0.5625 bytes per weight.
- `bf16`: the weight rounded to bf16 (nearest even); the kernel widens it exactly. 2 bytes.

Rows whose length is not a multiple of 32 are padded with zero weights to whole blocks (the kernel
pads its int8 inputs with zero codes, so the padding adds nothing); `dequantize` drops it again.

The kernel reads q8/q4 codes in groups of ROW_GROUP rows stored block by block, (groups, blocks,
ROW_GROUP, block bytes) with zero rows padding the last group, so that each group is one
sequential stream (`interleave_rows`); the fp16 scales stay (rows padded to the group, blocks).
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_map

from scratchlm.errors import ScratchLMError
from scratchlm.model import GPT, Block

BLOCK = 32  # weights per q8/q4 block (GGUF's QK8_0 and QK4_0)
ROW_GROUP = 4  # rows per interleaved q8/q4 group (decode.cpp's kQRowGroup)
FORMATS = ("q8", "q4", "bf16")
# decode.cpp's WeightType values
WEIGHT_TYPES = {"f32": 0, "q8": 1, "q4": 2, "bf16": 3}
# Changes whenever the packed layout or a scale rule changes: files written before are stale.
FORMAT_VERSION = "1"
_FP16_MAX = 65504.0


def _blocks(weight: torch.Tensor) -> torch.Tensor:
    """(N, K) fp32 -> (N, blocks, 32), zero-padded to whole blocks."""
    rows, columns = weight.shape
    padded = -(-columns // BLOCK) * BLOCK
    if padded != columns:
        weight = nn.functional.pad(weight, (0, padded - columns))
    return weight.reshape(rows, padded // BLOCK, BLOCK)


def _fp16_scales(scales: torch.Tensor) -> torch.Tensor:
    if bool((scales.abs() > _FP16_MAX).any()):
        raise ScratchLMError(
            "a weight is too large for fp16 block scales (|w| > 8e6); this checkpoint cannot be "
            "block-quantized, use --quantize bf16 or none"
        )
    return scales.to(torch.float16)


def quantize_q8_0(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) fp32 -> codes (N, padded K) int8 and scales (N, padded K / 32) fp16."""
    blocks = _blocks(weight.detach().float())
    scales = _fp16_scales(blocks.abs().amax(dim=-1) / 127.0)  # (N, blocks)
    d = scales.float().unsqueeze(-1)
    inverse = torch.where(d > 0, 1.0 / d, torch.zeros_like(d))
    codes = torch.round(blocks * inverse).clamp(-127, 127).to(torch.int8)
    return codes.reshape(weight.shape[0], -1), scales


def dequantize_q8_0(codes: torch.Tensor, scales: torch.Tensor, columns: int) -> torch.Tensor:
    """The fp32 weights (N, columns) that q8 codes and scales stand for."""
    rows = codes.shape[0]
    # In place: a PackedWeight dequantizes at every PyTorch op that reads it, and a broadcast
    # product into a new tensor measured 1.7x slower than the in-place one.
    values = codes.reshape(rows, -1, BLOCK).float()
    values.mul_(scales.float().unsqueeze(-1))
    return values.reshape(rows, -1)[:, :columns].contiguous()


def quantize_q4_0(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) fp32 -> packed nibbles (N, padded K / 2) uint8 and scales (N, padded K / 32) fp16."""
    blocks = _blocks(weight.detach().float())
    extreme = blocks.gather(-1, blocks.abs().argmax(dim=-1, keepdim=True)).squeeze(-1)
    scales = _fp16_scales(extreme / -8.0)  # (N, blocks)
    d = scales.float().unsqueeze(-1)
    inverse = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
    codes = (torch.round(blocks * inverse).clamp(-8, 7) + 8).to(torch.uint8)  # (N, blocks, 32)
    packed = codes[..., : BLOCK // 2] | (codes[..., BLOCK // 2 :] << 4)  # (N, blocks, 16)
    return packed.reshape(weight.shape[0], -1), scales


def dequantize_q4_0(packed: torch.Tensor, scales: torch.Tensor, columns: int) -> torch.Tensor:
    """The fp32 weights (N, columns) that q4 nibbles and scales stand for."""
    rows = packed.shape[0]
    nibbles = packed.reshape(rows, -1, BLOCK // 2)
    # Written in place into one fp32 tensor (N, blocks, 32): 2.7x faster than cat, then new
    # tensors for the offset and the scale (a PackedWeight dequantizes at every op that reads it).
    values = torch.empty(rows, nibbles.shape[1], BLOCK)
    values[..., : BLOCK // 2] = nibbles & 0x0F
    values[..., BLOCK // 2 :] = nibbles >> 4
    values.sub_(8.0).mul_(scales.float().unsqueeze(-1))
    return values.reshape(rows, -1)[:, :columns].contiguous()


def interleave_rows(codes: torch.Tensor, scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-major block codes (N, blocks * block bytes) and scales (N, blocks) -> the kernel's
    layout: codes (groups, blocks, ROW_GROUP * block bytes), scales (groups * ROW_GROUP, blocks),
    the last group padded with zero rows."""
    rows, blocks = scales.shape
    padding = -rows % ROW_GROUP
    codes = nn.functional.pad(codes, (0, 0, 0, padding))
    scales = nn.functional.pad(scales, (0, 0, 0, padding))
    grouped = codes.reshape(-1, ROW_GROUP, blocks, codes.shape[1] // blocks).transpose(1, 2)
    return grouped.reshape(-1, blocks, ROW_GROUP * codes.shape[1] // blocks).contiguous(), scales


def deinterleave_rows(
    data: torch.Tensor, scales: torch.Tensor, rows: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of `interleave_rows`: row-major codes and scales of the first `rows` rows."""
    groups, blocks, width = data.shape
    grouped = data.reshape(groups, blocks, ROW_GROUP, width // ROW_GROUP).transpose(1, 2)
    return grouped.reshape(groups * ROW_GROUP, -1)[:rows], scales[:rows]


@dataclass(frozen=True)
class PackedMatrix:
    """One linear layer's weight (out_features, in_features) in a kernel format: `data` is int8
    codes (q8) or uint8 nibbles (q4) in the interleaved layout (`interleave_rows`), or bf16 values
    (out_features, in_features); `scales` the fp16 block scales (q8/q4)."""

    format: str
    data: torch.Tensor
    scales: torch.Tensor | None
    out_features: int
    in_features: int

    def dequantize(self) -> torch.Tensor:
        if self.format == "bf16":
            return self.data.float()
        assert self.scales is not None
        codes, scales = deinterleave_rows(self.data, self.scales, self.out_features)
        if self.format == "q8":
            return dequantize_q8_0(codes, scales, self.in_features)
        return dequantize_q4_0(codes, scales, self.in_features)


def pack(weight: torch.Tensor, method: str) -> PackedMatrix:
    """`weight` (out_features, in_features) fp32 in the kernel format `method`."""
    scales: torch.Tensor | None
    if method == "q8":
        data, scales = interleave_rows(*quantize_q8_0(weight))
    elif method == "q4":
        data, scales = interleave_rows(*quantize_q4_0(weight))
    elif method == "bf16":
        data, scales = weight.detach().to(torch.bfloat16).contiguous(), None
    else:
        raise ScratchLMError(f"unknown weight format {method!r}; use one of {FORMATS}")
    return PackedMatrix(method, data, scales, weight.shape[0], weight.shape[1])


class PackedWeight(torch.Tensor):
    """A linear layer's fp32 weight (out_features, in_features) that holds only its packed
    matrix: every PyTorch op that reads it (F.linear in a long prefill, scoring, a fallback)
    sees the dequantized values, made for that op and freed after it. So a quantized model keeps
    one copy of each linear layer, the one the kernel reads, instead of the packed copy plus an
    fp32 one (4 bytes per weight more than fp32 alone).

    Read-only: an in-place write (`copy_`, `load_state_dict`) raises; replace the parameter
    instead (the packed copy is then stale and the kernel decodes the fp32 weights)."""

    matrix: PackedMatrix

    @staticmethod
    def __new__(cls, matrix: PackedMatrix) -> PackedWeight:
        shape = (matrix.out_features, matrix.in_features)
        return torch.Tensor._make_wrapper_subclass(
            cls, shape, dtype=torch.float32, device=torch.device("cpu"), requires_grad=False
        )

    def __init__(self, matrix: PackedMatrix) -> None:
        self.matrix = matrix

    def __repr__(self, *, tensor_contents: Any = None) -> str:  # type: ignore[override]
        return f"PackedWeight({self.matrix.format}, {tuple(self.shape)})"

    def __deepcopy__(self, memo: dict[int, Any]) -> PackedWeight:
        copied = PackedWeight(copy.deepcopy(self.matrix, memo))
        if getattr(self, "_is_param", False):
            copied._is_param = True
        memo[id(self)] = copied
        return copied

    @classmethod
    def __torch_dispatch__(  # type: ignore[override]
        cls,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        if func is torch.ops.aten.detach.default:  # nn.Parameter(...), .detach(): still packed
            return PackedWeight(args[0].matrix)
        if func._schema.is_mutable:
            raise ScratchLMError(
                "a quantized model's weights are read-only; load the checkpoint without "
                "--quantize to change them, or replace the parameter"
            )

        def values(item: Any) -> Any:
            return item.matrix.dequantize() if isinstance(item, PackedWeight) else item

        return func(*tree_map(values, args), **tree_map(values, kwargs or {}))


def model_linears(model: GPT) -> list[tuple[str, nn.Linear]]:
    """Every linear layer the kernel reads, by state-dict name: q/k/v/o, gate/up/down, lm_head."""
    linears: list[tuple[str, nn.Linear]] = []
    for index, block in enumerate(model.blocks):
        assert isinstance(block, Block)
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            linears.append((f"blocks.{index}.attention.{name}", getattr(block.attention, name)))
        for name in ("gate_proj", "up_proj", "down_proj"):
            linear = getattr(block.mlp, name)
            if linear is not None:
                linears.append((f"blocks.{index}.mlp.{name}", linear))
    linears.append(("lm_head", model.lm_head))
    return linears


def weights_checksum(model: GPT, method: str) -> str:
    """sha256 of the linear weights a format is made from (names, shapes, bytes), the format and
    its version: a packed file made from other weights has another checksum."""
    digest = hashlib.sha256(f"scratchlm-packed-{FORMAT_VERSION}-{method}".encode())
    seen: dict[int, str] = {}
    for name, linear in model_linears(model):
        parameter = linear.weight
        digest.update(f"\0{name}{tuple(parameter.shape)}{parameter.dtype}".encode())
        if id(parameter) in seen:  # a tied head: the embedding's bytes were hashed already
            digest.update(seen[id(parameter)].encode())
            continue
        seen[id(parameter)] = name
        weight = parameter.detach().contiguous()
        digest.update(weight.view(torch.uint8).numpy().data)
    return digest.hexdigest()


@dataclass
class PackedModel:
    """A model's linear layers in one kernel format, and the identity of the fp32 parameters that
    hold their dequantized values (data pointer, version counter): once a parameter is replaced or
    written to, the packed copy no longer stands for it (`matches` is False)."""

    format: str
    matrices: dict[str, PackedMatrix]
    checksum: str
    sources: dict[str, tuple[int, int]]

    def matches(self, model: GPT) -> bool:
        for name, linear in model_linears(model):
            if self.sources.get(name) != _identity(linear.weight):
                return False
        return len(self.sources) == len(self.matrices)


def _identity(tensor: torch.Tensor) -> tuple[int, int]:
    """(data pointer, version counter); inference tensors have no counter (-1). A PackedWeight
    has no storage of its own and cannot be written: (its matrix's id, -2)."""
    if isinstance(tensor, PackedWeight):
        return id(tensor.matrix), -2
    return tensor.data_ptr(), -1 if tensor.is_inference() else tensor._version


_ATTRIBUTE = "_scratchlm_packed"


def packed_weights(model: GPT) -> PackedModel | None:
    """The packed copy `attach` gave this model (None: fp32 weights only)."""
    packed = getattr(model, _ATTRIBUTE, None)
    return packed if isinstance(packed, PackedModel) else None


@torch.inference_mode(False)  # parameters with version counters, even when called in inference
@torch.no_grad()
def attach(
    model: GPT,
    matrices: dict[str, PackedMatrix],
    method: str,
    checksum: str,
    *,
    keep_fp32: bool = False,
) -> None:
    """Give `model` the packed matrices (for the kernel) as its linear layers' weights: each
    becomes a `PackedWeight`, which every PyTorch path (long prefills, scoring) reads as the
    dequantized values, so both compute with the same weights and the fp32 copy is never held.
    `keep_fp32`: hold the dequantized values as plain fp32 parameters instead (when the kernels
    cannot run, every step is a PyTorch step, and dequantizing the whole model at each one would
    cost more than the memory saved). A tied head gets its own parameter: the embedding table
    stays fp32."""
    linears = model_linears(model)
    missing = {name for name, _ in linears} - set(matrices)
    assert not missing, f"packed weights lack {sorted(missing)}"
    sources: dict[str, tuple[int, int]] = {}
    for name, linear in linears:
        matrix = matrices[name]
        weight = linear.weight
        assert matrix.format == method
        assert (matrix.out_features, matrix.in_features) == tuple(weight.shape)
        if keep_fp32:
            linear.weight = nn.Parameter(matrix.dequantize(), requires_grad=weight.requires_grad)
        else:
            linear.weight = nn.Parameter(PackedWeight(matrix), requires_grad=False)
        sources[name] = _identity(linear.weight)
    setattr(model, _ATTRIBUTE, PackedModel(method, dict(matrices), checksum, sources))


@torch.inference_mode(False)
@torch.no_grad()
def materialize(model: GPT) -> int:
    """Replace every PackedWeight of `model` by a plain fp32 parameter of its dequantized values
    (for a path that runs the PyTorch forward at every step: a fallback, torch.compile); returns
    how many were replaced. The packed copy stays attached and still matches."""
    replaced = 0
    packed = packed_weights(model)
    for name, linear in model_linears(model):
        weight = linear.weight
        if isinstance(weight, PackedWeight):
            linear.weight = nn.Parameter(weight.matrix.dequantize(), requires_grad=False)
            if packed is not None and packed.matrices.get(name) is weight.matrix:
                packed.sources[name] = _identity(linear.weight)  # still the values it packs
            replaced += 1
    return replaced


def pack_model(model: GPT, method: str) -> dict[str, PackedMatrix]:
    """Every linear layer of `model` (fp32, CPU) in format `method`."""
    return {name: pack(linear.weight, method) for name, linear in model_linears(model)}
