"""Sampling: pure functions of the logits (and the tokens so far) and a seeded generator.

The pipeline for one row, in order:
1. clean the logits: float32, NaN becomes -inf (never chosen) and +inf the largest float, so no
   later step sees a NaN; a row without a single finite logit is an error (a broken model);
2. logit bias (OpenAI's `logit_bias`: a constant added to chosen tokens' logits; a per-request
   token map passed beside the settings, which hold the knobs every front end offers), then
   penalties from the history: repetition (the seed formula: a seen token's positive logit is divided by the
   penalty, a negative one multiplied), presence (minus a constant once a token has appeared) and
   frequency (minus a constant per occurrence), as OpenAI defines them. The results are clamped
   to finite floats, so extreme settings can reorder tokens but never make a NaN or an inf;
3. temperature 0 means argmax (greedy) — nothing below applies;
4. subtract the row's largest logit, then divide by the temperature (the top stays exactly 0, so
   even a temperature that underflows to 0 in float32 gives the argmax, not 0/0), then keep the
   top-k logits, the nucleus (the smallest set of tokens whose probability mass reaches top-p) and
   the tokens with at least min-p times the top token's probability; each filter keeps the top;
5. draw from the softmax with the caller's `torch.Generator`, so the same seed gives the same
   tokens. The softmax has a term exp(0) = 1, so it is finite and sums to 1.
With top-k, `sample_next_token` takes the k largest logits first and runs steps 4-5 on those k
values only: the same distribution (temperature keeps the order), but the filters, the softmax
and the draw see k values instead of the whole vocabulary.
The draw (`draw_from`) inverts the cumulative distribution with one uniform number per row.
`torch.multinomial` takes one exponential number per entry: 0.82-0.88 ms per token at a
32,000-token vocabulary, where the whole of sampling from the full distribution (OpenAI's default,
temperature 1) now takes 0.14 ms (docs/benchmarks.md, thirteenth session).
"""

from __future__ import annotations

import functools
import math
import secrets

import torch

from scratchlm.device import on_one_torch_thread
from scratchlm.errors import ScratchLMError
from scratchlm.inference.settings import (
    SEED_MAX,
    SEED_MIN,
    LogitBias,
    SamplingError,
    SamplingSettings,
)

# Penalized logits stay within ±this (the largest float32), so nothing downstream overflows to inf.
FLOAT_MAX = torch.finfo(torch.float32).max
FLOAT_TINY = torch.finfo(torch.float32).tiny  # the smallest normal float32
# Temperatures whose float32 value and reciprocal are normal numbers: dividing by them needs no care.
SAFE_TEMPERATURES = (1e-30, 1e30)


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """The generator one sequence samples with: seeded, or with a fresh random seed."""
    if seed is not None and not SEED_MIN <= seed <= SEED_MAX:
        raise ScratchLMError(f"--seed must be in [-2**63, 2**64 - 1], got {seed}")
    generator = torch.Generator(device=device)
    # A fresh seed when none is given, drawn without touching the global torch RNG.
    generator.manual_seed(seed if seed is not None else secrets.randbits(63))
    return generator


def history_counts(
    token_ids: list[int], settings: SamplingSettings, vocab_size: int, device: torch.device
) -> torch.Tensor | None:
    """Occurrences of every token so far, (1, vocab), for the penalties; None when none apply."""
    if not settings.uses_history:
        return None
    counts = torch.zeros(1, vocab_size, dtype=torch.long, device=device)
    ids = torch.tensor(token_ids, dtype=torch.long, device=device)
    counts[0].index_add_(0, ids, torch.ones_like(ids))
    return counts


def clean_logits(logits: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """logits (B, V) -> (float32 logits with NaN as -inf and +inf as the largest float, whether
    any -inf is left). A row with no finite logit is a ScratchLMError: nothing sensible to sample."""
    logits = logits.float()
    low, high = torch.aminmax(logits)  # NaN propagates into both
    if math.isfinite(float(high)) and math.isfinite(float(low)):
        return logits, False  # the usual case: one pass, nothing to clean
    logits = torch.nan_to_num(logits, nan=-math.inf, posinf=FLOAT_MAX, neginf=-math.inf)
    if not bool(torch.isfinite(logits).any(dim=-1).all()):
        raise ScratchLMError(
            "the model gave no finite logit for a sequence (NaN or -inf everywhere); its "
            "weights may be damaged: check the checkpoint"
        )
    return logits, True


@functools.lru_cache(maxsize=256)
def logit_bias_tensors(
    logit_bias: LogitBias, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(token ids (N,), biases (N,) float32, the largest id) of a request's `logit_bias`: made once
    per bias and device, not at every token (two tensors from lists cost ~6 us a token). Callers
    only read them."""
    ids = [token for token, _ in logit_bias]
    index = torch.tensor(ids, dtype=torch.long, device=device)
    values = torch.tensor([bias for _, bias in logit_bias], dtype=torch.float32, device=device)
    return index, values, max(ids)


def apply_logit_bias(logits: torch.Tensor, logit_bias: LogitBias) -> torch.Tensor:
    """Add each (token, bias) of `logit_bias` to that token's logit in every row of float32
    logits (B, V)."""
    if not logit_bias:
        return logits
    vocab = logits.shape[-1]
    index, values, largest = logit_bias_tensors(logit_bias, logits.device)
    if largest >= vocab:
        raise SamplingError(
            "logit_bias", f"token ids must be below the vocabulary size {vocab}", largest
        )
    return logits.index_add(-1, index, values.expand(logits.shape[0], -1))


def apply_penalties(
    logits: torch.Tensor, token_counts: torch.Tensor, settings: SamplingSettings
) -> torch.Tensor:
    """logits (B, V), token_counts (B, V) occurrences of each token so far -> penalized logits."""
    if not settings.uses_history:
        return logits
    logits = logits.float()
    seen = token_counts > 0
    if settings.repetition_penalty != 1.0:
        # Within float32's normal numbers: 1e300 would become inf there, and 0 * inf is NaN.
        penalty = min(max(settings.repetition_penalty, FLOAT_TINY), FLOAT_MAX)
        penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
        logits = torch.where(seen, penalized, logits)
    if settings.presence_penalty != 0.0:
        logits = logits - settings.presence_penalty * seen.float()
    if settings.frequency_penalty != 0.0:
        logits = logits - settings.frequency_penalty * token_counts.float()
    return logits


def adjusted_logits(
    logits: torch.Tensor,
    settings: SamplingSettings,
    token_counts: torch.Tensor | None = None,
    logit_bias: LogitBias = (),
) -> torch.Tensor:
    """Steps 1-2: clean logits (B, V), add the bias, apply the penalties; every token that was
    finite stays finite (clamped), every -inf stays -inf."""
    logits, masked = clean_logits(logits)
    penalized = token_counts is not None and settings.uses_history
    if not (logit_bias or penalized):
        return logits
    usable = torch.isfinite(logits) if masked else None
    logits = apply_logit_bias(logits, logit_bias)
    if token_counts is not None:
        logits = apply_penalties(logits, token_counts, settings)
    # A tiny repetition penalty divides a positive logit into +inf (or multiplies a negative one
    # into -inf); clamping keeps the token's rank without letting inf - inf make a NaN later.
    logits = logits.clamp(-FLOAT_MAX, FLOAT_MAX)
    return logits if usable is None else logits.masked_fill(~usable, -math.inf)


def filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits per row (B, V); the rest become -inf."""
    if k >= logits.shape[-1]:
        return logits
    threshold = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < threshold, float("-inf"))


def filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability mass reaches p (at least one token)."""
    if p >= 1.0:
        return logits
    sorted_logits, sorted_indices = torch.sort(logits, dim=-1, descending=True)
    probabilities = torch.softmax(sorted_logits.float(), dim=-1)
    # Mass of the tokens strictly before each one: a token is kept while that mass is still < p.
    mass_before = torch.cumsum(probabilities, dim=-1) - probabilities
    remove_sorted = mass_before >= p
    # A p below float32's smallest number compares as 0: the top token is kept regardless.
    remove_sorted[..., 0] = False
    remove = remove_sorted.scatter(-1, sorted_indices, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def filter_min_p(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Keep tokens whose probability is at least min_p times the most likely token's."""
    if min_p <= 0.0:
        return logits
    probabilities = torch.softmax(logits.float(), dim=-1)
    top = probabilities.max(dim=-1, keepdim=True)
    remove = probabilities < top.values * min_p
    remove.scatter_(-1, top.indices, False)  # the most likely token always stays
    return logits.masked_fill(remove, float("-inf"))


def shape_logits(
    logits: torch.Tensor, settings: SamplingSettings, *, top_k: bool = True
) -> torch.Tensor:
    """Temperature and the truncation filters (for temperature > 0): adjusted logits (B, V) ->
    logits whose row maximum is exactly 0. `top_k=False` skips that filter (the caller kept the
    top k already)."""
    logits = logits.float()
    shifted = logits - logits.max(dim=-1, keepdim=True).values  # (B, V), <= 0, 0 at the top
    temperature = settings.temperature
    scaled = shifted / temperature
    if not SAFE_TEMPERATURES[0] <= temperature <= SAFE_TEMPERATURES[1]:
        # In float32 such a temperature (or its reciprocal) is 0 or inf: 0/0 at the top and
        # -inf/inf at masked tokens are NaN. Their limits are 0 (the top stays the top) and -inf.
        scaled = scaled.masked_fill(shifted == 0, 0.0).masked_fill(shifted == -math.inf, -math.inf)
    if top_k and settings.top_k is not None:
        scaled = filter_top_k(scaled, settings.top_k)
    if settings.top_p is not None:
        scaled = filter_top_p(scaled, settings.top_p)
    if settings.min_p is not None:
        scaled = filter_min_p(scaled, settings.min_p)
    return scaled


@on_one_torch_thread
def next_token_probabilities(
    logits: torch.Tensor,
    settings: SamplingSettings,
    token_counts: torch.Tensor | None = None,
    logit_bias: LogitBias = (),
) -> torch.Tensor:
    """The distribution a sampler draws from, (B, V); one-hot on the argmax when greedy."""
    logits = adjusted_logits(logits, settings, token_counts, logit_bias)
    if settings.greedy:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    return torch.softmax(shape_logits(logits, settings), dim=-1)


def draw_dtype(device: torch.device) -> torch.dtype:
    """float64 for the cumulative sums and the uniform number, except on MPS (no float64 there):
    1 - u stays exact in float32 too, as torch.rand's float32 numbers are multiples of 2**-24."""
    return torch.float32 if device.type == "mps" else torch.float64


def invert_cdf(probabilities: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Token ids (B,) for distributions (B, V) (not necessarily normalised) and numbers u (B, 1)
    in [0, 1): the first token whose cumulative probability reaches x = (1 - u) * total. x is in
    (0, total], so that token exists and has probability above 0 (a token of probability 0
    reaches no sum the token before it did not). Summed in float64, where a token of probability
    1e-12 keeps its interval (float32 on MPS, which has no float64)."""
    cumulative = torch.cumsum(probabilities, -1, dtype=draw_dtype(probabilities.device))  # (B, V)
    # 1 - u is exact in float64, and a product of positive numbers rounds to neither 0 nor past
    # the total, which is itself a float64.
    threshold = (1.0 - uniform).mul_(cumulative[:, -1:])  # (B, 1)
    return torch.searchsorted(cumulative, threshold).squeeze(-1)


def draw_from(probabilities: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token id per row (B,) from distributions (B, V), with one uniform number per row from
    `generator`."""
    uniform = torch.rand(
        (probabilities.shape[0], 1),
        dtype=draw_dtype(probabilities.device),
        generator=generator,
        device=probabilities.device,
    )
    return invert_cdf(probabilities, uniform)


@on_one_torch_thread
def draw_token(probabilities: torch.Tensor, generator: torch.Generator | None) -> int:
    """One token id from a distribution (V,)."""
    return int(draw_from(probabilities.unsqueeze(0), generator).item())


@on_one_torch_thread
def sample_next_token(
    logits: torch.Tensor,
    settings: SamplingSettings,
    generator: torch.Generator | None = None,
    token_counts: torch.Tensor | None = None,
    logit_bias: LogitBias = (),
) -> torch.Tensor:
    """logits (B, V) -> token ids (B,)."""
    logits = adjusted_logits(logits, settings, token_counts, logit_bias)
    if settings.greedy:
        return torch.argmax(logits, dim=-1)
    if settings.top_k is not None and settings.top_k < logits.shape[-1]:
        # The k candidates (B, k), largest first: exactly k (torch.topk breaks a tie at the k-th
        # value), where filter_top_k keeps every tied token.
        candidates, ids = torch.topk(logits, settings.top_k, dim=-1)
        probabilities = torch.softmax(shape_logits(candidates, settings, top_k=False), dim=-1)
        choice = draw_from(probabilities, generator)  # (B,)
        return ids.gather(-1, choice.unsqueeze(-1)).squeeze(-1)
    return draw_from(torch.softmax(shape_logits(logits, settings), dim=-1), generator)
