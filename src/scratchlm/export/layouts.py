"""Which standard layout expresses a model exactly: blockers per layout, the choice, the refusal.

Three layouts exist in both Hugging Face and GGUF (llama.cpp) form:

- `llama`: RoPE, RMSNorm, SwiGLU, no biases, no QK-norm (`LlamaForCausalLM`, GGUF `llama`).
- `qwen3`: the same plus per-head RMSNorm on queries and keys before RoPE (`Qwen3ForCausalLM`,
  GGUF `qwen3`).
- `gpt2`: learned positions, LayerNorm with bias, biased linears, GELU, multi-head attention
  (`GPT2LMHeadModel`, GGUF `gpt2`; llama.cpp's gpt2 computes tanh GELU only).

An embedding norm fits every layout: it acts on the token embedding alone, so normalizing every
row of the table once on export (`rmsnorm(E[i])`) gives the same input to the first block; the
output head keeps the raw table, so a head tied in training is untied in the export
(`export_state`).

Hugging Face has a fourth layout, `custom` (`export.custom`): our own configuration and modeling
code beside our own weights, loaded with `trust_remote_code=True`; it expresses every config.
`export hf` picks it when no standard layout is exact (or when `--layout custom` asks). A GGUF
export has no such escape: a config no llama.cpp layout expresses is refused in one line that
names what blocks each layout and the routes that work.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F

from scratchlm.config import PRESETS, ModelConfig, preset_config
from scratchlm.errors import ScratchLMError
from scratchlm.model import GPT
from scratchlm.tokenizer import BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, SPECIAL_TOKENS

Target = Literal["hf", "gguf"]
LAYOUTS: tuple[str, ...] = ("llama", "qwen3", "gpt2")
CUSTOM = "custom"  # Hugging Face only: our own modeling code (`export.custom`)
LAYOUT_CHOICES: tuple[str, ...] = ("auto", *LAYOUTS, CUSTOM)
TARGET_NAMES: dict[str, str] = {"hf": "Hugging Face", "gguf": "GGUF"}
# The route for every model that no standard layout expresses.
CUSTOM_ROUTE = (
    "a Hugging Face export with its own modeling code (`scratchlm export hf --layout custom`, "
    "loaded with trust_remote_code=True)"
)
GPT2_ACTIVATIONS = {"gelu_tanh": "gelu_new", "gelu": "gelu"}
# The options that define a model's math (the rest are sizes); compared to find the nearest preset.
MATH_FIELDS: tuple[str, ...] = (
    "position",
    "norm",
    "mlp",
    "bias",
    "qk_norm",
    "embedding_norm",
    "logit_softcap",
)


def common_blockers(config: ModelConfig) -> list[str]:
    """Options that no standard layout (Hugging Face or GGUF) can express."""
    return ["logit_softcap (no standard layout soft-caps logits)"] if config.logit_softcap else []


def _rope_rmsnorm_swiglu_blockers(config: ModelConfig, name: str) -> list[str]:
    blockers = []
    if config.position != "rope":
        blockers.append(f"position={config.position} ({name} needs rope)")
    if config.norm != "rmsnorm":
        blockers.append(f"norm={config.norm} ({name} needs rmsnorm)")
    if config.mlp != "swiglu":
        blockers.append(f"mlp={config.mlp} ({name} needs swiglu)")
    if config.bias:
        blockers.append(f"bias=true ({name} has no biases)")
    return blockers


def llama_blockers(config: ModelConfig) -> list[str]:
    """The options that keep a config outside Llama math (empty when it exports losslessly)."""
    blockers = _rope_rmsnorm_swiglu_blockers(config, "Llama")
    if config.qk_norm:
        blockers.append("qk_norm=true (Llama has no QK-norm; the qwen3 layout has)")
    return blockers + common_blockers(config)


def qwen3_blockers(config: ModelConfig) -> list[str]:
    """Qwen3 is Llama math plus per-head q/k RMSNorm (eps = rms_norm_eps) before RoPE. Its MLP has
    no biases, so our `bias` (which covers the MLP too) cannot be expressed."""
    blockers = _rope_rmsnorm_swiglu_blockers(config, "Qwen3")
    if not config.qk_norm:
        blockers.append("qk_norm=false (Qwen3 always normalizes q and k; the llama layout fits)")
    return blockers + common_blockers(config)


def gpt2_blockers(config: ModelConfig) -> list[str]:
    blockers = []
    if config.position != "learned":
        blockers.append(f"position={config.position} (GPT-2 needs learned)")
    if config.norm != "layernorm" or not config.bias:
        blockers.append("norm/bias (GPT-2 needs LayerNorm with bias and biased linears)")
    if config.mlp not in GPT2_ACTIVATIONS:
        blockers.append(f"mlp={config.mlp} (GPT-2 takes gelu or gelu_tanh)")
    if config.n_kv_head != config.n_head:
        blockers.append("grouped-query attention (GPT-2 is multi-head)")
    if config.head_dim != config.d_model // config.n_head:
        blockers.append("head_dim != d_model / n_head")
    if config.qk_norm:
        blockers.append("qk_norm=true (GPT-2 has no QK-norm)")
    return blockers + common_blockers(config)


def gguf_gpt2_blockers(config: ModelConfig) -> list[str]:
    """llama.cpp's gpt2 graph computes GELU with the tanh approximation only."""
    blockers = gpt2_blockers(config)
    if config.mlp == "gelu":
        blockers.append("mlp=gelu (llama.cpp's gpt2 uses tanh GELU; train with mlp=gelu_tanh)")
    return blockers


BLOCKERS: dict[str, dict[str, Callable[[ModelConfig], list[str]]]] = {
    "hf": {"llama": llama_blockers, "qwen3": qwen3_blockers, "gpt2": gpt2_blockers},
    "gguf": {"llama": llama_blockers, "qwen3": qwen3_blockers, "gpt2": gguf_gpt2_blockers},
}


def exportable_layout(config: ModelConfig, target: Target) -> str | None:
    """The first layout that expresses the config exactly, or None."""
    for layout, blockers in BLOCKERS[target].items():
        if not blockers(config):
            return layout
    return None


def nearest_preset(config: ModelConfig, target: Target) -> tuple[str, list[str]] | None:
    """The exportable preset whose math differs from the config's in the fewest options (then
    the closest in size), with those options as the preset sets them."""
    best: tuple[int, float, str, list[str]] | None = None
    for name in PRESETS:
        preset = preset_config(name)
        if exportable_layout(preset, target) is None:
            continue
        changes = [
            f"{field}={_shown(getattr(preset, field))}"
            for field in MATH_FIELDS
            if getattr(preset, field) != getattr(config, field)
        ]
        size_gap = abs(math.log(preset.n_params / config.n_params))
        if best is None or (len(changes), size_gap) < best[:2]:
            best = (len(changes), size_gap, name, changes)
    return None if best is None else (best[2], best[3])


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else str(value)


def routes(config: ModelConfig, target: Target) -> str:
    """What works instead, for a refusal message."""
    text = f"routes that work: {CUSTOM_ROUTE}"
    nearest = nearest_preset(config, target)
    if nearest is not None:
        name, changes = nearest
        text += f", or train the nearest exportable preset, {name}"
        if changes:
            text += f" ({', '.join(changes)})"
    return text


def choose_layout(config: ModelConfig, target: Target, requested: str = "auto") -> str:
    """The layout to write: `requested` when it is exact, else (auto) the first exact standard
    one, else for Hugging Face `custom`; a GGUF export that no layout expresses is refused in one
    line naming what blocks each layout and the routes that work."""
    table = BLOCKERS[target]
    if requested == CUSTOM:
        if target != "hf":
            raise ScratchLMError(
                f"--layout {CUSTOM} writes modeling code for Hugging Face transformers, which "
                f"{TARGET_NAMES[target]} cannot run; use --layout auto here, or {CUSTOM_ROUTE}"
            )
        return CUSTOM
    if requested != "auto":
        if requested not in table:
            raise ScratchLMError(
                f"unknown layout {requested!r}; choose one of {', '.join(LAYOUT_CHOICES)}"
            )
        blockers = table[requested](config)
        if blockers:
            raise ScratchLMError(
                f"--layout {requested} cannot express this model exactly: {', '.join(blockers)}; "
                "use --layout auto to pick an exact layout"
            )
        return requested
    layout = exportable_layout(config, target)
    if layout is not None:
        return layout
    if target == "hf":
        return CUSTOM  # exact for every config
    # qwen3 is llama plus QK-norm: name only the one of the two that matches the model's qk_norm,
    # so that the message does not list the same blockers twice.
    skipped = "llama" if config.qk_norm else "qwen3"
    per_layout = "; ".join(
        f"as {name} it has {', '.join(check(config))}"
        for name, check in table.items()
        if name != skipped
    )
    raise ScratchLMError(
        f"this model cannot be exported to {TARGET_NAMES[target]} without changing its math: "
        f"{per_layout}; {routes(config, target)}"
    )


def exported_tie(config: ModelConfig) -> bool:
    """Whether the export ties its head to the embedding: not when an embedding norm is baked."""
    return config.tie_embeddings and not config.embedding_norm


@torch.no_grad()
def export_state(model: GPT) -> dict[str, torch.Tensor]:
    """Our state dict as an export writes it (our names, detached).

    With an embedding norm, `token_embedding.weight` holds the normalized rows
    rmsnorm(E[i]) * w, computed in float32 and cast back as the model's forward does, and
    `embedding_norm.weight` is gone; `lm_head.weight` keeps the raw table (the head of a tied model
    multiplies by E itself, not by the normalized rows)."""
    config = model.config
    state = {name: tensor.detach() for name, tensor in model.state_dict().items()}
    if config.embedding_norm:
        table = state["token_embedding.weight"]  # (padded_vocab, d_model)
        weight = state.pop("embedding_norm.weight")  # (d_model,)
        state["token_embedding.weight"] = F.rms_norm(
            table.float(), (config.d_model,), weight.float(), config.norm_eps
        ).to(table.dtype)
        state["lm_head.weight"] = model.lm_head.weight.detach()  # raw table when tied
    return state


# --- what Llama and Qwen3 share (Qwen3 is Llama math plus q/k norms) --------------------------------

# ours -> Hugging Face Llama (and Qwen3, which adds its two norms), "{i}" is the layer index
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

# ours -> GGUF (llama.cpp tensor names) for the llama architecture; qwen3 adds its two norms.
LLAMA_GGUF_KEY_MAP: dict[str, str] = {
    "token_embedding.weight": "token_embd.weight",
    "blocks.{i}.attention_norm.weight": "blk.{i}.attn_norm.weight",
    "blocks.{i}.attention.q_proj.weight": "blk.{i}.attn_q.weight",
    "blocks.{i}.attention.k_proj.weight": "blk.{i}.attn_k.weight",
    "blocks.{i}.attention.v_proj.weight": "blk.{i}.attn_v.weight",
    "blocks.{i}.attention.o_proj.weight": "blk.{i}.attn_output.weight",
    "blocks.{i}.mlp_norm.weight": "blk.{i}.ffn_norm.weight",
    "blocks.{i}.mlp.gate_proj.weight": "blk.{i}.ffn_gate.weight",
    "blocks.{i}.mlp.up_proj.weight": "blk.{i}.ffn_up.weight",
    "blocks.{i}.mlp.down_proj.weight": "blk.{i}.ffn_down.weight",
    "final_norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def llama_family_hf_config(
    config: ModelConfig, architecture: str, model_type: str
) -> dict[str, Any]:
    """The Hugging Face config keys a Llama and a Qwen3 export share (RoPE, RMSNorm, SwiGLU, no
    attention bias); each layout adds its own."""
    return {
        "architectures": [architecture],
        "model_type": model_type,
        "vocab_size": config.padded_vocab_size,
        "hidden_size": config.d_model,
        "intermediate_size": config.ffn_hidden,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_kv_head,
        "head_dim": config.head_dim,
        "max_position_embeddings": config.context_length,
        "rms_norm_eps": config.norm_eps,
        # transformers 5 reads rope_parameters; older versions and other tools read rope_theta.
        "rope_theta": config.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "tie_word_embeddings": exported_tie(config),
        "attention_bias": False,
        "hidden_act": "silu",
        "initializer_range": config.init_std,
        "bos_token_id": SPECIAL_TOKENS.index(BOS_TOKEN),
        "eos_token_id": SPECIAL_TOKENS.index(EOS_TOKEN),
        "pad_token_id": SPECIAL_TOKENS.index(PAD_TOKEN),
    }
