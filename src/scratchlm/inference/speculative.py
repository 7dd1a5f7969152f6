"""Speculative decoding: a small draft model proposes k tokens, the target verifies them in one pass.

Acceptance follows Leviathan et al. (2023) / Chen et al. (2023): a drafted token x is kept with
probability min(1, p(x) / q(x)) (p: target, q: draft, both after the same temperature / top-k /
top-p / min-p shaping); at the first rejection a replacement is drawn from norm(max(0, p - q)); if
every drafted token is kept, one more token is drawn from the target. The output distribution is
exactly the target's, and with temperature 0 the output equals plain greedy decoding.

Both caches hold every committed token but the last ("pending"), which is fed at the start of the
next round; rejected drafts are rolled back by resetting the cache length (their entries sit past
the new length and are overwritten, hidden meanwhile by the causal mask).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from scratchlm.errors import ScratchLMError
from scratchlm.inference.decode import Decoder, fit_prompt
from scratchlm.inference.sampling import draw_token, make_generator, next_token_probabilities
from scratchlm.inference.settings import SamplingSettings
from scratchlm.inference.streaming import TextStream
from scratchlm.kv_cache import KVCache, cache_dtype
from scratchlm.model import GPT
from scratchlm.tokenizer import Tokenizer


@dataclass
class SpeculativeStats:
    drafted: int = 0
    accepted: int = 0
    rounds: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


@torch.inference_mode()
def speculative_generate(
    target: GPT,
    draft: GPT,
    prompt_ids: list[int],
    *,
    max_new_tokens: int,
    sampling: SamplingSettings,
    draft_tokens: int = 4,
    seed: int | None = None,
    stop_ids: frozenset[int] = frozenset(),
    stats: SpeculativeStats | None = None,
) -> Iterator[int]:
    """Yield new token ids (several per target forward when drafts are accepted)."""
    if target.config.vocab_size != draft.config.vocab_size:
        raise ScratchLMError(
            f"the draft model's vocabulary ({draft.config.vocab_size}) differs from the target's "
            f"({target.config.vocab_size}); the draft must share the target's tokenizer"
        )
    if sampling.uses_history:
        raise ScratchLMError(
            "speculative decoding does not support repetition/presence/frequency penalties; drop them "
            "or decode without a draft model"
        )
    if draft_tokens < 1:
        raise ScratchLMError(f"--draft-tokens must be >= 1, got {draft_tokens}")
    stats = stats if stats is not None else SpeculativeStats()
    device = target.token_embedding.weight.device
    max_len = min(target.config.context_length, draft.config.context_length)
    prompt, _ = fit_prompt(prompt_ids, max_len, truncate=False)
    total = min(max_len, len(prompt) + max_new_tokens)
    target_cache = KVCache.for_model(
        target.config, 1, max_len, dtype=cache_dtype(target), device=device
    )
    draft_cache = KVCache.for_model(
        draft.config, 1, max_len, dtype=cache_dtype(draft), device=device
    )
    generator = make_generator(seed, device)
    # Every forward goes through the decode primitive (the CPU kernels when they apply): the
    # draft's one-token steps, and the target's verification of k drafts in one call that keeps
    # every position's logits.
    target_decoder = Decoder(target, target_cache)
    draft_decoder = Decoder(draft, draft_cache)

    def probabilities(decoder: Decoder, tokens: list[int]) -> torch.Tensor:
        logits = decoder.score(tokens)  # (len(tokens), V)
        return next_token_probabilities(logits, sampling)  # (len(tokens), V)

    if len(prompt) > 1:  # both caches take everything but the pending last token
        target_decoder.prefill(prompt[:-1])
        draft_decoder.prefill(prompt[:-1])
    pending = prompt[-1]
    committed = len(prompt)  # tokens in the sequence so far (prompt + generated)
    produced = 0
    while produced < max_new_tokens and committed < total:
        # Draft k tokens, leaving room for the k+1 target positions and the budget.
        k = min(draft_tokens, total - committed, max_new_tokens - produced)
        drafted: list[int] = []
        draft_probabilities = []
        token = pending
        for _ in range(k):
            q = next_token_probabilities(draft_decoder.step(token), sampling)[0]
            token = draw_token(q, generator) if not sampling.greedy else int(q.argmax())
            drafted.append(token)
            draft_probabilities.append(q)
        # Verify all drafts in one target forward: p[i] is the target's distribution for position i.
        p = probabilities(target_decoder, [pending, *drafted])  # (k+1, V)
        accepted = 0
        extra: int
        for index, token in enumerate(drafted):
            target_probability, draft_probability = (
                p[index, token],
                draft_probabilities[index][token],
            )
            if sampling.greedy:
                keep = bool(p[index].argmax() == token)
            else:
                ratio = (
                    float(target_probability / draft_probability) if draft_probability > 0 else 1.0
                )
                keep = float(torch.rand((), generator=generator, device=device)) < min(1.0, ratio)
            if not keep:
                residual = torch.clamp(p[index] - draft_probabilities[index], min=0)
                if sampling.greedy or float(residual.sum()) <= 0:
                    residual = p[index]
                extra = (
                    int(residual.argmax())
                    if sampling.greedy
                    else draw_token(residual / residual.sum(), generator)
                )
                break
            accepted += 1
        else:
            bonus = p[k]
            extra = int(bonus.argmax()) if sampling.greedy else draw_token(bonus, generator)
        stats.drafted += k
        stats.accepted += accepted
        stats.rounds += 1
        new_tokens = [*drafted[:accepted], extra]
        # Keep the caches' entries for the pending token and the accepted drafts only.
        target_cache.length = committed + accepted
        if accepted == k:
            # The draft never saw its own last token: feed it so both caches agree.
            draft_decoder.step(drafted[-1])
        draft_cache.length = committed + accepted
        for token in new_tokens:
            if token in stop_ids:
                return
            yield token
            produced += 1
            committed += 1
            if produced >= max_new_tokens or committed >= total:
                return
        pending = new_tokens[-1]


def speculative_text(
    target: GPT,
    draft: GPT,
    tokenizer: Tokenizer,
    prompt_ids: list[int],
    *,
    stop_strings: Sequence[str] = (),
    **options: object,
) -> Iterator[str]:
    """`speculative_generate` as text deltas (valid UTF-8, cut at the first stop string)."""
    tokens = speculative_generate(target, draft, prompt_ids, **options)  # type: ignore[arg-type]
    yield from TextStream(tokenizer, stop_strings).feed(tokens)
