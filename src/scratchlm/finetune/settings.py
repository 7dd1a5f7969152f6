"""Fine-tuning's defaults, where they differ from pretraining's, and its own (LoRA) settings:
shared by `scratchlm finetune` and `scratchlm.finetune(...)`. Free of torch, for a fast `--help`."""

from __future__ import annotations

from typing import Any

FINETUNE_DEFAULTS: dict[str, Any] = {
    "warmup_steps": 20,
    "eval_every": 50,
    "save_every": 200,
    "sample_tokens": 48,
    "tokenizer": "base",
}
FINETUNE_MAX_STEPS = 300  # when no budget is given
FINETUNE_EXCLUDED = frozenset(
    {"preset", "set", "tokenizer", "vocab_size", "tokenizer_sample_chars", "context_length"}
)


# finetune's own settings (besides TrainConfig's): flag defaults, and their types in a --config file
LORA_DEFAULTS: dict[str, Any] = {
    "lora_rank": 0,
    "lora_alpha": 16.0,
    "lora_dropout": 0.0,
    "lora_targets": "q_proj,k_proj,v_proj,o_proj",
}
LORA_TYPES: dict[str, Any] = {name: type(value) for name, value in LORA_DEFAULTS.items()}
