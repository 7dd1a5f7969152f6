"""Beam search: keep the `beam_width` most likely continuations at every step.

Scores are summed log-probabilities divided by (generated length ** length_penalty), as in Hugging
Face transformers: length_penalty > 0 favours longer sequences, 0 compares raw sums. Beam width 1 is
greedy decoding. All beams share one pre-allocated KV cache of `beam_width` rows; after each step
the rows are reordered so that each surviving beam keeps its parent's history.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from scratchlm.device import on_one_torch_thread
from scratchlm.errors import ScratchLMError
from scratchlm.inference.decode import Decoder, fit_prompt
from scratchlm.inference.kernels.decoder import fast_decoder
from scratchlm.kv_cache import KVCache, cache_dtype
from scratchlm.model import GPT


@dataclass
class BeamResult:
    token_ids: list[int]
    score: float  # length-normalized log-probability
    log_probability: float  # sum of the generated tokens' log-probabilities
    finish_reason: str  # "stop" or "length"


def normalized_score(log_probability: float, length: int, length_penalty: float) -> float:
    return log_probability / (max(length, 1) ** length_penalty)


@torch.inference_mode()
def beam_search(
    model: GPT,
    prompt_ids: list[int],
    *,
    beam_width: int = 4,
    max_new_tokens: int = 64,
    length_penalty: float = 1.0,
    stop_ids: frozenset[int] = frozenset(),
    truncate: bool = False,
) -> list[BeamResult]:
    """The best `beam_width` sequences, best first."""
    if beam_width < 1:
        raise ScratchLMError(f"--beam-width must be >= 1, got {beam_width}")
    if max_new_tokens < 1:
        raise ScratchLMError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    config = model.config
    device = model.token_embedding.weight.device
    prompt, _ = fit_prompt(prompt_ids, config.context_length, truncate)
    total = min(config.context_length, len(prompt) + max_new_tokens)
    cache = KVCache.for_model(config, beam_width, total, dtype=cache_dtype(model), device=device)
    # Prefill the prompt once into row 0 (the decode primitive: the CPU kernels when they
    # apply), then give every beam row the same history.
    logits = Decoder(model, cache.rows(0, 1)).prefill(prompt)  # (1, V)
    for row in range(1, beam_width):
        cache.copy_row(0, row)
    cache.length = len(prompt)
    log_probs = _log_probs(logits, logits.shape[-1])  # (1, V)
    # Each step feeds one token per beam, all at position cache.length: the kernels' batch step
    # (each weight block read once for all beams) when they apply, else the model's forward.
    kernel = fast_decoder(model, cache, batch=True)
    beam_tokens: list[list[int]] = [[]]
    beam_scores = torch.zeros(1, device=device)  # summed log-probabilities of the running beams
    finished: list[BeamResult] = []

    for step in range(max_new_tokens):
        vocab = log_probs.shape[-1]
        top_scores, top_indices = _best_candidates(beam_scores, log_probs, 2 * beam_width)
        new_tokens: list[list[int]] = []
        new_scores: list[float] = []
        parents: list[int] = []
        for score, index in zip(top_scores, top_indices, strict=True):
            parent, token = divmod(index, vocab)
            if token in stop_ids:
                sequence = beam_tokens[parent]
                finished.append(
                    BeamResult(
                        list(sequence),
                        normalized_score(score, len(sequence), length_penalty),
                        score,
                        "stop",
                    )
                )
                continue
            new_tokens.append([*beam_tokens[parent], token])
            new_scores.append(score)
            parents.append(parent)
            if len(new_tokens) == beam_width:
                break
        if not new_tokens or _done(finished, new_scores, step + 1, beam_width, length_penalty):
            break
        beam_tokens = new_tokens
        beam_scores = torch.tensor(new_scores, device=device)
        if step + 1 == max_new_tokens or cache.length >= total:
            break
        cache.reorder_rows(torch.tensor(parents, device=device))
        count = len(new_tokens)
        view = cache.rows(0, count)
        view.length = cache.length
        if kernel is not None:
            # The tokens came from the vocabulary and cache.length < total <= the cache's length.
            last = [tokens[-1] for tokens in new_tokens]
            step_logits = kernel.forward(last, range(count), [cache.length] * count)  # (n, V')
            view.advance(None, 1, count)  # as the model's forward does
        else:
            inputs = torch.tensor([[tokens[-1]] for tokens in new_tokens], device=device)
            step_logits = model(inputs, kv_cache=view)[:, -1]  # (count, padded_vocab)
        cache.length += 1
        log_probs = _log_probs(step_logits, config.vocab_size)
    for tokens, score in zip(beam_tokens, beam_scores.tolist(), strict=True):
        finished.append(
            BeamResult(
                tokens, normalized_score(score, len(tokens), length_penalty), score, "length"
            )
        )
    finished.sort(key=lambda result: result.score, reverse=True)
    return finished[:beam_width]


@on_one_torch_thread
def _log_probs(logits: torch.Tensor, vocab: int) -> torch.Tensor:
    """Log-softmax over the first `vocab` logits of each row: (rows, vocab), float32."""
    return torch.log_softmax(logits[:, :vocab].float(), dim=-1)


@on_one_torch_thread
def _best_candidates(
    beam_scores: torch.Tensor, log_probs: torch.Tensor, count: int
) -> tuple[list[float], list[int]]:
    """The `count` best (beam, token) continuations: their summed log-probabilities and flat
    indexes beam * V + token, best first."""
    candidates = (beam_scores[:, None] + log_probs).view(-1)  # (beams * V,)
    top_scores, top_indices = torch.topk(candidates, min(count, candidates.numel()))
    return top_scores.tolist(), top_indices.tolist()


def _done(
    finished: list[BeamResult], running_scores: list[float], length: int, width: int, penalty: float
) -> bool:
    """Stop once `width` hypotheses are finished and no running beam scores above the worst of them
    (the 'heuristic' early stop of transformers)."""
    if len(finished) < width:
        return False
    worst_kept = sorted((result.score for result in finished), reverse=True)[width - 1]
    best_running = max(normalized_score(score, length, penalty) for score in running_scores)
    return best_running <= worst_kept
