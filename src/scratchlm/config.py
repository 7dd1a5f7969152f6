"""The one model configuration: `ModelConfig`, the presets (plain data) and validation.

Every architecture of the seed systems is a point in this space: learned or rotary positions,
LayerNorm or RMSNorm, five MLP kinds, MHA/GQA/MQA, QK-norm, an embedding norm, biases, tied
embeddings. Derived fields (head dim, KV heads, FFN width, padded vocab) are filled in
`__post_init__`, and the whole thing round-trips through `to_dict` / `from_dict` into config.json.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from scratchlm.errors import ScratchLMError

PositionKind = Literal["learned", "rope"]
NormKind = Literal["layernorm", "rmsnorm"]
MlpKind = Literal["gelu", "gelu_tanh", "leaky_relu", "swiglu", "relu2"]

POSITION_KINDS: tuple[str, ...] = ("learned", "rope")
NORM_KINDS: tuple[str, ...] = ("layernorm", "rmsnorm")
MLP_KINDS: tuple[str, ...] = ("gelu", "gelu_tanh", "leaky_relu", "swiglu", "relu2")


def round_up(value: int, multiple: int) -> int:
    return ((value + multiple - 1) // multiple) * multiple


# Limits on a config, checked before anything is derived or allocated. They sit far above any
# model scratchlm trains or imports (the largest public models have ~130 layers, d_model 16384,
# head_dim 256, a 128k context and a 256k vocabulary) and far below what would hang or exhaust
# memory while a config.json from an unknown checkpoint is checked or its model is built.
MAX_LAYERS = 1024
MAX_D_MODEL = 65536
MAX_HEADS = 1024
MAX_HEAD_DIM = 16384
MAX_FFN_HIDDEN = 524288
MAX_CONTEXT_LENGTH = 1 << 20  # 1,048,576 tokens
MAX_VOCAB_SIZE = 1 << 20
MAX_MULTIPLE = 65536  # vocab_pad_multiple and ffn_multiple_of
MAX_FFN_MULTIPLIER = 64.0
# context_length x head_dim: the two RoPE tables are built with the model (2 x 512 MiB in fp32).
MAX_ROPE_TABLE = 1 << 27
MAX_PARAMETERS = 10**12  # 4 TB of fp32 weights

_INT_LIMITS: dict[str, tuple[int, int]] = {
    "vocab_size": (1, MAX_VOCAB_SIZE),
    "vocab_pad_multiple": (0, MAX_MULTIPLE),
    "n_layer": (1, MAX_LAYERS),
    "d_model": (1, MAX_D_MODEL),
    "n_head": (1, MAX_HEADS),
    "n_kv_head": (1, MAX_HEADS),
    "head_dim": (1, MAX_HEAD_DIM),
    "ffn_hidden": (1, MAX_FFN_HIDDEN),
    "ffn_multiple_of": (0, MAX_MULTIPLE),
    "context_length": (1, MAX_CONTEXT_LENGTH),
}
_OPTIONAL_FIELDS = frozenset({"n_kv_head", "head_dim", "ffn_hidden", "logit_softcap"})
_FLOAT_FIELDS = (
    "ffn_multiplier",
    "rope_theta",
    "norm_eps",
    "leaky_relu_slope",
    "dropout",
    "init_std",
    "logit_softcap",
)
_BOOL_FIELDS = ("qk_norm", "embedding_norm", "bias", "tie_embeddings", "zero_init_output")
_STRING_FIELDS = ("name", "position", "norm", "mlp", "default_gpu_precision", "description")


def _shown(value: Any) -> str:
    """A value for an error message, kept short (a config from a stranger may hold anything)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_fields(config: ModelConfig) -> None:
    """Types and limits of the given fields; a ScratchLMError naming every bad field.

    Runs before any derived size is computed, so that arithmetic on the fields stays cheap and
    cannot overflow."""
    problems: list[str] = []
    for name, (low, high) in _INT_LIMITS.items():
        value = getattr(config, name)
        if value is None and name in _OPTIONAL_FIELDS:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            problems.append(f"{name} must be an integer (got {_shown(value)})")
        elif not low <= value <= high:
            problems.append(f"{name} must be in [{low}, {high}] (got {_shown(value)})")
    for name in _FLOAT_FIELDS:
        value = getattr(config, name)
        if value is None and name in _OPTIONAL_FIELDS:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            problems.append(f"{name} must be a number (got {_shown(value)})")
        elif not math.isfinite(value):
            problems.append(f"{name} must be finite (got {_shown(value)})")
    for name in _BOOL_FIELDS:
        if not isinstance(getattr(config, name), bool):
            problems.append(f"{name} must be true or false (got {_shown(getattr(config, name))})")
    for name in _STRING_FIELDS:
        if not isinstance(getattr(config, name), str):
            problems.append(f"{name} must be a string (got {_shown(getattr(config, name))})")
    if problems:  # the range checks below compare numbers: only once the types are right
        raise ScratchLMError("invalid model config: " + "; ".join(problems))
    if config.position not in POSITION_KINDS:
        problems.append(f"position must be one of {POSITION_KINDS} (got {_shown(config.position)})")
    if config.norm not in NORM_KINDS:
        problems.append(f"norm must be one of {NORM_KINDS} (got {_shown(config.norm)})")
    if config.mlp not in MLP_KINDS:
        problems.append(f"mlp must be one of {MLP_KINDS} (got {_shown(config.mlp)})")
    if not 0.0 <= config.dropout < 1.0:
        problems.append(f"dropout must be in [0, 1) (got {config.dropout})")
    if config.logit_softcap is not None and config.logit_softcap <= 0:
        problems.append(f"logit_softcap must be positive or null (got {config.logit_softcap})")
    if not 0 < config.ffn_multiplier <= MAX_FFN_MULTIPLIER:
        problems.append(
            f"ffn_multiplier must be in (0, {MAX_FFN_MULTIPLIER:g}] (got {config.ffn_multiplier})"
        )
    if config.rope_theta <= 0:
        problems.append(f"rope_theta must be positive (got {config.rope_theta})")
    if config.norm_eps < 0:
        problems.append(f"norm_eps must be >= 0 (got {config.norm_eps})")
    if config.init_std < 0:
        problems.append(f"init_std must be >= 0 (got {config.init_std})")
    if problems:
        raise ScratchLMError("invalid model config: " + "; ".join(problems))


@dataclass
class ModelConfig:
    """A decoder-only transformer. Fields left as None are derived in `__post_init__`."""

    name: str = "custom"
    # Vocabulary: `vocab_size` is the tokenizer's true size; the embedding and output layer have
    # `padded_vocab_size` rows (a multiple of `vocab_pad_multiple`, which keeps matmuls fast).
    vocab_size: int = 50257
    vocab_pad_multiple: int = 64
    padded_vocab_size: int | None = None
    n_layer: int = 12
    d_model: int = 768
    n_head: int = 12
    n_kv_head: int | None = None  # None = n_head (MHA); 1 = MQA; in between = GQA
    head_dim: int | None = None  # None = d_model // n_head
    # FFN width: explicit `ffn_hidden`, else `ffn_multiplier * d_model` rounded up to `ffn_multiple_of`.
    ffn_hidden: int | None = None
    ffn_multiplier: float = 4.0
    ffn_multiple_of: int = 1
    context_length: int = 1024
    position: PositionKind = "learned"
    rope_theta: float = 10000.0
    norm: NormKind = "layernorm"
    norm_eps: float = 1e-5
    mlp: MlpKind = "gelu"
    leaky_relu_slope: float = 0.01
    qk_norm: bool = False  # per-head RMSNorm on queries and keys (before RoPE)
    embedding_norm: bool = False  # RMSNorm on the token embeddings
    bias: bool = True  # biases in linear layers (and LayerNorm)
    tie_embeddings: bool = True
    dropout: float = 0.0
    zero_init_output: bool = False  # zero-init attention and MLP output projections
    init_std: float = 0.02
    logit_softcap: float | None = None  # tanh soft-capping of the output logits (None = off)
    # Informational: the precision the preset's authors trained in on GPU.
    default_gpu_precision: str = "bf16"
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        # The given fields first: a config from an unknown checkpoint may hold any JSON value, and
        # the derived sizes below must be computed only from bounded integers.
        check_fields(self)
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if self.head_dim is None:
            if self.d_model % self.n_head != 0:
                raise ScratchLMError(
                    f"d_model {self.d_model} is not divisible by n_head {self.n_head}; choose "
                    "n_head that divides d_model, or set head_dim explicitly"
                )
            self.head_dim = self.d_model // self.n_head
        if self.ffn_hidden is None:
            self.ffn_hidden = round_up(
                int(self.ffn_multiplier * self.d_model), max(1, self.ffn_multiple_of)
            )
        self.padded_vocab_size = round_up(self.vocab_size, max(1, self.vocab_pad_multiple))
        self.validate()

    def validate(self) -> None:
        """Every field within its type and limits, and the fields consistent with each other."""
        check_fields(self)
        problems: list[str] = []
        assert self.n_kv_head is not None and self.head_dim is not None
        assert self.ffn_hidden is not None
        if self.n_head % self.n_kv_head != 0:
            problems.append(
                f"n_kv_head {self.n_kv_head} must divide n_head {self.n_head} (MHA: equal, MQA: 1)"
            )
        if self.position == "rope" and self.head_dim % 2 != 0:
            problems.append(f"RoPE needs an even head_dim (got {self.head_dim})")
        if self.position == "rope" and self.context_length * self.head_dim > MAX_ROPE_TABLE:
            problems.append(
                f"context_length x head_dim must be at most {MAX_ROPE_TABLE} (the RoPE tables; "
                f"got {self.context_length} x {self.head_dim})"
            )
        if not problems and self.n_params > MAX_PARAMETERS:
            problems.append(
                f"the config describes {self.n_params:,} parameters, more than the limit of "
                f"{MAX_PARAMETERS:,}"
            )
        if problems:
            raise ScratchLMError("invalid model config: " + "; ".join(problems))

    # --- serialization --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        if not isinstance(values, dict):
            raise ScratchLMError(
                f"a model config must be a JSON object of fields (got {_shown(values)})"
            )
        known = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ScratchLMError(
                f"unknown model config field(s) {unknown}; known fields are {sorted(known)}"
            )
        values = dict(values)
        values.pop("padded_vocab_size", None)  # always derived
        return cls(**values)

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed; derived fields are recomputed unless given."""
        values = self.to_dict()
        values.pop("padded_vocab_size", None)
        for derived in ("n_kv_head", "head_dim", "ffn_hidden"):
            # Keep a derived value only if the fields it comes from are unchanged.
            if derived not in changes and _derived_from(derived) & set(changes):
                values[derived] = None
        values.update(changes)
        return ModelConfig.from_dict(values)

    # --- sizes ----------------------------------------------------------------------------------
    def parameter_counts(self) -> dict[str, int]:
        """Exact parameter counts, computed from shapes (no weights are allocated)."""
        assert self.n_kv_head is not None and self.head_dim is not None
        assert self.ffn_hidden is not None and self.padded_vocab_size is not None
        d, hd, bias = self.d_model, self.head_dim, int(self.bias)
        norm_params = d * (2 if self.norm == "layernorm" and self.bias else 1)
        q_out, kv_out = self.n_head * hd, self.n_kv_head * hd
        attention = d * (q_out + 2 * kv_out) + bias * (q_out + 2 * kv_out) + q_out * d + bias * d
        if self.qk_norm:
            attention += 2 * hd
        if self.mlp == "swiglu":
            mlp = 3 * d * self.ffn_hidden + bias * (2 * self.ffn_hidden + d)
        else:
            mlp = 2 * d * self.ffn_hidden + bias * (self.ffn_hidden + d)
        per_layer = attention + mlp + 2 * norm_params
        embedding = self.padded_vocab_size * d
        positions = self.context_length * d if self.position == "learned" else 0
        head = 0 if self.tie_embeddings else self.padded_vocab_size * d
        extra_norms = norm_params + (d if self.embedding_norm else 0)
        total = self.n_layer * per_layer + embedding + positions + head + extra_norms
        return {
            "n_params": total,
            "n_params_non_embedding": total - embedding - positions - head,
            "n_params_embedding": embedding + positions + head,
            "n_params_per_layer": per_layer,
        }

    @property
    def n_params(self) -> int:
        return self.parameter_counts()["n_params"]


def _derived_from(derived: str) -> set[str]:
    return {
        "n_kv_head": {"n_head"},
        "head_dim": {"d_model", "n_head"},
        "ffn_hidden": {"d_model", "ffn_multiplier", "ffn_multiple_of"},
    }[derived]


def model_flops_per_token(config: ModelConfig) -> float:
    """Training FLOPs per token (forward + backward), PaLM appendix B convention:

        6 * N  +  12 * n_layer * n_head * head_dim * context_length

    N counts the weights of every matmul (no embeddings, norms or biases, which cost next to
    nothing): per layer q (d_model x n_head*head_dim), k and v (d_model x n_kv_head*head_dim each,
    so GQA/MQA is counted as it really is), o (n_head*head_dim x d_model), the MLP (3 matrices
    d_model x ffn_hidden for swiglu, 2 otherwise); plus the output head (padded_vocab_size x
    d_model), which is a matmul even when its weight is tied to the embedding. A matmul with W
    costs 2 FLOPs per weight forward and 4 backward, hence 6. The second term is the attention
    scores (QK^T) and the weighted values (AV): 2 matmuls x 2 FLOPs x 3 (forward + backward) per
    query-head dimension and context position, counted over the full context (no causal
    halving), as PaLM does.
    """
    assert config.n_kv_head is not None and config.head_dim is not None
    assert config.ffn_hidden is not None and config.padded_vocab_size is not None
    d, head_dim = config.d_model, config.head_dim
    q_width, kv_width = config.n_head * head_dim, config.n_kv_head * head_dim
    attention = d * q_width + 2 * d * kv_width + q_width * d
    mlp_matrices = 3 if config.mlp == "swiglu" else 2
    mlp = mlp_matrices * d * config.ffn_hidden
    head = config.padded_vocab_size * d
    matmul_params = config.n_layer * (attention + mlp) + head
    attention_flops = 12 * config.n_layer * config.n_head * head_dim * config.context_length
    return float(6 * matmul_params + attention_flops)


# --- presets: plain data --------------------------------------------------------------------------
# Each preset is a dict of ModelConfig fields. The seed systems' presets keep their published
# architecture; `tiny`/`small` are CPU defaults in Llama math (so they export losslessly).
_LLAMA_MATH: dict[str, Any] = {
    "position": "rope",
    "norm": "rmsnorm",
    "norm_eps": 1e-5,
    "mlp": "swiglu",
    "bias": False,
    "qk_norm": False,
    "embedding_norm": False,
}
_GPT2_MATH: dict[str, Any] = {
    "position": "learned",
    "norm": "layernorm",
    "norm_eps": 1e-5,
    "mlp": "gelu_tanh",
    "bias": True,
    "tie_embeddings": True,
}

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        **_LLAMA_MATH,
        "description": "CPU default for tests and quick runs (~1M params + embeddings)",
        "n_layer": 4,
        "d_model": 128,
        "n_head": 4,
        "ffn_hidden": 384,
        "context_length": 256,
        "vocab_size": 4096,
        "tie_embeddings": True,
        # QK-norm won the speedrun at equal time (docs/speedrun.md); exports as Qwen3.
        "qk_norm": True,
    },
    "small": {
        **_LLAMA_MATH,
        "description": "CPU model for longer laptop runs (~5M params + embeddings), GQA",
        "n_layer": 6,
        "d_model": 256,
        "n_head": 8,
        "n_kv_head": 4,
        "ffn_hidden": 768,
        "context_length": 512,
        "vocab_size": 4096,
        "tie_embeddings": True,
        "qk_norm": True,
    },
    "kia-1.6b": {
        **_GPT2_MATH,
        "description": "Kia seed: GPT-2 XL-like 1.6B decoder, bf16 on GPU",
        "n_layer": 32,
        "d_model": 2048,
        "n_head": 32,
        "context_length": 2048,
        "vocab_size": 50257,
    },
    "antimatter-300m": {
        **_GPT2_MATH,
        "description": "Antimatter seed: 300M, Leaky ReLU MLP, learned positions, pre-LN + final LN",
        "n_layer": 24,
        "d_model": 1024,
        "n_head": 16,
        "ffn_hidden": 4096,
        "context_length": 2048,
        "mlp": "leaky_relu",
        "vocab_size": 50257,
        "default_gpu_precision": "fp16",
    },
    "akane-124m": {
        "description": "Akane seed: GQA, shared RoPE, QK-norm, embedding norm, SwiGLU, zero-init outputs",
        "n_layer": 12,
        "d_model": 768,
        "n_head": 12,
        "n_kv_head": 6,
        "ffn_multiplier": 8 / 3,
        "ffn_multiple_of": 256,
        "context_length": 1024,
        "position": "rope",
        "rope_theta": 10000.0,
        "norm": "rmsnorm",
        "norm_eps": 1e-6,
        "mlp": "swiglu",
        "qk_norm": True,
        "embedding_norm": True,
        "bias": False,
        "tie_embeddings": True,
        "zero_init_output": True,
        "vocab_size": 50304,
    },
    "aksis-small": {
        **_GPT2_MATH,
        "description": "Aksis seed: small GPT, learned positions, pre-LN, GELU",
        "mlp": "gelu",
        "n_layer": 6,
        "d_model": 512,
        "n_head": 8,
        "ffn_hidden": 2048,
        "context_length": 512,
        "vocab_size": 50257,
    },
    "ai4india": {
        "description": "ai4india seed: RMSNorm, multi-head attention, GELU MLP, RoPE (12L/768d/12h)",
        "n_layer": 12,
        "d_model": 768,
        "n_head": 12,
        "ffn_hidden": 3072,
        "context_length": 1024,
        "position": "rope",
        "norm": "rmsnorm",
        "mlp": "gelu",
        "bias": False,
        "tie_embeddings": True,
        "vocab_size": 32000,
    },
    "nanogpt-cpu": {
        "description": "nanoGPT's CPU shakespeare-char model: the speedrun's in-run baseline",
        "n_layer": 4,
        "d_model": 128,
        "n_head": 4,
        "context_length": 64,
        "position": "learned",
        "norm": "layernorm",
        "mlp": "gelu",
        "bias": False,
        "tie_embeddings": True,
        "dropout": 0.0,
        "vocab_size": 65,
    },
    "llama-15m": {
        **_LLAMA_MATH,
        "description": "Llama math, llama2.c stories15M sizes",
        "n_layer": 6,
        "d_model": 288,
        "n_head": 6,
        "ffn_hidden": 768,
        "context_length": 256,
        "vocab_size": 32000,
        "tie_embeddings": True,
    },
    "llama-42m": {
        **_LLAMA_MATH,
        "description": "Llama math, llama2.c stories42M sizes",
        "n_layer": 8,
        "d_model": 512,
        "n_head": 8,
        "ffn_hidden": 1376,
        "context_length": 1024,
        "vocab_size": 32000,
        "tie_embeddings": True,
    },
    "llama-120m": {
        **_LLAMA_MATH,
        "description": "Llama math with GQA (12 query / 4 KV heads), untied head",
        "n_layer": 12,
        "d_model": 768,
        "n_head": 12,
        "n_kv_head": 4,
        "ffn_hidden": 2048,
        "context_length": 1024,
        "vocab_size": 32000,
        "tie_embeddings": False,
    },
}


def preset_config(name: str, **overrides: Any) -> ModelConfig:
    """The ModelConfig of a preset, with optional field overrides."""
    if name not in PRESETS:
        raise ScratchLMError(
            f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)} (see `scratchlm presets`)"
        )
    values = {"name": name, **PRESETS[name], **overrides}
    return ModelConfig.from_dict(values)


def format_count(count: int) -> str:
    """1_234_567 -> '1.23M'."""
    if count < 1000:
        return str(count)
    exponent = min(int(math.log10(count) // 3), 4)
    unit = ["", "K", "M", "B", "T"][exponent]
    return f"{count / 1000**exponent:.3g}{unit}"
