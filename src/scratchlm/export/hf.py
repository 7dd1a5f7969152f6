"""Hugging Face transformers interop: one explicit key map per architecture.

Llama math (RMSNorm with weight, SwiGLU, rotate-half RoPE, GQA, no biases) maps onto
`LlamaForCausalLM` without any weight permutation: transformers' Llama uses the same rotate-half
RoPE convention. The vocabulary is exported at its padded size so the shapes match exactly.
"""

from __future__ import annotations

from typing import Any

import torch

from scratchlm.config import ModelConfig
from scratchlm.errors import ScratchLMError
from scratchlm.model import GPT
from scratchlm.tokenizer import BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, SPECIAL_TOKENS

# ours -> Hugging Face Llama, "{i}" is the layer index
LLAMA_KEY_MAP: dict[str, str] = {
    "token_embedding.weight": "model.embed_tokens.weight",
    "blocks.{i}.attention_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blocks.{i}.attention.q_proj.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blocks.{i}.attention.k_proj.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blocks.{i}.attention.v_proj.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blocks.{i}.attention.o_proj.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blocks.{i}.mlp_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blocks.{i}.mlp.gate_proj.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blocks.{i}.mlp.up_proj.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blocks.{i}.mlp.down_proj.weight": "model.layers.{i}.mlp.down_proj.weight",
    "final_norm.weight": "model.norm.weight",
    "lm_head.weight": "lm_head.weight",
}


def llama_blockers(config: ModelConfig) -> list[str]:
    """The options that keep a config outside Llama math (empty when it exports losslessly)."""
    blockers = []
    if config.position != "rope":
        blockers.append(f"position={config.position} (Llama needs rope)")
    if config.norm != "rmsnorm":
        blockers.append(f"norm={config.norm} (Llama needs rmsnorm)")
    if config.mlp != "swiglu":
        blockers.append(f"mlp={config.mlp} (Llama needs swiglu)")
    if config.bias:
        blockers.append("bias=true (Llama has no biases)")
    if config.qk_norm:
        blockers.append("qk_norm=true")
    if config.embedding_norm:
        blockers.append("embedding_norm=true")
    if config.logit_softcap is not None:
        blockers.append("logit_softcap")
    return blockers


def llama_config(config: ModelConfig) -> dict[str, Any]:
    """A transformers LlamaConfig (as keyword arguments) for a Llama-math ModelConfig."""
    blockers = llama_blockers(config)
    if blockers:
        raise ScratchLMError(
            "this model is not expressible as a Hugging Face Llama: "
            + ", ".join(blockers)
            + "; train a llama-* (or tiny/small) preset to export it"
        )
    rope_parameters = {"rope_type": "default", "rope_theta": config.rope_theta}
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.padded_vocab_size,
        "hidden_size": config.d_model,
        "intermediate_size": config.ffn_hidden,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_kv_head,
        "head_dim": config.head_dim,
        "max_position_embeddings": config.context_length,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,
        "rope_parameters": rope_parameters,
        "tie_word_embeddings": config.tie_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
        "hidden_act": "silu",
        "initializer_range": config.init_std,
        "bos_token_id": SPECIAL_TOKENS.index(BOS_TOKEN),
        "eos_token_id": SPECIAL_TOKENS.index(EOS_TOKEN),
        "pad_token_id": SPECIAL_TOKENS.index(PAD_TOKEN),
    }


def llama_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights under Hugging Face Llama names (a tied head is left out, as transformers does)."""
    llama_config(model.config)  # refuses what Llama cannot express
    ours = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    for layer in range(model.config.n_layer):
        for source, target in LLAMA_KEY_MAP.items():
            if "{i}" in source:
                converted[target.format(i=layer)] = ours[source.format(i=layer)]
    for source, target in LLAMA_KEY_MAP.items():
        if "{i}" not in source:
            converted[target] = ours[source]
    if model.config.tie_embeddings:
        converted.pop("lm_head.weight")
    return converted


def to_transformers_llama(model: GPT) -> Any:
    """A `transformers.LlamaForCausalLM` holding the same weights (for parity checks and benchmarks)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    values = llama_config(model.config)
    values.pop("architectures")
    values.pop("model_type")
    hf_model = LlamaForCausalLM(LlamaConfig(**values))
    missing, unexpected = hf_model.load_state_dict(llama_state_dict(model), strict=False)
    allowed_missing = {"lm_head.weight"} if model.config.tie_embeddings else set()
    assert not unexpected and set(missing) <= allowed_missing, (missing, unexpected)
    if model.config.tie_embeddings:
        hf_model.tie_weights()
    moved: Any = hf_model
    return moved.to(model.lm_head.weight.device).eval()
