"""The architecture: a decoder-only transformer, readable top to bottom.

Sections: norms, rotary positions, attention (MHA/GQA/MQA, QK-norm, optional KV cache), MLPs,
the block, the model. Nothing here trains, loads files or parses flags. Build a model with
`build_model(config, device)`: construct on the meta device (no memory), `to_empty` on the target
device, then one explicit `init_weights()`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from scratchlm.config import ModelConfig
from scratchlm.kv_cache import KVCache

# --- norms ----------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalize in float32 for stability under bf16/fp16, return in the input dtype.
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).type_as(x)


def make_norm(config: ModelConfig, dim: int) -> nn.Module:
    if config.norm == "rmsnorm":
        return RMSNorm(dim, config.norm_eps)
    return nn.LayerNorm(dim, eps=config.norm_eps, bias=config.bias)


# --- rotary positions (rotate-half convention, as Hugging Face Llama) -----------------------------


def rope_tables(
    head_dim: int, max_len: int, theta: float, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, each (max_len, head_dim): the frequencies repeat over the two halves."""
    inverse_frequencies = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)
    )
    positions = torch.arange(max_len, dtype=torch.float32, device=device)
    angles = torch.outer(positions, inverse_frequencies)  # (max_len, head_dim / 2)
    angles = torch.cat((angles, angles), dim=-1)  # (max_len, head_dim)
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, heads, T, head_dim); cos/sin broadcastable to it, (B or 1, 1, T, head_dim)."""
    return (x * cos + rotate_half(x) * sin).type_as(x)


# --- attention ------------------------------------------------------------------------------------


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer_index: int) -> None:
        super().__init__()
        assert config.head_dim is not None and config.n_kv_head is not None
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
        mask: AttentionMask,
        kv_cache: KVCache | None,
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
        if kv_cache is not None:
            # k, v become views of all cached positions so far: (B, kv_heads, visible_len, head_dim)
            k, v = kv_cache.write(
                self.layer_index, k, v, mask.cache_start, mask.positions, mask.visible_len
            )
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask.boolean,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=mask.is_causal,
            enable_gqa=self.n_kv_head != self.n_head,
        )  # (B, n_head, T, head_dim)
        y = y.transpose(1, 2).reshape(batch, length, self.n_head * self.head_dim)
        return self.o_proj(y)


class AttentionMask:
    """How queries see keys in one forward, computed once and shared by all layers.

    Without a cache, or when a cache is filled from position 0, SDPA's own causal mask serves
    (fast kernels). A single new token at the end of every row needs no mask. Anything else (rows
    at different positions, a prompt appended to a filled cache) gets an explicit boolean mask:
    key j is visible to a query at position p when j <= p.
    """

    def __init__(
        self,
        *,
        is_causal: bool,
        boolean: torch.Tensor | None,
        cache_start: int | None,
        positions: torch.Tensor | None,
        visible_len: int,
    ) -> None:
        self.is_causal = is_causal
        self.boolean = boolean  # (B or 1, 1, T, visible_len) or None
        self.cache_start = cache_start
        self.positions = positions
        self.visible_len = visible_len


def build_attention_mask(
    batch: int,
    length: int,
    positions: torch.Tensor | None,
    kv_cache: KVCache | None,
    device: torch.device,
) -> tuple[AttentionMask, torch.Tensor]:
    """Returns the mask and the positions of the new tokens: (T,) when they are implicit
    (consecutive, shared by all rows), else (B, T)."""
    if positions is None:
        start = kv_cache.length if kv_cache is not None else 0
        token_positions = torch.arange(start, start + length, device=device)
        visible_len = start + length
        if start == 0:
            mask = AttentionMask(
                is_causal=length > 1,
                boolean=None,
                cache_start=0,
                positions=None,
                visible_len=visible_len,
            )
        elif length == 1:
            mask = AttentionMask(
                is_causal=False,
                boolean=None,
                cache_start=start,
                positions=None,
                visible_len=visible_len,
            )
        else:
            boolean = torch.arange(visible_len, device=device)[None, :] <= token_positions[:, None]
            mask = AttentionMask(
                is_causal=False,
                boolean=boolean[None, None],
                cache_start=start,
                positions=None,
                visible_len=visible_len,
            )
        return mask, token_positions
    if positions.dim() == 1:
        positions = positions.unsqueeze(0).expand(batch, -1)
    visible_len = int(positions.max().item()) + 1
    key_positions = torch.arange(visible_len, device=device)
    boolean = key_positions[None, None, :] <= positions[:, :, None]  # (B, T, visible_len)
    mask = AttentionMask(
        is_causal=False,
        boolean=boolean[:, None],
        cache_start=None,
        positions=positions if kv_cache is not None else None,
        visible_len=visible_len,
    )
    return mask, positions


# --- MLPs -----------------------------------------------------------------------------------------


class MLP(nn.Module):
    """GELU / GELU-tanh / Leaky ReLU / ReLU² (up, activation, down) or SwiGLU (silu(gate) * up)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        assert config.ffn_hidden is not None
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

    def __init__(self, config: ModelConfig, layer_index: int) -> None:
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
        mask: AttentionMask,
        kv_cache: KVCache | None,
    ) -> torch.Tensor:
        x = x + self.residual_dropout(self.attention(self.attention_norm(x), rope, mask, kv_cache))
        return x + self.residual_dropout(self.mlp(self.mlp_norm(x)))


class GPT(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        assert config.padded_vocab_size is not None and config.head_dim is not None
        self.config = config
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
        if config.tie_embeddings:
            self.lm_head.weight = self.token_embedding.weight
        # RoPE tables are computed once and shared by all layers; non-persistent (not in checkpoints).
        self.rope_cos: torch.Tensor
        self.rope_sin: torch.Tensor
        if config.position == "rope":
            cos, sin = rope_tables(config.head_dim, config.context_length, config.rope_theta)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)

    @torch.no_grad()
    def init_weights(self) -> None:
        """Initialize every parameter (the model may come from the meta device with garbage)."""
        config = self.config
        std = config.init_std
        # GPT-2's scaled init for residual outputs keeps the residual stream's variance flat in depth.
        output_std = std / math.sqrt(2 * config.n_layer)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif isinstance(module, (nn.LayerNorm, RMSNorm)):
                nn.init.ones_(module.weight)
                bias = getattr(module, "bias", None)
                if isinstance(bias, torch.Tensor):
                    nn.init.zeros_(bias)
        for block in self.blocks:
            assert isinstance(block, Block)
            for output in (block.attention.o_proj, block.mlp.down_proj):
                if config.zero_init_output:
                    nn.init.zeros_(output.weight)
                else:
                    nn.init.normal_(output.weight, mean=0.0, std=output_std)
        if config.tie_embeddings:
            # Tied: the embedding's init serves both; re-tie in case to_empty split them.
            self.lm_head.weight = self.token_embedding.weight
        self.reset_buffers()

    @torch.no_grad()
    def reset_buffers(self) -> None:
        """Recompute non-persistent buffers (after to_empty, or after loading weights)."""
        if self.config.position == "rope":
            assert self.config.head_dim is not None
            device = self.token_embedding.weight.device
            cos, sin = rope_tables(
                self.config.head_dim, self.config.context_length, self.config.rope_theta, device
            )
            self.rope_cos, self.rope_sin = cos, sin

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        *,
        last_token_only: bool = False,
    ) -> torch.Tensor:
        """input_ids (B, T) -> logits (B, T, padded_vocab) (or (B, 1, padded_vocab) if last_token_only).

        positions: None means consecutive from 0 (or from the cache's length); a (B, T) or (T,)
        tensor places every token explicitly (rows at different positions, continuous batching).
        """
        batch, length = input_ids.shape
        mask, token_positions = build_attention_mask(
            batch, length, positions, kv_cache, input_ids.device
        )
        x = self.token_embedding(input_ids)  # (B, T, d_model)
        if self.embedding_norm is not None:
            x = self.embedding_norm(x)
        rope = None
        if self.position_embedding is not None:
            x = x + self.position_embedding(token_positions)
        else:
            cos, sin = self.rope_cos[token_positions], self.rope_sin[token_positions]
            if cos.dim() == 2:  # (T, head_dim): one set of positions for all rows
                cos, sin = cos.unsqueeze(0), sin.unsqueeze(0)
            # (B or 1, T, head_dim) -> (B or 1, 1, T, head_dim), broadcast over heads
            rope = (cos.unsqueeze(1).to(x.dtype), sin.unsqueeze(1).to(x.dtype))
        x = self.embedding_dropout(x)
        for block in self.blocks:
            x = block(x, rope, mask, kv_cache)
        if kv_cache is not None:
            kv_cache.advance(None if positions is None else token_positions, length, batch)
        if last_token_only:
            x = x[:, -1:, :]
        logits = self.lm_head(self.final_norm(x))
        if self.config.logit_softcap is not None:
            cap = self.config.logit_softcap
            logits = cap * torch.tanh(logits / cap)
        return logits


def build_model(
    config: ModelConfig, device: torch.device | str = "cpu", *, initialize: bool = True
) -> GPT:
    """Construct on the meta device (no memory), materialize on `device`, then initialize once."""
    with torch.device("meta"):
        model = GPT(config)
    model.to_empty(device=device)
    if config.tie_embeddings:
        model.lm_head.weight = model.token_embedding.weight
    if initialize:
        model.init_weights()
    else:
        model.reset_buffers()
    return model


def count_parameters(model: nn.Module) -> int:
    """Unique parameters (a tied embedding counts once)."""
    return sum(parameter.numel() for parameter in model.parameters())
