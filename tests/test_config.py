from __future__ import annotations

import pytest

from scratchlm.config import PRESETS, ModelConfig, preset_config
from scratchlm.errors import ScratchLMError
from scratchlm.model import build_model, count_parameters
from tests.conftest import tiny_config


def test_presets_required_by_the_seeds() -> None:
    kia = preset_config("kia-1.6b")
    assert (kia.d_model, kia.n_layer, kia.n_head) == (2048, 32, 32)
    assert 1.55e9 < kia.parameter_counts()["n_params_non_embedding"] < 1.75e9
    antimatter = preset_config("antimatter-300m")
    assert (antimatter.n_layer, antimatter.d_model, antimatter.n_head, antimatter.ffn_hidden) == (
        24,
        1024,
        16,
        4096,
    )
    assert (
        antimatter.context_length,
        antimatter.mlp,
        antimatter.position,
        antimatter.vocab_size,
    ) == (2048, "leaky_relu", "learned", 50257)
    assert antimatter.norm == "layernorm"
    akane = preset_config("akane-124m")
    assert (akane.d_model, akane.n_layer, akane.n_head, akane.n_kv_head) == (768, 12, 12, 6)
    assert akane.ffn_hidden == 2048 and akane.mlp == "swiglu" and not akane.bias
    assert akane.qk_norm and akane.embedding_norm and akane.zero_init_output
    assert (akane.vocab_size, akane.context_length, akane.rope_theta) == (50304, 1024, 10000.0)
    aksis = preset_config("aksis-small")
    assert (aksis.n_layer, aksis.d_model, aksis.n_head, aksis.ffn_hidden, aksis.context_length) == (
        6,
        512,
        8,
        2048,
        512,
    )
    assert aksis.position == "learned"
    llamas = [name for name in PRESETS if name.startswith("llama-")]
    assert len(llamas) >= 2
    for name in llamas:
        config = preset_config(name)
        assert (config.position, config.norm, config.mlp, config.bias, config.qk_norm) == (
            "rope",
            "rmsnorm",
            "swiglu",
            False,
            False,
        )


def test_vocab_padded_to_multiple_of_64_and_true_size_kept() -> None:
    config = preset_config("antimatter-300m")
    assert config.vocab_size == 50257 and config.padded_vocab_size == 50304


@pytest.mark.parametrize("name", list(PRESETS))
def test_parameter_count_matches_a_built_model(name: str) -> None:
    config = tiny_config(name)
    model = build_model(config)
    assert count_parameters(model) == config.n_params


def test_round_trip_through_dict() -> None:
    config = preset_config("akane-124m")
    assert ModelConfig.from_dict(config.to_dict()) == config


def test_bad_configs_are_user_errors() -> None:
    with pytest.raises(ScratchLMError, match="unknown preset"):
        preset_config("gpt-5")
    with pytest.raises(ScratchLMError, match="n_kv_head"):
        preset_config("tiny", n_kv_head=3)
    with pytest.raises(ScratchLMError, match="divisible"):
        preset_config("tiny", n_head=5)
    with pytest.raises(ScratchLMError, match="unknown model config field"):
        ModelConfig.from_dict({"layers": 3})
    with pytest.raises(ScratchLMError, match="mlp"):
        preset_config("tiny", mlp="tanh")


def test_replace_recomputes_derived_fields() -> None:
    config = preset_config("tiny").replace(d_model=64, n_head=2)
    assert config.head_dim == 32 and config.n_kv_head == 2
