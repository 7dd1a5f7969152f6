"""The decode primitive (scratchlm.inference.decode.Decoder): prefill + steps give the logits of a
full recomputation, a row placed by position in a shared cache gives the same as a cache of its own,
and the kernel decoder is built at the first step only."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scratchlm.inference import decode
from scratchlm.inference.decode import Decoder
from scratchlm.inference.kernels import decoder as kernel_decoder
from scratchlm.kv_cache import KVCache
from tests.inference.test_engine import make_model


@pytest.mark.parametrize("kernels", ["1", "0"])
@torch.inference_mode()
def test_prefill_and_steps_match_a_full_forward(
    monkeypatch: pytest.MonkeyPatch, kernels: str
) -> None:
    monkeypatch.setenv("SCRATCHLM_KERNELS", kernels)
    model = make_model("rope+gqa+qknorm")
    vocab = model.config.vocab_size
    ids = [3, 1, 4, 1, 5]
    decoder = Decoder(model, KVCache.for_model(model.config, 1, 16))
    logits = decoder.prefill(ids)
    for token in (9, 2, 6):
        full = model(torch.tensor([ids]))[:, -1, :vocab]
        assert logits.shape == (1, vocab)
        torch.testing.assert_close(logits, full, rtol=1e-4, atol=1e-4 * float(full.abs().max()))
        ids.append(token)
        logits = decoder.step(token)
    assert decoder.cache.length == len(ids)


@torch.inference_mode()
def test_a_positioned_row_of_a_shared_cache_matches_its_own_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCRATCHLM_KERNELS", "0")
    model = make_model("rope+mha")
    own = Decoder(model, KVCache.for_model(model.config, 1, 16))
    shared = KVCache.for_model(model.config, 3, 16)
    shared.length = 7  # another row's length: a positioned row never reads it
    row = Decoder(model, shared.rows(2, 3))
    prompt = [5, 6, 7, 8, 9, 10]
    reference = [own.prefill(prompt[:4]), own.prefill(prompt[4:])]
    chunks = [row.prefill(prompt[:4], position=0), row.prefill(prompt[4:], position=4)]
    for token, position in ((11, 6), (12, 7)):
        reference.append(own.step(token))
        chunks.append(row.step(token, position=position))
    for expected, got in zip(reference, chunks, strict=True):
        torch.testing.assert_close(got, expected)


def test_the_kernel_decoder_is_chosen_once_at_the_first_prefill(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = make_model("rope+mha")
    calls: list[bool] = []
    original = kernel_decoder.fast_decoder

    def spy(model: nn.Module, cache: KVCache) -> kernel_decoder.FastDecoder | None:
        calls.append(True)
        return original(model, cache)

    monkeypatch.setattr(decode, "fast_decoder", spy)
    decoder = Decoder(model, KVCache.for_model(model.config, 1, 16))
    with torch.inference_mode():
        decoder.prefill([1, 2, 3])
        assert calls == [True]  # the prefill runs through the kernels too
        decoder.step(4)
        decoder.step(5)
    assert calls == [True]  # chosen once, kept for the steps
