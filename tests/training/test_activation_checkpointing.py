"""Activation checkpointing: identical gradients, unchanged state_dict keys, inference passes
through, lower peak memory, and FSDP2 on top."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scratchlm.config import ModelConfig, preset_config
from scratchlm.inference.engine import Engine
from scratchlm.inference.settings import SamplingSettings
from scratchlm.model import GPT, build_model
from scratchlm.training.activation_checkpointing import (
    apply_activation_checkpointing,
    has_activation_checkpointing,
)
from scratchlm.training.memory import TensorMemoryTracker, layer_activation_bytes_per_token
from tests.conftest import tiny_config


def seeded_model(config: ModelConfig, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return build_model(config)


def loss_and_gradients(
    model: GPT, inputs: torch.Tensor, targets: torch.Tensor, seed: int = 1
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same dropout masks for both models
    logits = model(inputs)
    loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))
    loss.backward()
    gradients = {}
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        gradients[name] = parameter.grad.clone()
    return loss.detach(), gradients


@pytest.mark.parametrize(
    ("preset", "dropout"), [("tiny", 0.0), ("akane-124m", 0.0), ("aksis-small", 0.0), ("tiny", 0.2)]
)
def test_checkpointing_gives_identical_gradients(preset: str, dropout: float) -> None:
    config = tiny_config(preset, dropout=dropout)
    plain, checkpointed = seeded_model(config), seeded_model(config)
    apply_activation_checkpointing(checkpointed)
    assert has_activation_checkpointing(checkpointed)
    assert not has_activation_checkpointing(plain)
    inputs = torch.randint(0, config.vocab_size, (3, config.context_length))
    targets = torch.randint(0, config.vocab_size, (3, config.context_length))
    loss_plain, grads_plain = loss_and_gradients(plain, inputs, targets)
    loss_checkpointed, grads_checkpointed = loss_and_gradients(checkpointed, inputs, targets)
    assert torch.equal(loss_plain, loss_checkpointed)
    assert grads_plain.keys() == grads_checkpointed.keys()
    for name, gradient in grads_plain.items():
        # Bit-identical: the recomputation repeats the same kernels (and, with dropout, the same
        # RNG state) on the same inputs.
        assert torch.equal(gradient, grads_checkpointed[name]), name


def test_checkpointing_keeps_state_dict_keys_and_loads_both_ways() -> None:
    config = tiny_config()
    plain, checkpointed = seeded_model(config, 0), seeded_model(config, 1)
    apply_activation_checkpointing(checkpointed)
    apply_activation_checkpointing(checkpointed)  # twice: still one layer of checkpointing
    assert list(plain.state_dict()) == list(checkpointed.state_dict())
    checkpointed.load_state_dict(plain.state_dict())
    plain.load_state_dict(checkpointed.state_dict())
    inputs = torch.randint(0, config.vocab_size, (2, 16))
    plain.eval(), checkpointed.eval()
    assert torch.equal(plain(inputs), checkpointed(inputs))


def test_checkpointing_passes_inference_through() -> None:
    """Eval mode, no_grad and a KV cache skip the checkpoint: generation is unchanged (even with
    the model left in train mode, the cached decode path must not checkpoint)."""
    config = tiny_config()
    plain, checkpointed = seeded_model(config), seeded_model(config)
    apply_activation_checkpointing(checkpointed)
    generated = []
    for model in (plain, checkpointed):
        model.eval()
        ids = Engine(model).generate(
            [1, 2, 3], max_new_tokens=8, sampling=SamplingSettings(temperature=0.0)
        )
        generated.append(list(ids))
    assert generated[0] == generated[1]
    checkpointed.train()
    calls = []
    original = torch.utils.checkpoint.checkpoint

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("scratchlm.training.activation_checkpointing.checkpoint", spy)
        inputs = torch.randint(0, config.vocab_size, (1, 8))
        with torch.no_grad():
            checkpointed(inputs)
        assert calls == []
        checkpointed(inputs).sum().backward()
        assert len(calls) == config.n_layer


def test_checkpointing_lowers_peak_memory() -> None:
    config = preset_config("tiny", n_layer=6, context_length=64, vocab_size=512)
    inputs = torch.randint(0, config.vocab_size, (4, config.context_length))
    peaks = []
    for checkpointing in (False, True):
        model = seeded_model(config)
        if checkpointing:
            apply_activation_checkpointing(model)
        model.train()
        with TensorMemoryTracker() as tracker:
            model(inputs).float().logsumexp(-1).mean().backward()
        peaks.append(tracker.peak)
    plain, checkpointed = peaks
    layer = layer_activation_bytes_per_token(config, "fp32") * inputs.numel()
    # Saves at least 4 of the 6 layers' activations (one is recomputed, block inputs are kept).
    assert plain - checkpointed > 4 * layer * 0.9, (plain, checkpointed, layer)


def test_checkpointing_composes_with_fsdp2(tmp_path: Path) -> None:
    distributed = pytest.importorskip("torch.distributed")
    if not distributed.is_available() or not distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    config = tiny_config()
    reference, sharded = seeded_model(config), seeded_model(config)
    inputs = torch.randint(0, config.vocab_size, (2, config.context_length))
    targets = torch.randint(0, config.vocab_size, (2, config.context_length))
    _, expected = loss_and_gradients(reference, inputs, targets)
    distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1
    )
    try:
        apply_activation_checkpointing(sharded)  # first checkpointing, then sharding
        mesh = init_device_mesh("cpu", (1,))
        for block in sharded.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(sharded, mesh=mesh)
        keys = list(sharded.state_dict())
        _, gradients = loss_and_gradients(sharded, inputs, targets)
    finally:
        distributed.destroy_process_group()
    assert keys == list(reference.state_dict())
    for name, gradient in expected.items():
        full = gradients[name]
        full = full.full_tensor() if hasattr(full, "full_tensor") else full
        assert torch.equal(gradient, full), name
