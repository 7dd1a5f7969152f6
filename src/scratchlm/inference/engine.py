"""Generation of one sequence on token ids, separate from the model.

- `Engine.generate`: the prompt is prefilled in one forward pass, then one token is decoded per
  step against a pre-allocated KV cache (both through `scratchlm.inference.decode.Decoder`); ids
  are yielded as they come.
- `Engine.stream_text`: the same as text deltas that are valid UTF-8, with stop strings.
- `Engine.generate_batch`: many requests at once through the `BatchDecoder` (continuous batching).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from scratchlm.errors import ScratchLMError
from scratchlm.inference.batch import BatchDecoder, GenerationOutput, GenerationRequest
from scratchlm.inference.decode import Decoder, fit_prompt
from scratchlm.inference.sampling import history_counts, make_generator, sample_next_token
from scratchlm.inference.settings import SamplingSettings
from scratchlm.inference.streaming import TextStream
from scratchlm.kv_cache import KVCache, cache_dtype
from scratchlm.model import GPT
from scratchlm.tokenizer import Tokenizer


class Engine:
    def __init__(self, model: GPT, *, device: torch.device | str | None = None) -> None:
        self.model = model
        self.config = model.config
        self.device = (
            torch.device(device) if device is not None else model.token_embedding.weight.device
        )
        self.dtype = model.token_embedding.weight.dtype
        self.finish_reason = "length"
        self.truncated_tokens = 0

    @torch.inference_mode()
    def generate(
        self,
        prompt_ids: list[int],
        *,
        max_new_tokens: int,
        sampling: SamplingSettings,
        seed: int | None = None,
        stop_ids: frozenset[int] = frozenset(),
        truncate: bool = False,
    ) -> Iterator[int]:
        """Yield new token ids one at a time; sets `finish_reason` and `truncated_tokens`."""
        prompt_ids, self.truncated_tokens = fit_prompt(
            prompt_ids, self.config.context_length, truncate
        )
        if max_new_tokens < 1:
            raise ScratchLMError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
        generator = make_generator(seed, self.device)
        # Room for the whole generation (capped by the context); allocated once.
        total = min(self.config.context_length, len(prompt_ids) + max_new_tokens)
        cache = KVCache.for_model(
            self.config, 1, total, dtype=cache_dtype(self.model), device=self.device
        )
        counts = history_counts(prompt_ids, sampling, self.config.vocab_size, self.device)
        self.finish_reason = "length"
        decoder = Decoder(self.model, cache)
        logits = decoder.prefill(prompt_ids)
        for produced in range(max_new_tokens):
            next_token = sample_next_token(logits, sampling, generator, counts)  # (1,)
            token = int(next_token.item())
            if token in stop_ids:
                self.finish_reason = "stop"
                return
            yield token
            if cache.length >= total or produced + 1 == max_new_tokens:
                return
            if counts is not None:
                counts[0, token] += 1
            logits = decoder.step(next_token)

    def stream_text(
        self,
        tokenizer: Tokenizer,
        prompt_ids: list[int],
        *,
        max_new_tokens: int,
        sampling: SamplingSettings,
        seed: int | None = None,
        stop_ids: frozenset[int] = frozenset(),
        stop_strings: Sequence[str] = (),
        truncate: bool = False,
    ) -> Iterator[str]:
        """Yield text deltas (valid UTF-8, stop strings removed); sets `finish_reason`."""
        stream = TextStream(tokenizer, stop_strings)
        tokens = self.generate(
            prompt_ids,
            max_new_tokens=max_new_tokens,
            sampling=sampling,
            seed=seed,
            stop_ids=stop_ids,
            truncate=truncate,
        )
        yield from stream.feed(tokens)
        if stream.stopped:
            self.finish_reason = "stop"

    def generate_batch(
        self, requests: Sequence[GenerationRequest], *, max_batch: int | None = None
    ) -> list[GenerationOutput]:
        """Generate for every request with continuous batching; outputs in request order."""
        decoder = BatchDecoder(self.model, max_batch=max_batch or len(requests), device=self.device)
        outputs: dict[int, GenerationOutput] = {}
        waiting = list(enumerate(requests))
        handles: dict[int, int] = {}
        while waiting or decoder.active:
            while waiting and decoder.has_room:
                index, request = waiting.pop(0)
                handles[decoder.add(request)] = index
            for row in decoder.step():
                if row.finish_reason == "error":
                    raise ScratchLMError(
                        f"generation failed for request {handles[row.handle]}: {row.error}"
                    )
                outputs[handles[row.handle]] = row.output()
        return [outputs[index] for index in range(len(requests))]
