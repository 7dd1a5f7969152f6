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


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("n_layer", 100_000, "n_layer must be in [1, 1024] (got 100000)"),
        ("d_model", 10**9, "d_model must be in [1, 65536]"),
        ("context_length", 10**9, "context_length must be in [1, 1048576]"),
        ("vocab_size", 2**21, "vocab_size must be in [1, 1048576]"),
        ("n_head", 4096, "n_head must be in [1, 1024]"),
        ("ffn_hidden", 10**7, "ffn_hidden must be in [1, 524288]"),
        ("ffn_hidden", 0, "ffn_hidden must be in [1, 524288] (got 0)"),
        ("head_dim", 0, "head_dim must be in [1, 16384]"),
        ("vocab_pad_multiple", 10**9, "vocab_pad_multiple must be in [0, 65536]"),
        ("n_layer", 2**4000, "n_layer must be in [1, 1024] (got an integer of 4001 bits)"),
        ("n_layer", 2.0, "n_layer must be an integer (got 2.0)"),
        ("n_layer", True, "n_layer must be an integer (got True)"),
        ("d_model", None, "d_model must be an integer (got None)"),
        ("rope_theta", float("nan"), "rope_theta must be finite"),
        ("norm_eps", "1e-5", "norm_eps must be a number"),
        ("ffn_multiplier", 1e6, "ffn_multiplier must be in (0, 64]"),
        ("bias", "yes", "bias must be true or false"),
        ("position", ["rope"], "position must be a string"),
    ],
)
def test_limits_and_types_are_checked_before_anything_is_derived(
    field: str, value: object, expected: str
) -> None:
    with pytest.raises(ScratchLMError) as error:
        preset_config("tiny", **{field: value})
    assert expected in str(error.value) and len(str(error.value)) < 300


def test_sizes_derived_from_fields_within_limits_are_capped_too() -> None:
    # Every field within its own limit, the whole far beyond: 17.7 trillion parameters.
    with pytest.raises(ScratchLMError, match="more than the limit of 1,000,000,000,000"):
        preset_config("tiny", n_layer=1024, d_model=65536, n_head=512, vocab_size=2**20)
    with pytest.raises(ScratchLMError, match="context_length x head_dim"):
        preset_config("tiny", context_length=2**20, d_model=4096, n_head=8)
    with pytest.raises(ScratchLMError, match="head_dim must be in"):
        preset_config("tiny", d_model=65536, n_head=1)  # derived head_dim 65536
    with pytest.raises(ScratchLMError, match="must be a JSON object"):
        ModelConfig.from_dict([1, 2])  # type: ignore[arg-type]


def test_limits_are_inclusive_and_cost_nothing_to_check() -> None:
    # At the limits a config is accepted; its parameter count is arithmetic (no allocation).
    config = preset_config("tiny", n_layer=1024, d_model=8192, n_head=64, context_length=2**20)
    assert config.n_params > 10**11
