"""Our Llama-math models compute the same function as transformers' LlamaForCausalLM."""

from __future__ import annotations

import pytest
import torch

from scratchlm.errors import ScratchLMError
from scratchlm.export.hf import llama_config, to_transformers_llama
from scratchlm.inference.engine import Engine
from scratchlm.inference.settings import GREEDY
from scratchlm.model import build_model
from tests.conftest import tiny_config

pytest.importorskip("transformers")


@pytest.mark.parametrize(
    "overrides",
    [{}, {"n_kv_head": 2}, {"n_kv_head": 1, "tie_embeddings": False}],
    ids=["mha-tied", "gqa-tied", "mqa-untied"],
)
def test_logits_and_greedy_generation_match_transformers(overrides: dict[str, object]) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config("llama-15m", context_length=64, **overrides)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    hf_model = to_transformers_llama(model)
    tokens = torch.randint(0, model.config.vocab_size, (2, 24))
    with torch.no_grad():
        ours, theirs = model(tokens), hf_model(tokens).logits
    assert (ours - theirs).abs().max() < 1e-4
    prompt = tokens[0, :5].tolist()
    our_tokens = list(
        Engine(model).generate(prompt, max_new_tokens=32, sampling=GREEDY, stop_ids=frozenset({2}))
    )
    with torch.no_grad():
        output = hf_model.generate(
            torch.tensor([prompt]),
            max_new_tokens=32,
            do_sample=False,
            suppress_tokens=list(range(model.config.vocab_size, model.config.padded_vocab_size)),
        )
    assert our_tokens == output[0, len(prompt) :].tolist()


def test_non_llama_config_is_refused_with_the_blocking_option() -> None:
    with pytest.raises(ScratchLMError, match="qk_norm"):
        llama_config(tiny_config("akane-124m"))
