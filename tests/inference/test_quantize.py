from __future__ import annotations

import pytest
import torch

from scratchlm.errors import ScratchLMError
from scratchlm.inference.batch import BatchDecoder, GenerationRequest
from scratchlm.inference.engine import Engine
from scratchlm.inference.quantize import quantize_for_cpu
from scratchlm.inference.settings import GREEDY
from scratchlm.model import build_model
from tests.conftest import tiny_config


def test_int8_model_stays_close_to_fp32_and_generates() -> None:
    torch.manual_seed(0)
    model = build_model(
        tiny_config("llama-15m", d_model=64, ffn_hidden=192, context_length=64, init_std=0.1)
    ).eval()
    quantized = quantize_for_cpu(model, "int8")
    # really swapped for a quantized module
    assert not isinstance(quantized.lm_head, torch.nn.Linear)
    assert isinstance(model.lm_head, torch.nn.Linear)  # the original is untouched
    tokens = torch.randint(0, model.config.vocab_size, (2, 20))
    with torch.no_grad():
        reference, approximate = model(tokens), quantized(tokens)
    error = (reference - approximate).abs().max() / reference.abs().max()
    assert error < 0.15, float(error)  # per-tensor int8 on a small random model; broken would be ~1
    agreement = (reference.argmax(-1) == approximate.argmax(-1)).float().mean()
    assert agreement > 0.9, float(agreement)
    tokens_out = list(Engine(quantized).generate([1, 2, 3], max_new_tokens=10, sampling=GREEDY))
    assert len(tokens_out) == 10
    decoder = BatchDecoder(quantized, max_batch=2)
    decoder.add(GenerationRequest([1, 2], max_new_tokens=5, sampling=GREEDY))
    while decoder.active:
        decoder.step()


def test_quantize_refusals() -> None:
    model = build_model(tiny_config("tiny"))
    with pytest.raises(ScratchLMError, match="unknown quantization"):
        quantize_for_cpu(model, "int4")
    with pytest.raises(ScratchLMError, match="fp32"):
        quantize_for_cpu(model.to(torch.bfloat16), "int8")
    assert quantize_for_cpu(model, "none") is model
