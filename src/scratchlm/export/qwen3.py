"""The Qwen3 layout: Hugging Face `Qwen3ForCausalLM` and llama.cpp's GGUF arch `qwen3`.

Qwen3 is Llama math plus a per-head RMSNorm on queries and keys (weight of size head_dim, eps =
rms_norm_eps, the same eps as every other norm) applied after the projections and before RoPE,
exactly as our `qk_norm`. transformers' Qwen3 rotates halves as we do, and llama.cpp runs qwen3
with NEOX RoPE, which is rotate-half too: unlike GGUF arch `llama`, no q/k row permutation.
"""

from __future__ import annotations

from typing import Any

import torch

from scratchlm.config import ModelConfig
from scratchlm.errors import ScratchLMError
from scratchlm.export.layouts import (
    LLAMA_GGUF_KEY_MAP,
    LLAMA_KEY_MAP,
    export_state,
    exported_tie,
    llama_family_hf_config,
    qwen3_blockers,
)
from scratchlm.model import GPT

# ours -> Hugging Face Qwen3, "{i}" is the layer index
QWEN3_KEY_MAP: dict[str, str] = {
    **LLAMA_KEY_MAP,
    "blocks.{i}.attention.q_norm.weight": "model.layers.{i}.self_attn.q_norm.weight",
    "blocks.{i}.attention.k_norm.weight": "model.layers.{i}.self_attn.k_norm.weight",
}

# ours -> GGUF arch qwen3 (llama.cpp tensor names); q and k rows stay as they are (NEOX RoPE).
QWEN3_GGUF_KEY_MAP: dict[str, str] = {
    **LLAMA_GGUF_KEY_MAP,
    "blocks.{i}.attention.q_norm.weight": "blk.{i}.attn_q_norm.weight",
    "blocks.{i}.attention.k_norm.weight": "blk.{i}.attn_k_norm.weight",
}


def rename(
    state: dict[str, torch.Tensor], key_map: dict[str, str], n_layer: int
) -> dict[str, torch.Tensor]:
    """`state` under the key map's target names ("{i}" expanded over the layers); names the
    state lacks are skipped."""
    renamed: dict[str, torch.Tensor] = {}
    for source, target in key_map.items():
        layers = range(n_layer) if "{i}" in source else [0]
        for layer in layers:
            name = source.format(i=layer)
            if name in state:
                renamed[target.format(i=layer)] = state[name]
    return renamed


def qwen3_config(config: ModelConfig) -> dict[str, Any]:
    """A transformers Qwen3Config (as config.json keys) for a config in Qwen3 math."""
    blockers = qwen3_blockers(config)
    if blockers:
        raise ScratchLMError(
            "this model is not expressible as a Hugging Face Qwen3: " + ", ".join(blockers)
        )
    return {
        **llama_family_hf_config(config, "Qwen3ForCausalLM", "qwen3"),
        "attention_dropout": 0.0,
        "use_sliding_window": False,
        "sliding_window": None,
        "max_window_layers": config.n_layer,
    }


def qwen3_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights under Hugging Face Qwen3 names (embedding norm baked; a tied head left out)."""
    qwen3_config(model.config)  # refuses what Qwen3 cannot express
    converted = rename(export_state(model), QWEN3_KEY_MAP, model.config.n_layer)
    if exported_tie(model.config):
        converted.pop("lm_head.weight")
    return converted


def qwen3_gguf_tensors(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights under llama.cpp's qwen3 names, float32 (a tied head is left out: llama.cpp
    reuses token_embd when `output.weight` is missing)."""
    state = {name: tensor.float().cpu() for name, tensor in export_state(model).items()}
    converted = rename(state, QWEN3_GGUF_KEY_MAP, model.config.n_layer)
    if exported_tie(model.config):
        converted.pop("output.weight")
    return converted


def qwen3_to_ours(state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """The reverse of `qwen3_state_dict` (an imported model has no embedding norm: the rows it
    reads are already normalized)."""
    reverse = {target: source for source, target in QWEN3_KEY_MAP.items()}
    ours = rename(state, reverse, config.n_layer)
    if config.tie_embeddings:
        ours.pop("lm_head.weight", None)
    return ours


def config_from_qwen3(hf: dict[str, Any], vocab: int) -> ModelConfig:
    """Our ModelConfig for a Hugging Face qwen3 config.json (a missing key raises KeyError)."""
    if hf.get("attention_bias"):
        raise ScratchLMError(
            "this Qwen3 has attention biases but no MLP biases, which scratchlm's `bias` option "
            "(all linears or none) cannot express"
        )
    if hf.get("hidden_act", "silu") != "silu":
        raise ScratchLMError(
            f"this Qwen3's MLP uses {hf.get('hidden_act')!r}; scratchlm's SwiGLU needs silu"
        )
    if hf.get("use_sliding_window"):
        raise ScratchLMError("this Qwen3 uses sliding-window attention, which scratchlm lacks")
    rope = hf.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default":
        raise ScratchLMError(
            f"this Qwen3 uses {rope.get('rope_type')!r} RoPE scaling; scratchlm imports plain RoPE"
        )
    return ModelConfig(
        name="imported-qwen3",
        vocab_size=vocab,
        n_layer=hf["num_hidden_layers"],
        d_model=hf["hidden_size"],
        n_head=hf["num_attention_heads"],
        n_kv_head=hf.get("num_key_value_heads") or hf["num_attention_heads"],
        head_dim=hf.get("head_dim"),
        ffn_hidden=hf["intermediate_size"],
        context_length=hf["max_position_embeddings"],
        position="rope",
        rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
        norm="rmsnorm",
        norm_eps=hf["rms_norm_eps"],
        mlp="swiglu",
        qk_norm=True,
        bias=False,
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        init_std=hf.get("initializer_range", 0.02),
    )
