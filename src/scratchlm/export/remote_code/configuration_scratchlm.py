"""The configuration of a scratchlm model in Hugging Face transformers (remote code).

Standalone: imports only transformers (no scratchlm). The fields are scratchlm's `ModelConfig`
fields under their own names; `attribute_map` gives transformers its standard names for them
(hidden_size, num_hidden_layers, ...). `vocab_size` is the tokenizer's true size and
`padded_vocab_size` the number of embedding rows (the logits have that many columns).
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig


class ScratchLMConfig(PretrainedConfig):
    model_type = "scratchlm"
    attribute_map = {  # noqa: RUF012 (a class attribute that transformers reads as is)
        "hidden_size": "d_model",
        "num_hidden_layers": "n_layer",
        "num_attention_heads": "n_head",
        "num_key_value_heads": "n_kv_head",
        "intermediate_size": "ffn_hidden",
        "max_position_embeddings": "context_length",
        "rms_norm_eps": "norm_eps",
    }

    def __init__(
        self,
        name: str = "custom",
        vocab_size: int = 50257,
        vocab_pad_multiple: int = 64,
        padded_vocab_size: int | None = None,
        n_layer: int = 12,
        d_model: int = 768,
        n_head: int = 12,
        n_kv_head: int | None = None,
        head_dim: int | None = None,
        ffn_hidden: int | None = None,
        ffn_multiplier: float = 4.0,
        ffn_multiple_of: int = 1,
        context_length: int = 1024,
        position: str = "learned",
        rope_theta: float = 10000.0,
        norm: str = "layernorm",
        norm_eps: float = 1e-5,
        mlp: str = "gelu",
        leaky_relu_slope: float = 0.01,
        qk_norm: bool = False,
        embedding_norm: bool = False,
        bias: bool = True,
        tie_embeddings: bool = True,
        dropout: float = 0.0,
        zero_init_output: bool = False,
        init_std: float = 0.02,
        logit_softcap: float | None = None,
        default_gpu_precision: str = "bf16",
        description: str = "",
        **kwargs: Any,
    ) -> None:
        if position not in ("learned", "rope"):
            raise ValueError(f"position must be 'learned' or 'rope' (got {position!r})")
        if norm not in ("layernorm", "rmsnorm"):
            raise ValueError(f"norm must be 'layernorm' or 'rmsnorm' (got {norm!r})")
        if mlp not in ("gelu", "gelu_tanh", "leaky_relu", "swiglu", "relu2"):
            raise ValueError(
                f"mlp must be one of gelu, gelu_tanh, leaky_relu, swiglu, relu2 (got {mlp!r})"
            )
        self.name = name
        self.vocab_size = vocab_size
        self.vocab_pad_multiple = vocab_pad_multiple
        multiple = max(1, vocab_pad_multiple)
        self.padded_vocab_size = padded_vocab_size or -(-vocab_size // multiple) * multiple
        self.n_layer = n_layer
        self.d_model = d_model
        self.n_head = n_head
        self.n_kv_head = n_kv_head or n_head
        self.head_dim = head_dim or d_model // n_head
        self.ffn_hidden = ffn_hidden or int(ffn_multiplier * d_model)
        self.ffn_multiplier = ffn_multiplier
        self.ffn_multiple_of = ffn_multiple_of
        self.context_length = context_length
        self.position = position
        self.rope_theta = rope_theta
        self.norm = norm
        self.norm_eps = norm_eps
        self.mlp = mlp
        self.leaky_relu_slope = leaky_relu_slope
        self.qk_norm = qk_norm
        self.embedding_norm = embedding_norm
        self.bias = bias
        self.tie_embeddings = tie_embeddings
        self.dropout = dropout
        self.zero_init_output = zero_init_output
        self.init_std = init_std
        self.logit_softcap = logit_softcap
        self.default_gpu_precision = default_gpu_precision
        self.description = description
        # transformers ties lm_head to the token embedding when this is set.
        kwargs["tie_word_embeddings"] = tie_embeddings
        super().__init__(**kwargs)
