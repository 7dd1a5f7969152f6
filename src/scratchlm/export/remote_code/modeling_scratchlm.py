"""scratchlm's decoder-only transformer in Hugging Face transformers (remote code).

Load an export with `AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)`.
Standalone: imports only torch (2.5 or later) and transformers (5.x), never scratchlm, and
computes what scratchlm's `model.py` computes, option for option: learned or rotary positions,
LayerNorm or RMSNorm, five MLP kinds, MHA/GQA/MQA, QK-norm, an embedding norm, logit
soft-capping, biases, a tied or untied head, dropout (training only). The tensor names are
scratchlm's own. Keys and values live in transformers' `Cache` (a `DynamicCache` by default), so
`generate()` decodes incrementally; a 2D `attention_mask` with left padding batches prompts of
different lengths.

Sections, as in model.py: norms, rotary positions, attention, MLPs, the block, the model.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_scratchlm import ScratchLMConfig

# transformers 5 renamed the cache argument and output field `past_key_values` to `cache`; this
# file accepts both spellings and returns the one this transformers version reads.
CACHE_FIELD = (
    "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
)

# --- norms ----------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalize in float32 for stability under bf16/fp16, return in the input dtype.
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).type_as(x)


def make_norm(config: ScratchLMConfig, dim: int) -> nn.Module:
    if config.norm == "rmsnorm":
        return RMSNorm(dim, config.norm_eps)
    return nn.LayerNorm(dim, eps=config.norm_eps, bias=config.bias)


# --- rotary positions (rotate-half convention) ----------------------------------------------------


def rope_cos_sin(
    positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """positions (B or 1, T) -> cos, sin (B or 1, 1, T, head_dim), broadcast over heads.

    Computed per call from the positions with the same float32 operations as scratchlm's tables,
    so the values are identical (and no buffer has to survive transformers' meta-device loading)."""
    inverse_frequencies = 1.0 / (
        theta
        ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim)
    )
    angles = positions.float()[..., None] * inverse_frequencies  # (B, T, head_dim / 2)
    angles = torch.cat((angles, angles), dim=-1)[:, None]  # (B, 1, T, head_dim)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return (x * cos + rotate_half(x) * sin).type_as(x)


# --- attention ------------------------------------------------------------------------------------


def attention_mask_for(
    attention_mask: torch.Tensor | None, length: int, past: int, device: torch.device
) -> tuple[torch.Tensor | None, bool]:
    """(boolean mask (B or 1, 1, T, past + T) or None, is_causal) for SDPA.

    Without padding, SDPA's own causal mask serves a prompt and a single new token needs no mask,
    as in scratchlm's model. With padding (a 2D mask of 1 = token, 0 = pad), key j is visible to
    the query at index past + i when j <= past + i and j is not padding; every query also sees
    itself, so that a padding query's row is never empty (its output is ignored)."""
    if attention_mask is not None and (
        not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() != 2
    ):
        raise ValueError(
            "scratchlm models take a 2D attention_mask (batch, length) of 1 = token, 0 = padding; "
            "a static or compiled cache builds other masks: use the default DynamicCache"
        )
    if attention_mask is None or bool(attention_mask.all()):
        if past == 0:
            return None, length > 1
        if length == 1:
            return None, False
    query_index = torch.arange(past, past + length, device=device)[:, None]  # (T, 1)
    key_index = torch.arange(past + length, device=device)[None, :]  # (1, past + T)
    visible = (key_index <= query_index)[None, None]  # (1, 1, T, past + T)
    if attention_mask is not None:
        keys = attention_mask[:, None, None, -(past + length) :].bool()  # (B, 1, 1, past + T)
        visible = (visible & keys) | (key_index == query_index)
    return visible, False


class Attention(nn.Module):
    def __init__(self, config: ScratchLMConfig, layer_index: int) -> None:
        super().__init__()
        self.layer_index = layer_index
        self.n_head, self.n_kv_head, self.head_dim = (
            config.n_head,
            config.n_kv_head,
            config.head_dim,
        )
        self.dropout = config.dropout
        d = config.d_model
        self.q_proj = nn.Linear(d, self.n_head * self.head_dim, bias=config.bias)
        self.k_proj = nn.Linear(d, self.n_kv_head * self.head_dim, bias=config.bias)
        self.v_proj = nn.Linear(d, self.n_kv_head * self.head_dim, bias=config.bias)
        self.o_proj = nn.Linear(self.n_head * self.head_dim, d, bias=config.bias)
        self.q_norm = RMSNorm(self.head_dim, config.norm_eps) if config.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, config.norm_eps) if config.qk_norm else None

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        mask: torch.Tensor | None,
        is_causal: bool,
        cache: Cache | None,
    ) -> torch.Tensor:
        batch, length, _ = x.shape
        # (B, T, heads * head_dim) -> (B, heads, T, head_dim)
        q = self.q_proj(x).view(batch, length, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, self.n_kv_head, self.head_dim).transpose(1, 2)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None:
            # k, v become all positions so far: (B, kv_heads, past + T, head_dim)
            k, v = cache.update(k, v, self.layer_index)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal,
            enable_gqa=self.n_kv_head != self.n_head,
        )  # (B, n_head, T, head_dim)
        y = y.transpose(1, 2).reshape(batch, length, self.n_head * self.head_dim)
        return self.o_proj(y)


# --- MLPs -----------------------------------------------------------------------------------------


class MLP(nn.Module):
    """GELU / GELU-tanh / Leaky ReLU / ReLU² (up, activation, down) or SwiGLU (silu(gate) * up)."""

    def __init__(self, config: ScratchLMConfig) -> None:
        super().__init__()
        self.kind, self.leaky_relu_slope = config.mlp, config.leaky_relu_slope
        self.gate_proj = (
            nn.Linear(config.d_model, config.ffn_hidden, bias=config.bias)
            if config.mlp == "swiglu"
            else None
        )
        self.up_proj = nn.Linear(config.d_model, config.ffn_hidden, bias=config.bias)
        self.down_proj = nn.Linear(config.ffn_hidden, config.d_model, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = self.up_proj(x)  # (B, T, ffn_hidden)
        if self.gate_proj is not None:
            hidden = F.silu(self.gate_proj(x)) * up
        elif self.kind == "gelu":
            hidden = F.gelu(up)
        elif self.kind == "gelu_tanh":
            hidden = F.gelu(up, approximate="tanh")
        elif self.kind == "leaky_relu":
            hidden = F.leaky_relu(up, self.leaky_relu_slope)
        else:  # relu2
            hidden = F.relu(up).square()
        return self.down_proj(hidden)


# --- block and model ------------------------------------------------------------------------------


class Block(nn.Module):
    """Pre-norm residual block: x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: ScratchLMConfig, layer_index: int) -> None:
        super().__init__()
        self.attention_norm = make_norm(config, config.d_model)
        self.attention = Attention(config, layer_index)
        self.mlp_norm = make_norm(config, config.d_model)
        self.mlp = MLP(config)
        self.residual_dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        mask: torch.Tensor | None,
        is_causal: bool,
        cache: Cache | None,
    ) -> torch.Tensor:
        attention = self.attention(self.attention_norm(x), rope, mask, is_causal, cache)
        x = x + self.residual_dropout(attention)
        return x + self.residual_dropout(self.mlp(self.mlp_norm(x)))


class ScratchLMPreTrainedModel(PreTrainedModel):
    config_class = ScratchLMConfig
    base_model_prefix = "scratchlm"
    _no_split_modules = ["Block"]  # noqa: RUF012 (a class attribute transformers reads)
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """scratchlm's init (normal(0, init_std), norms at one, biases at zero) for weights that a
        checkpoint does not hold, e.g. a model built from the config alone."""
        std = self.config.init_std
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, (nn.LayerNorm, RMSNorm)):
            nn.init.ones_(module.weight)
        bias = getattr(module, "bias", None)
        if isinstance(bias, torch.Tensor):
            nn.init.zeros_(bias)


class ScratchLMForCausalLM(ScratchLMPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "token_embedding.weight"}  # noqa: RUF012

    def __init__(self, config: ScratchLMConfig) -> None:
        super().__init__(config)
        d = config.d_model
        self.token_embedding = nn.Embedding(config.padded_vocab_size, d)
        self.position_embedding = (
            nn.Embedding(config.context_length, d) if config.position == "learned" else None
        )
        self.embedding_norm = RMSNorm(d, config.norm_eps) if config.embedding_norm else None
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, index) for index in range(config.n_layer))
        self.final_norm = make_norm(config, d)
        self.lm_head = nn.Linear(d, config.padded_vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.token_embedding

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.token_embedding = value  # type: ignore[assignment]

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        past_key_values: Cache | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """input_ids (B, T) -> logits (B, T, padded_vocab_size).

        inputs_embeds, when given instead of input_ids, are token embeddings (B, T, d_model)
        before the embedding norm. position_ids (B or 1, T) default to consecutive positions
        after the cached ones; `generate()` derives them from a padded attention_mask."""
        config = self.config
        cache = cache if cache is not None else past_key_values
        if use_cache and cache is None:
            cache = DynamicCache()
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("pass input_ids or inputs_embeds")
            inputs_embeds = self.token_embedding(input_ids)
        x = inputs_embeds  # (B, T, d_model)
        length = x.shape[1]
        past = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past, past + length, device=x.device)[None]  # (1, T)
        mask, is_causal = attention_mask_for(attention_mask, length, past, x.device)
        if self.embedding_norm is not None:
            x = self.embedding_norm(x)
        rope = None
        if self.position_embedding is not None:
            x = x + self.position_embedding(position_ids)
        else:
            rope = rope_cos_sin(position_ids, config.head_dim, config.rope_theta, x.dtype)
        x = self.embedding_dropout(x)
        for block in self.blocks:
            x = block(x, rope, mask, is_causal, cache)
        if logits_to_keep:
            x = x[:, -logits_to_keep:, :]
        logits = self.lm_head(self.final_norm(x))  # (B, T, padded_vocab_size)
        if config.logit_softcap is not None:
            cap = config.logit_softcap
            logits = cap * torch.tanh(logits / cap)
        loss = None
        if labels is not None:
            # labels (B, T) are the input ids: position t predicts token t + 1; -100 is ignored.
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                labels[:, 1:].reshape(-1),
                ignore_index=-100,
            )
        cache_output: dict[str, Any] = {CACHE_FIELD: cache}
        return CausalLMOutputWithPast(loss=loss, logits=logits, **cache_output)
