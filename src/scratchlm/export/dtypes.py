"""The export weight types, with no import of torch or gguf: the exporters and `--help` share them."""

from __future__ import annotations

GGUF_DTYPES: tuple[str, ...] = ("f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0")
# llama.cpp's K-quant file types: gguf-py 0.19 has no quantizer for Q2_K..Q6_K (its
# `quants.quantize` cannot write them), so these are made from an f16 export with
# llama.cpp's `llama-quantize` (docs/export.md, "Quantized GGUF"). The CLI accepts the names only
# to refuse them with that command.
KQUANT_DTYPES: tuple[str, ...] = (
    "q2_k",
    "q3_k_s",
    "q3_k_m",
    "q3_k_l",
    "q4_k",
    "q4_k_s",
    "q4_k_m",
    "q5_k",
    "q5_k_s",
    "q5_k_m",
    "q6_k",
)
# Legacy block quants: 32 weights per block along a row, with one scale (and for _1 a minimum).
BLOCK_QUANTS: tuple[str, ...] = ("q8_0", "q5_1", "q5_0", "q4_1", "q4_0")

# Hugging Face exports: the dtype the safetensors weights are stored in.
HF_DTYPES: tuple[str, ...] = ("fp32", "bf16", "fp16")
