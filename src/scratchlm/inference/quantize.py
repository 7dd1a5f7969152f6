"""int8 weights for CPU decoding: dynamic quantization of every linear layer.

Decoding one token reads every weight once, so on CPU its speed is set by bytes of weights over
memory bandwidth. int8 weights (per-tensor scales; activations quantized on the fly by fbgemm) read a
quarter of the fp32 bytes: measured 4.1x faster decoding for akane-124m on a 2-core CPU, 1.3x for
the 6M `small` (there per-op overhead dominates) — see docs/benchmarks.md. Embeddings stay fp32.
Outputs differ slightly from fp32 (a quantization error, not a bug): use it for speed, not parity.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from scratchlm.errors import ScratchLMError
from scratchlm.model import GPT

QUANTIZATIONS = ("none", "int8")


def quantize_for_cpu(model: GPT, method: str = "int8") -> GPT:
    """A copy of `model` whose linear layers hold int8 weights (CPU only)."""
    if method == "none":
        return model
    if method != "int8":
        raise ScratchLMError(f"unknown quantization {method!r}; use one of {QUANTIZATIONS}")
    if model.token_embedding.weight.device.type != "cpu":
        raise ScratchLMError(
            "--quantize int8 runs on CPU only; on a GPU use --precision bf16 instead"
        )
    if model.token_embedding.weight.dtype != torch.float32:
        raise ScratchLMError(
            "--quantize int8 starts from fp32 weights; drop --precision or use fp32"
        )
    with warnings.catch_warnings():
        # torch.ao's eager dynamic quantization is deprecated in favour of torchao, but it is what
        # this PyTorch ships; the kernels (fbgemm) are the same.
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8
        )
    assert isinstance(quantized, GPT)
    return quantized
