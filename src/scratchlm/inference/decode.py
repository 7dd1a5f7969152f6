"""The one decode primitive: prefill a prompt into a batch-1 KV cache, then decode a token at a time.

Every generation loop (`Engine.generate`, the `BatchDecoder`'s lone decoding row and prefills, the
chat's `DecodeSession`, `bench`, speculative decoding) runs its forwards through a `Decoder`, as
gpt-fast's `prefill` and `decode_one_token` serve all of its loops. The Decoder alone decides how a
step or a prefill runs: through the CPU kernels (one C++ call per token, or per 256 prompt tokens,
on fp32 or packed q8/q4/bf16 weights, see scratchlm.inference.kernels) when they apply to the
model and cache, else the model's forward; both give the same tokens. (Batch steps of many rows go
through `FastDecoder.forward` in the BatchDecoder and beam search.)

Also `fit_prompt`: the part of a prompt that fits the context.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from scratchlm.errors import ScratchLMError
from scratchlm.inference.kernels.decoder import FastDecoder, fast_decoder
from scratchlm.kv_cache import KVCache
from scratchlm.model import GPT


def fit_prompt(
    prompt_ids: Sequence[int], context_length: int, truncate: bool
) -> tuple[list[int], int]:
    """The prompt to prefill and how many tokens were dropped from its start (left truncation)."""
    if not prompt_ids:
        raise ScratchLMError("the prompt is empty; pass some text (or a document start)")
    room = context_length - 1  # at least one new token must fit
    if len(prompt_ids) <= room:
        return list(prompt_ids), 0
    if not truncate:
        raise ScratchLMError(
            f"the prompt is {len(prompt_ids)} tokens but the model's context is {context_length} "
            f"tokens (with room for at least one new token); shorten the prompt to at most {room} "
            "tokens, or ask for left truncation (--truncate)"
        )
    return list(prompt_ids[-room:]), len(prompt_ids) - room


# The longest run of tokens the kernel takes in one fp32 prefill or score; longer prompts run the
# model's forward. benchmarks/prefill_crossover.py (each side in its own process, 2 threads,
# docs/benchmarks.md): with 256-token kernel calls the kernel was ahead at every length measured,
# 1.3-1.8x on llama-42m and 1.6-2.4x on akane-124m up to 1,024 tokens (2026-12-03); with the
# attention in runs of positions (decode.cpp's attend_run), 1.91x at 1,024 and 1.77x at 2,048 on
# antimatter-300m (2026-12-04), the longest context of the presets. Longer prompts were not
# measured. Quantized formats have no limit: the kernel was ahead at every length measured up to
# 1,000 tokens (1.3-2.5x on llama-42m and llama-120m, q8, q4 and bf16), and their forward
# dequantizes each weight per op.
KERNEL_PREFILL_MAX_TOKENS: dict[str, int] = {"f32": 2048}


class Decoder:
    """Prefill and one-token steps of one sequence: `model` against a batch-1 `cache`.

    Both return the logits (1, vocab) of the token that follows (padding rows of the vocabulary
    cut off: they are never sampled). `position` says where the tokens go: None (the cache is
    this sequence's own) means at the cache's length; an int places them at that position of a
    row that shares a batch cache (the BatchDecoder), whose `length` is not the row's.

    The kernel decoder is built at the first prefill or step and kept: build a new Decoder
    whenever the model's weights or the cache may have been replaced.
    """

    def __init__(self, model: GPT, cache: KVCache) -> None:
        self.model = model
        self.cache = cache
        self.vocab_size = model.config.vocab_size
        self.device = cache.keys.device
        self._kernel: FastDecoder | None = None
        self._kernel_checked = False

    def prefill(self, tokens: Sequence[int], *, position: int | None = None) -> torch.Tensor:
        """Write `tokens` into the cache; logits (1, vocab) of the token after the last."""
        if position == 0:
            # From position 0 the model's own causal path serves (the same numbers as one full
            # prefill); later parts of a prompt place their tokens explicitly after the row's.
            self.cache.length = 0
        explicit = position is not None and position > 0
        start = self.cache.length if position is None or position == 0 else position
        kernel = self._kernel_for(tokens, start)
        if kernel is not None:
            count = len(tokens)
            logits = kernel.forward(
                tokens, [0] * count, range(start, start + count), last_only=True
            )
            # The cache's bookkeeping as the model's forward keeps it.
            if explicit:
                self.cache.advance(torch.arange(start, start + count).view(1, count), count, 1)
            else:
                self.cache.advance(None, count, 1)
            return logits[:, : self.vocab_size]  # (1, vocab)
        inputs = torch.tensor([list(tokens)], dtype=torch.long, device=self.device)
        positions = None
        if position is not None and explicit:
            positions = torch.arange(position, position + len(tokens), device=self.device)
            positions = positions.unsqueeze(0)
        logits = self.model(inputs, positions=positions, kv_cache=self.cache, last_token_only=True)
        return logits[:, -1, : self.vocab_size]

    def score(self, tokens: Sequence[int]) -> torch.Tensor:
        """Write `tokens` into the cache at its length; logits (len(tokens), vocab) of every
        position (what speculative decoding's verification reads)."""
        start = self.cache.length
        kernel = self._kernel_for(tokens, start)
        if kernel is not None:
            count = len(tokens)
            logits = kernel.forward(tokens, [0] * count, range(start, start + count))
            self.cache.advance(None, count, 1)
            return logits[:, : self.vocab_size]  # (T, vocab)
        inputs = torch.tensor([list(tokens)], dtype=torch.long, device=self.device)
        return self.model(inputs, kv_cache=self.cache)[0, :, : self.vocab_size]

    def step(self, token: int | torch.Tensor, *, position: int | None = None) -> torch.Tensor:
        """Write one token (an int, or a one-element tensor already on the device) into the
        cache; logits (1, vocab) of the token after it."""
        kernel = self._kernel_decoder()
        if kernel is not None:
            if position is not None:
                self.cache.length = position
            logits = kernel.step(int(token))  # (1, 1, padded_vocab)
        else:
            if isinstance(token, torch.Tensor):
                inputs = token.view(1, 1)  # no host round trip on an accelerator
            else:
                inputs = torch.tensor([[token]], dtype=torch.long, device=self.device)
            positions = None
            if position is not None:
                positions = torch.tensor([[position]], dtype=torch.long, device=self.device)
            logits = self.model(
                inputs, positions=positions, kv_cache=self.cache, last_token_only=True
            )
        return logits[:, -1, : self.vocab_size]

    def _kernel_decoder(self) -> FastDecoder | None:
        """The CPU kernel decoder for this model and cache (None: the model's forward); decided
        once, at the first prefill or step."""
        if not self._kernel_checked:
            self._kernel = fast_decoder(self.model, self.cache)
            self._kernel_checked = True
        return self._kernel

    def _kernel_for(self, tokens: Sequence[int], start: int) -> FastDecoder | None:
        """The kernel decoder when it can take these tokens from position `start`; else None,
        and the model's forward runs (and reports out-of-range tokens or positions its way)."""
        kernel = self._kernel_decoder()
        if kernel is None or not tokens or start + len(tokens) > kernel.max_positions:
            return None
        if not all(0 <= token < kernel.vocab for token in tokens):
            return None
        limit = KERNEL_PREFILL_MAX_TOKENS.get(
            "f32" if kernel.packed is None else kernel.packed.format
        )
        if limit is not None and len(tokens) > limit:
            return None  # a long fp32 prompt: the model's forward (see the limit above)
        return kernel
