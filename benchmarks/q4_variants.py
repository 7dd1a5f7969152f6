"""Does a finer 4-bit format pay? Perplexity of one checkpoint on a held-out text with its linear
layers rounded to each weight format, side by side in one run, against fp32 (issue 20, item 1:
"4-bit as Q4_0, and a finer variant if it pays").

The formats, with their bytes per weight (what batch-1 decode reads):
  fp32      4.0     the checkpoint
  bf16      2.0     `--quantize bf16`
  q8        1.0625  `--quantize q8` (GGUF Q8_0: 32 values, one fp16 scale)
  q4        0.5625  `--quantize q4` (GGUF Q4_0: 32 values, one fp16 scale d = extreme / -8)
  q4-mse    0.5625  the same format with each block's scale chosen for the least squared error
                    (32 candidates, each refit by least squares; llama.cpp's K-quants choose
                    their scales this way): the same kernels would read it, only the packing changes
  q4_1      0.625   GGUF Q4_1 (32 values, an fp16 scale and an fp16 minimum: an asymmetric range)
  q4/16     0.625   Q4_0 with blocks of 16 values (twice the scales)

Every format rounds the same linear layers that `--quantize` does (attention, MLP and the output
layer; a tied output layer gets its own rounded copy and the token embedding stays fp32); norms
and embeddings stay fp32. Scoring runs the PyTorch forward on the rounded fp32 values, so only the
weights differ between rows (`eval --data --quantize`, which scores through the decode kernels,
gave the same cost for q4: +0.69% against this script's +0.70%, docs/benchmarks.md).
`gguf_quant_quality.py` measures the GGUF files `export gguf` writes, through llama.cpp; this
script measures the formats the decode kernels read and candidates for them.

    .venv/bin/python benchmarks/q4_variants.py --checkpoint RUN_OR_CHECKPOINT \\
        --data ../shared/data/tinystories_valid.txt --max-chars 200000
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from collections.abc import Callable

import torch
from torch import nn

from scratchlm.checkpoint import load_checkpoint, resolve_checkpoint
from scratchlm.data import iter_documents
from scratchlm.evaluation.perplexity import evaluate_text
from scratchlm.inference.kernels.quant import (
    dequantize_q4_0,
    dequantize_q8_0,
    model_linears,
    quantize_q4_0,
    quantize_q8_0,
)
from scratchlm.model import GPT

Rounding = Callable[[torch.Tensor], torch.Tensor]  # (N, K) fp32 -> (N, K) fp32


def blocks_of(weight: torch.Tensor, size: int) -> torch.Tensor:
    """(N, K) -> (N, K / size, size), K zero-padded to whole blocks."""
    rows, columns = weight.shape
    padded = -(-columns // size) * size
    return nn.functional.pad(weight, (0, padded - columns)).reshape(rows, -1, size)


def unblock(blocks: torch.Tensor, columns: int) -> torch.Tensor:
    return blocks.reshape(blocks.shape[0], -1)[:, :columns].contiguous()


def fp16(values: torch.Tensor) -> torch.Tensor:
    """As stored: block scales and minimums are fp16."""
    return values.to(torch.float16).float()


def round_bf16(weight: torch.Tensor) -> torch.Tensor:
    return weight.to(torch.bfloat16).float()


def round_q8(weight: torch.Tensor) -> torch.Tensor:
    return dequantize_q8_0(*quantize_q8_0(weight), weight.shape[1])


def round_q4(weight: torch.Tensor) -> torch.Tensor:
    return dequantize_q4_0(*quantize_q4_0(weight), weight.shape[1])


def round_q4_symmetric(weight: torch.Tensor, size: int) -> torch.Tensor:
    """Q4_0's rule (d = the block's extreme value / -8, codes -8..7) on blocks of `size`."""
    blocks = blocks_of(weight, size)
    extreme = blocks.gather(-1, blocks.abs().argmax(dim=-1, keepdim=True))
    scale = fp16(extreme / -8.0)
    inverse = torch.where(scale != 0, 1.0 / scale, torch.zeros_like(scale))
    return unblock((blocks * inverse).round().clamp(-8, 7) * scale, weight.shape[1])


def round_q4_mse(weight: torch.Tensor) -> torch.Tensor:
    """Q4_0 codes with each block's scale chosen for the least squared error, as llama.cpp's
    make_qx_quants does for its K-quants: for 32 candidate scales around the max-abs rule's
    (the extreme value / t for t in -8 ... -6.45 and +7 ... +8.55), round the block to codes,
    refit the scale to those codes by least squares (d = sum w q / sum q^2, then fp16), and keep
    the candidate whose rounded block is closest."""
    blocks = blocks_of(weight, 32)  # (N, B, 32)
    extreme = blocks.gather(-1, blocks.abs().argmax(dim=-1, keepdim=True))  # (N, B, 1)
    best = torch.full_like(extreme, math.inf)
    chosen = torch.zeros_like(blocks)
    divisors = [-8.0 + 0.1 * step for step in range(16)] + [7.0 + 0.1 * step for step in range(16)]
    for divisor in divisors:
        scale = extreme / divisor
        inverse = torch.where(scale != 0, 1.0 / scale, torch.zeros_like(scale))
        codes = (blocks * inverse).round().clamp(-8, 7)
        energy = codes.pow(2).sum(dim=-1, keepdim=True)
        fitted = (blocks * codes).sum(dim=-1, keepdim=True) / energy.clamp_min(1.0)
        rounded = codes * fp16(fitted)
        error = (rounded - blocks).pow(2).sum(dim=-1, keepdim=True)
        better = error < best
        best = torch.where(better, error, best)
        chosen = torch.where(better, rounded, chosen)
    return unblock(chosen, weight.shape[1])


def round_q4_1(weight: torch.Tensor) -> torch.Tensor:
    """GGUF Q4_1: per 32 values an fp16 scale d = (max - min) / 15 and an fp16 minimum m; codes
    0..15, value = code * d + m."""
    blocks = blocks_of(weight, 32)
    low = blocks.amin(dim=-1, keepdim=True)
    high = blocks.amax(dim=-1, keepdim=True)
    scale = fp16((high - low) / 15.0)
    minimum = fp16(low)
    inverse = torch.where(scale != 0, 1.0 / scale, torch.zeros_like(scale))
    codes = ((blocks - minimum) * inverse).round().clamp(0, 15)
    return unblock(codes * scale + minimum, weight.shape[1])


FORMATS: dict[str, tuple[float, Rounding | None]] = {
    "fp32": (4.0, None),
    "bf16": (2.0, round_bf16),
    "q8": (1.0625, round_q8),
    "q4": (0.5625, round_q4),
    "q4-mse": (0.5625, round_q4_mse),
    "q4_1": (0.625, round_q4_1),
    "q4/16": (0.625, lambda weight: round_q4_symmetric(weight, 16)),
}


@torch.no_grad()
def rounded_model(model: GPT, rounding: Rounding | None) -> GPT:
    """A copy of `model` whose linear layers hold `rounding(weight)`; a tied output layer gets
    its own parameter (the embedding stays fp32), as `--quantize` does."""
    copied = copy.deepcopy(model)
    if rounding is None:
        return copied
    for _name, linear in model_linears(copied):
        linear.weight = nn.Parameter(rounding(linear.weight.detach().float()), requires_grad=False)
    return copied


def weight_error(model: GPT, rounded: GPT) -> float:
    """Relative RMS error of the linear weights: ||W' - W|| / ||W|| over all of them."""
    error = total = 0.0
    for (_name, original), (_same, changed) in zip(
        model_linears(model), model_linears(rounded), strict=True
    ):
        weight = original.weight.detach().float()
        error += float((changed.weight.detach().float() - weight).pow(2).sum())
        total += float(weight.pow(2).sum())
    return math.sqrt(error / total) if total else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, help="a run or checkpoint directory")
    parser.add_argument("--data", required=True, help="held-out text (any --data source)")
    parser.add_argument("--max-chars", type=int, default=200_000, help="text to score")
    parser.add_argument(
        "--formats", nargs="+", default=list(FORMATS), choices=list(FORMATS),
        help="formats to score besides fp32 (always scored first, as the reference)",
    )  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    if args.max_chars <= 0:
        parser.error("--max-chars must be positive")

    loaded = load_checkpoint(str(resolve_checkpoint(args.checkpoint)), torch.device("cpu"))
    model = loaded.model.eval()
    documents: list[str] = []
    chars = 0
    for document in iter_documents(args.data, progress=False):
        text = "".join(document.pieces())
        documents.append(text[: args.max_chars - chars])
        chars += len(documents[-1])
        if chars >= args.max_chars:
            break
    weights = sum(linear.weight.numel() for _name, linear in model_linears(model))
    print(
        f"{args.checkpoint}: {weights / 1e6:.2f}M weights in linear layers; {args.data}, "
        f"{chars:,} characters"
    )
    print(f"{'format':>8} {'bytes/w':>8} {'rel. RMS error':>15} {'perplexity':>11} {'vs fp32':>9}")
    reference = math.nan
    for name in ["fp32", *(name for name in args.formats if name != "fp32")]:
        bytes_per_weight, rounding = FORMATS[name]
        started = time.perf_counter()
        rounded = rounded_model(model, rounding)
        result = evaluate_text(
            rounded,
            loaded.tokenizer,
            documents,
            device=torch.device("cpu"),
            batch_size=args.batch_size,
        )
        perplexity = result.perplexity
        if name == "fp32":
            reference = perplexity
        ratio = perplexity / reference - 1.0
        print(
            f"{name:>8} {bytes_per_weight:>8.4f} {weight_error(model, rounded):>15.5f} "
            f"{perplexity:>11.4f} {100 * ratio:>+8.3f}%   ({time.perf_counter() - started:.1f} s, "
            f"{result.tokens:,} tokens)"
        )


if __name__ == "__main__":
    main()
