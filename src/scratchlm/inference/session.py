"""A decoding session whose KV cache outlives one generation (multi-turn chat).

The cache always holds the tokens in `ids`. To generate for a new prompt, `generate` keeps the
longest common prefix of the new prompt with what is cached, rolls the cache back to it (only a
length change: later entries are overwritten and hidden by the causal mask meanwhile) and prefills
only the rest. In a chat, turn N then costs the new user message, not the whole history.

Prefill and decode steps go through the decode primitive (`scratchlm.inference.decode.Decoder`, as
in `Engine.generate`): the fp32 CPU kernels decode when they apply.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from scratchlm.errors import ScratchLMError
from scratchlm.inference.decode import Decoder
from scratchlm.inference.sampling import history_counts, make_generator, sample_next_token
from scratchlm.inference.settings import SamplingSettings
from scratchlm.kv_cache import KVCache, cache_dtype
from scratchlm.model import GPT


class DecodeSession:
    def __init__(self, model: GPT, *, device: torch.device | str | None = None) -> None:
        self.model = model
        self.config = model.config
        self.device = (
            torch.device(device) if device is not None else model.token_embedding.weight.device
        )
        self.cache = KVCache.for_model(self.config, 1, dtype=cache_dtype(model), device=self.device)
        self.ids: list[int] = []  # tokens whose keys/values are in the cache, in order
        self.last_prefill = 0  # tokens prefilled by the latest generate (0..len(prompt))
        self.reused = 0  # prompt tokens found in the cache by the latest generate
        self.finish_reason = "length"

    @property
    def context_length(self) -> int:
        return self.config.context_length

    def reset(self) -> None:
        self.ids = []
        self.cache.reset()

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
        """Yield new tokens; a sampled stop id ends generation and is kept in the cache (so the
        next turn's prompt, which contains it, reuses everything)."""
        if not prompt_ids:
            raise ScratchLMError("the prompt is empty")
        if len(prompt_ids) >= self.context_length:
            raise ScratchLMError(
                f"the conversation is {len(prompt_ids)} tokens but the context is {self.context_length}; "
                "drop earlier turns (the chat does this for you) or start a new conversation"
            )
        common = 0
        limit = min(len(self.ids), len(prompt_ids) - 1)  # the last prompt token is always fed
        while common < limit and self.ids[common] == prompt_ids[common]:
            common += 1
        self.ids = self.ids[:common]
        self.cache.length = common
        self.reused, self.last_prefill = common, len(prompt_ids) - common
        # Built per generation (its kernel decoder, ~0.1 ms, points into the current weights).
        decoder = Decoder(self.model, self.cache)
        logits = decoder.prefill(prompt_ids[common:])
        self.ids += prompt_ids[common:]
        generator = make_generator(seed, self.device)
        counts = history_counts(prompt_ids, sampling, self.config.vocab_size, self.device)
        self.finish_reason = "length"
        for produced in range(max_new_tokens):
            token = int(sample_next_token(logits, sampling, generator, counts).item())
            if token in stop_ids:
                self.finish_reason = "stop"
                if len(self.ids) < self.context_length:
                    decoder.step(token)
                    self.ids.append(token)
                return
            yield token
            if len(self.ids) >= self.context_length or produced + 1 == max_new_tokens:
                return
            if counts is not None:
                counts[0, token] += 1
            logits = decoder.step(token)
            self.ids.append(token)
