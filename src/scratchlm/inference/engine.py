"""Generation on token ids, separate from the model: prefill once, then decode with a KV cache."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from scratchlm.errors import ScratchLMError
from scratchlm.inference.sampling import SamplingSettings, sample_next_token
from scratchlm.kv_cache import KVCache
from scratchlm.model import GPT


@dataclass
class GenerationResult:
    token_ids: list[int]
    finish_reason: str  # "stop" (a stop token) or "length" (max_new_tokens or the context is full)


class Engine:
    def __init__(self, model: GPT, *, device: torch.device | str | None = None) -> None:
        self.model = model
        self.config = model.config
        self.device = torch.device(device) if device is not None else model.lm_head.weight.device
        self.finish_reason = "length"

    def check_prompt(self, prompt_ids: list[int]) -> None:
        context = self.config.context_length
        if not prompt_ids:
            raise ScratchLMError("the prompt is empty; pass some text with --prompt")
        if len(prompt_ids) >= context:
            raise ScratchLMError(
                f"the prompt is {len(prompt_ids)} tokens but the model's context is {context} "
                f"tokens (with room for at least one new token); shorten the prompt to at most "
                f"{context - 1} tokens"
            )

    @torch.inference_mode()
    def generate(
        self,
        prompt_ids: list[int],
        *,
        max_new_tokens: int,
        sampling: SamplingSettings,
        seed: int | None = None,
        stop_ids: frozenset[int] = frozenset(),
    ) -> Iterator[int]:
        """Yield new token ids one at a time; sets `finish_reason` when done."""
        self.check_prompt(prompt_ids)
        if max_new_tokens < 1:
            raise ScratchLMError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
        generator = torch.Generator(device=self.device)
        # A fresh seed when none is given, drawn without touching the global torch RNG.
        generator.manual_seed(seed if seed is not None else secrets.randbits(63))
        # Room for the whole generation (capped by the context); allocated once.
        total = min(self.config.context_length, len(prompt_ids) + max_new_tokens)
        dtype = self.model.lm_head.weight.dtype
        cache = KVCache.for_model(self.config, 1, total, dtype=dtype, device=self.device)
        vocab_size = self.config.vocab_size
        inputs = torch.tensor([prompt_ids], dtype=torch.long, device=self.device)
        self.finish_reason = "length"
        for produced in range(max_new_tokens):
            logits = self.model(inputs, kv_cache=cache, last_token_only=True)[:, -1, :vocab_size]
            next_token = sample_next_token(logits, sampling, generator)  # (1,)
            token = int(next_token.item())
            if token in stop_ids:
                self.finish_reason = "stop"
                return
            yield token
            if cache.length >= total or produced + 1 == max_new_tokens:
                return
            inputs = next_token.view(1, 1)

    def generate_all(self, prompt_ids: list[int], **options: object) -> GenerationResult:
        tokens = list(self.generate(prompt_ids, **options))  # type: ignore[arg-type]
        return GenerationResult(tokens, self.finish_reason)
