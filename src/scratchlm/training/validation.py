"""What the trainer measures at each evaluation: the validation loss with its perplexity and bits
per byte, and a short sample of generated text (seeded, so runs compare)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Any

import torch

from scratchlm.evaluation.perplexity import evaluate_batches
from scratchlm.inference.engine import Engine
from scratchlm.inference.settings import SamplingSettings
from scratchlm.model import GPT
from scratchlm.tokenizer import END_OF_TURN_TOKEN, Tokenizer

# The samples' sampling: varied enough to show what the model learned, not its noise.
SAMPLE_SAMPLING = SamplingSettings(temperature=0.8, top_k=50)


def validation_metrics(
    model: GPT,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    bytes_per_token: float | None,
    device: torch.device,
    autocast: AbstractContextManager[Any],
) -> dict[str, float]:
    """val_loss and val_perplexity over `batches`, and val_bits_per_byte when the split's bytes
    per token are known."""
    result = evaluate_batches(model, batches, device=device, autocast=autocast)
    metrics = {"val_loss": result.loss, "val_perplexity": result.perplexity}
    if bytes_per_token:
        # bytes per token of the whole split, applied to the evaluated part
        bytes_evaluated = result.tokens * bytes_per_token
        metrics["val_bits_per_byte"] = result.loss * result.tokens / (math.log(2) * bytes_evaluated)
    return metrics


def generate_sample(
    model: GPT,
    tokenizer: Tokenizer,
    prompt_ids: list[int],
    *,
    max_new_tokens: int,
    seed: int,
    autocast: AbstractContextManager[Any],
) -> str:
    """The continuation of `prompt_ids` (up to the context length), decoded; the model's
    train/eval mode is left as it was."""
    was_training = model.training
    model.eval()
    engine = Engine(model)
    with autocast:
        ids = list(
            engine.generate(
                prompt_ids,
                max_new_tokens=min(max_new_tokens, model.config.context_length - len(prompt_ids)),
                sampling=SAMPLE_SAMPLING,
                seed=seed,
                stop_ids=frozenset({tokenizer.eos_id, tokenizer.special_id(END_OF_TURN_TOKEN)}),
                truncate=True,
            )
        )
    model.train(was_training)
    return tokenizer.decode(ids, skip_special=True)
