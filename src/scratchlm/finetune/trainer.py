"""Fine-tuning = the trainer with a base checkpoint, supervised data and optionally LoRA.

Everything the trainer does (evaluation with samples, checkpoints, best/, exact resume, progress,
metrics, schedules, budgets) applies unchanged; this subclass only swaps where the tokenizer,
model and batches come from, and how LoRA weights are saved:
- step checkpoints hold the merged weights in the plain layout (so every command reads them as
  they are), plus `adapter.safetensors` with the adapters alone;
- resuming a LoRA run rebuilds base + adapters (the base checkpoint must still exist).
A plain-text --data continues pretraining with the base tokenizer (the seeds' persona stage).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from scratchlm.chat_template import render
from scratchlm.checkpoint import (
    chat_template_version,
    checkpoint_config,
    load_model_state,
    read_metadata,
    read_weights,
    resolve_checkpoint,
)
from scratchlm.config import ModelConfig
from scratchlm.errors import ScratchLMError
from scratchlm.finetune import datasets
from scratchlm.finetune.lora import (
    LoRASettings,
    adapter_state,
    apply_lora,
    load_adapter_state,
    merged_state,
)
from scratchlm.model import GPT, build_model
from scratchlm.tokenizer import Tokenizer
from scratchlm.training.run_config import TrainConfig
from scratchlm.training.trainer import Trainer, TrainingResult

ADAPTER_FILE = "adapter.safetensors"
FULL_FINETUNE_LR = 2e-4
LORA_LR = 1e-3


def extended_context(config: ModelConfig, context_length: int, *, lora: bool) -> ModelConfig:
    """The base model's config with another context length (`finetune --context-length`).

    For rotary positions, which are computed for any position: the weights are unchanged, and
    fine-tuning on longer examples teaches the new positions ("train short, extend late"; the
    quickstart pretrains at 256 tokens and fine-tunes its chat model at 512). Learned positions
    are a weight of the context's exact length.
    """
    if config.position != "rope":
        raise ScratchLMError(
            f"--context-length {context_length}: the base model's positions are learned, a weight "
            f"of exactly {config.context_length} positions; drop --context-length (or pass "
            f"{config.context_length}), or fine-tune a model with rotary positions"
        )
    if lora:
        raise ScratchLMError(
            f"--context-length {context_length} changes the base model's context "
            f"({config.context_length}), which LoRA adapters cannot carry (merge-lora rebuilds the "
            "base as it was); fine-tune all weights (drop --lora-rank), or keep the base's context"
        )
    return config.replace(context_length=context_length)


class FinetuneTrainer(Trainer):
    def __init__(
        self,
        config: TrainConfig,
        *,
        base: str,
        lora: LoRASettings | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.base_dir = resolve_checkpoint(base).resolve()
        self.base_metadata = read_metadata(self.base_dir)
        self.lora = lora
        self.supervised = datasets.is_sft_file(config.data)
        if config.lr is None:
            config = dataclasses.replace(config, lr=LORA_LR if lora else FULL_FINETUNE_LR)
        if lora is not None and config.fsdp:
            raise ScratchLMError(
                "--fsdp with LoRA is not supported (the adapters are small: DDP is the right "
                "tool); drop --fsdp, or fine-tune all weights with --fsdp"
            )
        if self.supervised and config.token_weighting != "none":
            raise ScratchLMError(
                "--token-weighting needs pretraining text (token shards); chat fine-tuning data "
                "already weighs only the assistant's tokens, drop --token-weighting"
            )
        super().__init__(config, log=log)

    # --- hooks ------------------------------------------------------------------------------
    def load_tokenizer(self, resume_from: Path | None) -> Tokenizer:
        tokenizer = Tokenizer.load(self.base_dir / "tokenizer.json")
        # Continuing a chat model keeps its template (a v1 model stays v1); a pretrained base
        # learned none and gets the current one. Checkpoints record it from the tokenizer.
        tokenizer.chat_template_version = chat_template_version(self.base_dir, self.base_metadata)
        return tokenizer

    def make_model_config(self) -> ModelConfig:
        config = checkpoint_config(self.base_dir, self.base_metadata)
        if self.config.dropout is not None:
            config = config.replace(dropout=self.config.dropout)
        wanted = self.config.context_length
        if wanted is not None and wanted != config.context_length:
            config = extended_context(config, wanted, lora=self.lora is not None)
        return config

    def setup_data(self) -> None:
        if not self.supervised:
            super().setup_data()
            return
        conversations = datasets.read_conversations(self.config.data)
        context = self.model_config.context_length
        examples, cut = datasets.tokenize_conversations(conversations, self.tokenizer, context)
        if self.config.val_data:
            train = examples
            val_conversations = datasets.read_conversations(self.config.val_data)
            val, _ = datasets.tokenize_conversations(val_conversations, self.tokenizer, context)
        else:
            train, val = datasets.split_examples(
                examples, self.config.val_fraction, self.config.seed
            )
        if cut:
            self.log(f"note: {cut} example(s) longer than the context ({context} tokens) were cut")
        self.train_examples, self.val_examples = train, val
        self.loader = datasets.SFTLoader(
            train,
            batch_size=self.config.batch_size,
            seed=self.config.seed,
            pad_id=self.tokenizer.pad_id,
            rank=self.distributed.rank,
            world_size=self.distributed.world_size,
        )
        learned = sum(sum(example.mask[1:]) for example in train)
        self.data_summary = f"{len(train):,} training conversations ({learned:,} assistant tokens), {len(val):,} held out"

    def eval_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if not self.supervised:
            return super().eval_batches()
        return datasets.eval_batches(
            self.val_examples, self.config.batch_size, self.tokenizer.pad_id
        )

    def val_bytes_per_token(self) -> float | None:
        return None if self.supervised else super().val_bytes_per_token()

    def default_sample_prompt(self) -> list[int]:
        if not self.supervised:
            return super().default_sample_prompt()
        conversations = datasets.read_conversations(self.config.data)
        first = conversations[0]
        last_user = max(i for i, message in enumerate(first) if message["role"] != "assistant")
        ids, _ = render(first[: last_user + 1], self.tokenizer, add_generation_prompt=True)
        return ids[-(self.model_config.context_length // 2) :]

    def base_model(self) -> GPT:
        """The base checkpoint's model, plain (no LoRA); also the reference of DPO and RL."""
        model = build_model(self.model_config, self.device, initialize=False)
        load_model_state(
            model,
            read_weights(
                self.base_dir, self.model_config, self.device, metadata=self.base_metadata
            ),
            source=self.base_dir,
        )
        return model

    def make_model(self) -> GPT:
        model = self.base_model()
        if self.lora is not None:
            trainable = apply_lora(model, self.lora)
            total = sum(parameter.numel() for parameter in model.parameters())
            self.log(
                f"LoRA rank {self.lora.rank} on {', '.join(self.lora.targets)}: {trainable:,} trainable "
                f"parameters of {total:,} ({trainable / total:.2%})"
            )
        return model

    def default_optimizer(self) -> str:
        # Fine-tuning moves a trained model a little: AdamW, as the recipes it follows use
        # (Muon is measured for pretraining only; LoRA's low-rank factors are not its target).
        return "adamw"

    def restore_model(self, checkpoint_dir: Path) -> None:
        if self.lora is None:
            super().restore_model(checkpoint_dir)
            return
        # the base weights came from the base checkpoint in make_model; add the adapters
        load_adapter_state(
            self.model, load_file(str(checkpoint_dir / ADAPTER_FILE), device=str(self.device))
        )

    def weights_for_saving(self) -> dict[str, torch.Tensor] | None:
        return merged_state(self.model) if self.lora is not None else None

    def extra_checkpoint_files(self) -> dict[str, bytes]:
        if self.lora is None:
            return {}
        return {ADAPTER_FILE: save(adapter_state(self.model))}

    def checkpoint_metadata(self) -> dict[str, Any]:
        return {
            "finetune": {
                "base": str(self.base_dir),
                "data": self.config.data,
                "supervised": self.supervised,
                "lora": self.lora.as_dict() if self.lora is not None else None,
            }
        }


def finetune(
    config: TrainConfig,
    *,
    base: str,
    lora: LoRASettings | None = None,
    log: Callable[[str], None] = print,
) -> TrainingResult:
    return FinetuneTrainer(config, base=base, lora=lora, log=log).run()
