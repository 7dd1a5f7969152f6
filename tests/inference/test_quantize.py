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


@pytest.mark.parametrize("method", ["q8", "q4", "bf16"])
def test_a_quantized_model_stays_close_to_fp32_and_every_path_generates(method: str) -> None:
    """The engine (batch-1 kernel decode) and the batch decoder (PyTorch on the dequantized
    weights) both run a quantized model; its logits stay near the fp32 model's."""
    torch.manual_seed(0)
    model = build_model(
        tiny_config("llama-15m", d_model=64, ffn_hidden=192, context_length=64, init_std=0.1)
    ).eval()
    quantized = quantize_for_cpu(model, method)
    assert quantized is not model and isinstance(model.lm_head, torch.nn.Linear)
    tokens = torch.randint(0, model.config.vocab_size, (2, 20))
    with torch.no_grad():
        reference, approximate = model(tokens), quantized(tokens)
    error = (reference - approximate).abs().max() / reference.abs().max()
    if method != "q4":  # 4 bits of a random (near-uniform) weight are far from it: only q8, bf16
        # 32-value blocks on a small random model; a broken format would be ~1
        assert error < {"q8": 0.05, "bf16": 0.01}[method], float(error)
        agreement = (reference.argmax(-1) == approximate.argmax(-1)).float().mean()
        assert agreement > 0.8, float(agreement)
    else:  # q4 is checked against its dequantized weights in test_quantized_decode.py
        assert 0 < error < 1, float(error)
    tokens_out = list(Engine(quantized).generate([1, 2, 3], max_new_tokens=10, sampling=GREEDY))
    assert len(tokens_out) == 10
    decoder = BatchDecoder(quantized, max_batch=2)
    decoder.add(GenerationRequest([1, 2], max_new_tokens=5, sampling=GREEDY))
    decoder.add(GenerationRequest([3, 4, 5], max_new_tokens=5, sampling=GREEDY))
    finished = []
    while decoder.active:
        finished += decoder.step()
    assert len(finished) == 2 and all(len(row.generated) == 5 for row in finished)


def test_quantize_refusals() -> None:
    model = build_model(tiny_config("tiny"))
    with pytest.raises(ScratchLMError, match="unknown quantization"):
        quantize_for_cpu(model, "int4")
    with pytest.raises(ScratchLMError, match="fp32"):
        quantize_for_cpu(model.to(torch.bfloat16), "q8")
    assert quantize_for_cpu(model, "none") is model
