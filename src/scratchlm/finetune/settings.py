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
    {
        "preset",
        "set",
        "tokenizer",
        "vocab_size",
        "tokenizer_sample_chars",
        "windows",
    }
)


# finetune's own settings (besides TrainConfig's): flag defaults, and their types in a --config file
LORA_DEFAULTS: dict[str, Any] = {
    "lora_rank": 0,
    "lora_alpha": 16.0,
    "lora_dropout": 0.0,
    "lora_targets": "q_proj,k_proj,v_proj,o_proj",
}
LORA_TYPES: dict[str, Any] = {name: type(value) for name, value in LORA_DEFAULTS.items()}


# --- rl: reinforcement learning from verifiable rewards (finetune/rl.py) ---------------------------
# rl's own settings: flag defaults, and their types in a --config file / the Python API.
RL_DEFAULTS: dict[str, Any] = {
    "task": None,  # required: a built-in task name (finetune.tasks.TASK_NAMES)
    "task_data": None,  # the file of --task file
    "reward": None,  # the task's own reward when not given
    "prompts_per_step": 8,
    "group_size": 8,
    "temperature": 1.0,
    "max_new_tokens": 64,
    "updates_per_batch": 1,
    "clip": 0.2,
    "kl": 0.0,
    "no_std": False,
    "train_problems": 5000,
    "eval_problems": 100,
    "pass_k": None,  # the group size
    "eval_samples": None,  # --pass-k
}
RL_TYPES: dict[str, Any] = {
    "task": str | None,
    "task_data": str | None,
    "reward": str | None,
    "prompts_per_step": int,
    "group_size": int,
    "temperature": float,
    "max_new_tokens": int,
    "updates_per_batch": int,
    "clip": float,
    "kl": float,
    "no_std": bool,
    "train_problems": int,
    "eval_problems": int,
    "pass_k": int | None,
    "eval_samples": int | None,
}
# rl's TrainConfig defaults where they differ from pretraining's: no weight decay (nanochat's RL),
# no loss-spike backtracking (a policy-gradient loss hovers around 0 and changes sign, so "3x its
# moving average" means nothing), a log line per step (each step is many generations).
RL_TRAIN_DEFAULTS: dict[str, Any] = {
    "warmup_steps": 5,
    "eval_every": 25,
    "save_every": 50,
    "log_every": 1,
    "batch_size": 16,
    "weight_decay": 0.0,
    "spike_factor": 0.0,
    "tokenizer": "base",
}
RL_MAX_STEPS = 100  # when no budget is given
# TrainConfig settings that do not apply to rl (the prompts come from --task, the evaluation is
# pass@k on held-out problems): refused with a reason rather than ignored.
RL_EXCLUDED = FINETUNE_EXCLUDED | frozenset(
    {
        "context_length",
        "data",
        "val_data",
        "val_fraction",
        "text_field",
        "ascii_only",
        "data_workers",
        "token_weighting",
        "token_weighting_power",
        "micro_batch",
        "tokens_per_step",
        "max_tokens",
        "eval_tokens",
        "sample_tokens",
        "sample_prompt",
        "spike_factor",
        "spike_window",
        "spike_lr_factor",
        "max_backtracks",
    }
)


# What dpo does not take besides finetune's exclusions: a new context length (finetune's context
# extension), text-reading options (pairs are records) and token weighting (the loss weighs whole
# replies).
DPO_EXCLUDED = FINETUNE_EXCLUDED | frozenset(
    {
        "context_length",
        "text_field",
        "ascii_only",
        "data_workers",
        "token_weighting",
        "token_weighting_power",
    }
)

# dpo's own settings (besides TrainConfig's and LoRA's): flag defaults, and their types in a
# --config file. beta None: 0.1 for sigmoid and ipo, SimPO's 2.0 for simpo.
DPO_LOSSES = ("sigmoid", "ipo", "simpo")
DPO_DEFAULTS: dict[str, Any] = {
    "loss": "sigmoid",
    "beta": None,
    "simpo_gamma": 0.5,
}
DPO_TYPES: dict[str, Any] = {"loss": str, "beta": float | None, "simpo_gamma": float}
DPO_DEFAULT_BETA = 0.1
SIMPO_DEFAULT_BETA = 2.0  # SimPO's beta scales average log-probs (Meng et al. 2024 use 2-2.5)
# DPO moves an SFT model far less than SFT did (published recipes run ~10x below their SFT rate):
# FINETUNE's 2e-4 full / 1e-3 LoRA divided by 4. On preference_rasbt.json from the quickstart's
# 1.1M-parameter SFT model (150 steps of 8 pairs) 5e-5 reached held-out DPO loss 0.34 vs 0.43 for
# 2e-5; LoRA rank 8 at 2.5e-4 reached 0.51.
DPO_FULL_LR = 5e-5
DPO_LORA_LR = 2.5e-4
