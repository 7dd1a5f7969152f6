from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from scratchlm.config import PRESETS
from scratchlm.kv_cache import KVCache
from scratchlm.model import build_model
from tests.conftest import tiny_config

ARCHITECTURES = {
    "learned+layernorm+gelu": {"preset": "aksis-small"},
    "learned+leaky_relu": {"preset": "antimatter-300m"},
    "rope+gqa+qknorm+embnorm": {"preset": "akane-124m"},
    "rope+mha+swiglu": {"preset": "llama-15m"},
    "rope+mqa+relu2+softcap": {
        "preset": "tiny",
        "n_kv_head": 1,
        "mlp": "relu2",
        "logit_softcap": 15.0,
    },
}


def make(name: str, **extra: object) -> torch.nn.Module:
    spec = dict(ARCHITECTURES[name])
    preset = str(spec.pop("preset"))
    torch.manual_seed(0)
    config = tiny_config(preset, **spec, **extra)
    model = build_model(config)
    if config.zero_init_output:
        # Zero output projections make every block the identity at init: perturb them so the
        # tests exercise attention and the MLP.
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.02)
    return model.eval()


@pytest.mark.parametrize("name", list(PRESETS))
def test_forward_shapes_for_every_preset(name: str) -> None:
    config = tiny_config(name)
    model = build_model(config)
    logits = model(torch.randint(0, config.vocab_size, (3, 17)))
    assert logits.shape == (3, 17, config.padded_vocab_size)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_causality(name: str) -> None:
    model = make(name)
    tokens = torch.randint(0, 97, (2, 20))
    changed = tokens.clone()
    changed[:, 12:] = (changed[:, 12:] + 7) % 97
    with torch.no_grad():
        before, after = model(tokens), model(changed)
    torch.testing.assert_close(before[:, :12], after[:, :12])
    assert not torch.allclose(before[:, 12:], after[:, 12:])


def naive_rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate each (i, i + d/2) pair by angle position * theta^(-2i/d), with complex numbers."""
    _, _, length, head_dim = x.shape
    half = head_dim // 2
    frequencies = theta ** (-torch.arange(half, dtype=torch.float64) * 2 / head_dim)
    angles = torch.arange(length, dtype=torch.float64)[:, None] * frequencies[None, :]
    rotation = torch.polar(torch.ones_like(angles), angles)  # (T, half)
    pairs = torch.complex(x[..., :half].double(), x[..., half:].double()) * rotation
    return torch.cat((pairs.real, pairs.imag), dim=-1).to(x.dtype)


def naive_attention_block(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The first block's attention written with explicit loops over heads and positions."""
    config = model.config
    attention = model.blocks[0].attention
    batch, length, _ = x.shape
    head_dim = config.head_dim
    q = attention.q_proj(x).view(batch, length, config.n_head, head_dim).transpose(1, 2)
    k = attention.k_proj(x).view(batch, length, config.n_kv_head, head_dim).transpose(1, 2)
    v = attention.v_proj(x).view(batch, length, config.n_kv_head, head_dim).transpose(1, 2)
    if config.qk_norm:
        q = F.rms_norm(q, (head_dim,), attention.q_norm.weight, config.norm_eps)
        k = F.rms_norm(k, (head_dim,), attention.k_norm.weight, config.norm_eps)
    if config.position == "rope":
        q, k = naive_rope(q, config.rope_theta), naive_rope(k, config.rope_theta)
    group = config.n_head // config.n_kv_head
    output = torch.zeros(batch, config.n_head, length, head_dim)
    for head in range(config.n_head):
        kv_head = head // group  # query heads share KV heads in consecutive groups
        for t in range(length):
            scores = torch.stack(
                [
                    q[b, head, t] @ k[b, kv_head, : t + 1].T / math.sqrt(head_dim)
                    for b in range(batch)
                ]
            )  # (B, t+1)
            weights = torch.softmax(scores, dim=-1)
            output[:, head, t] = torch.stack(
                [weights[b] @ v[b, kv_head, : t + 1] for b in range(batch)]
            )
    return attention.o_proj(output.transpose(1, 2).reshape(batch, length, -1))


@pytest.mark.parametrize(
    "name",
    [
        "rope+gqa+qknorm+embnorm",
        "rope+mha+swiglu",
        "rope+mqa+relu2+softcap",
        "learned+layernorm+gelu",
    ],
)
def test_attention_against_naive_reference(name: str) -> None:
    model = make(name)
    x = torch.randn(2, 11, model.config.d_model)
    block = model.blocks[0]
    from scratchlm.model import build_attention_mask

    mask, positions = build_attention_mask(2, 11, None, None, x.device)
    rope = None
    if model.config.position == "rope":
        rope = (model.rope_cos[positions][None, None], model.rope_sin[positions][None, None])
    with torch.no_grad():
        ours = block.attention(x, rope, mask, None)
        reference = naive_attention_block(model, x)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_kv_cached_forward_matches_full_forward(name: str) -> None:
    model = make(name)
    tokens = torch.randint(0, 97, (2, 24))
    cache = KVCache.for_model(model.config, batch_size=2)
    with torch.no_grad():
        full = model(tokens)
        pieces = [model(tokens[:, :9], kv_cache=cache)]
        for index in range(9, 15):
            pieces.append(model(tokens[:, index : index + 1], kv_cache=cache))
        pieces.append(model(tokens[:, 15:], kv_cache=cache))  # a chunk appended to a filled cache
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-4)


def test_explicit_per_row_positions_match_separate_runs() -> None:
    model = make("rope+gqa+qknorm+embnorm")
    first, second = torch.randint(0, 97, (1, 10)), torch.randint(0, 97, (1, 6))
    cache = KVCache.for_model(model.config, batch_size=2)
    with torch.no_grad():
        alone_first, alone_second = model(first), model(second)
        # Row 1 is shorter: pad its input and give its padding positions past its own end.
        batch = torch.cat([first, F.pad(second, (0, 4))])
        positions = torch.stack([torch.arange(10), torch.arange(10)])
        together = model(batch, positions=positions, kv_cache=cache)
    torch.testing.assert_close(together[0], alone_first[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(together[1, :6], alone_second[0], atol=1e-5, rtol=1e-4)


def test_cache_row_copy_and_swap_move_the_filled_prefix() -> None:
    cache = KVCache(2, 3, 2, 8, 4)
    cache.keys.normal_()
    cache.values.normal_()
    cache.lengths[:] = torch.tensor([5, 3, 7])
    keys, values = cache.keys.clone(), cache.values.clone()
    cache.copy_row(2, 0, filled=5)
    torch.testing.assert_close(cache.keys[:, 0, :, :5], keys[:, 2, :, :5])
    torch.testing.assert_close(cache.values[:, 0, :, :5], values[:, 2, :, :5])
    torch.testing.assert_close(cache.keys[:, 0, :, 5:], keys[:, 0, :, 5:])  # untouched past it
    assert cache.lengths.tolist() == [7, 3, 7]
    keys, values = cache.keys.clone(), cache.values.clone()
    cache.swap_rows(0, 1, filled=6)
    torch.testing.assert_close(cache.keys[:, 0, :, :6], keys[:, 1, :, :6])
    torch.testing.assert_close(cache.keys[:, 1, :, :6], keys[:, 0, :, :6])
    torch.testing.assert_close(cache.values[:, 1, :, :6], values[:, 0, :, :6])
    assert cache.lengths.tolist() == [3, 7, 7]
    cache.copy_row(1, 2)  # no `filled`: the whole row
    torch.testing.assert_close(cache.keys[:, 2], cache.keys[:, 1])


def test_meta_build_then_init_is_deterministic_and_ties_weights() -> None:
    config = tiny_config("tiny")
    torch.manual_seed(3)
    first = build_model(config)
    torch.manual_seed(3)
    second = build_model(config)
    for (name, a), (_, b) in zip(
        first.state_dict().items(), second.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert first.lm_head.weight.data_ptr() == first.token_embedding.weight.data_ptr()
    assert first.rope_cos.device.type == "cpu" and torch.isfinite(first.rope_cos).all()


def test_zero_init_output_projections() -> None:
    model = build_model(tiny_config("akane-124m"))
    for block in model.blocks:
        assert torch.count_nonzero(block.attention.o_proj.weight) == 0
        assert torch.count_nonzero(block.mlp.down_proj.weight) == 0
    other = build_model(tiny_config("llama-15m"))
    assert torch.count_nonzero(other.blocks[0].attention.o_proj.weight) > 0


def test_rope_tables_are_shared_and_not_saved() -> None:
    model = build_model(tiny_config("akane-124m"))
    assert "rope_cos" not in model.state_dict()
    assert not any("rope" in name for name, _ in model.blocks.named_buffers())
