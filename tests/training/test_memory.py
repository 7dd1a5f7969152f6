from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from scratchlm.config import ModelConfig, preset_config
from scratchlm.errors import ScratchLMError
from scratchlm.model import GPT, build_model
from scratchlm.training.activation_checkpointing import apply_activation_checkpointing
from scratchlm.training.memory import (
    CPU_SAFETY_FRACTION,
    GiB,
    TensorMemoryTracker,
    auto_micro_batch,
    available_memory_bytes,
    derive_accumulation,
    estimate_training_bytes,
    is_out_of_memory,
    layer_activation_bytes_per_token,
    micro_batch_candidates,
    out_of_memory_message,
    search_micro_batch,
)
from tests.conftest import tiny_config


def seeded_model(config: ModelConfig, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return build_model(config)


# --- the estimate ---------------------------------------------------------------------------------


def saved_activation_bytes(config: ModelConfig, batch: int, precision: str) -> int:
    """Bytes of the distinct storages autograd saves for backward, weights excluded."""
    model = seeded_model(config)
    model.train()
    weights = {parameter.untyped_storage().data_ptr() for parameter in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    inputs = torch.randint(0, config.vocab_size, (batch, config.context_length))
    with (
        torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor),
        torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"),
    ):
        model(inputs)
    return sum(saved.values())


@pytest.mark.parametrize(
    ("preset", "overrides"),
    [
        ("tiny", {}),
        ("small", {}),  # GQA
        ("akane-124m", {}),  # QK-norm, embedding norm
        ("aksis-small", {}),  # LayerNorm, GELU, biases, learned positions
        ("tiny", {"mlp": "relu2"}),
        ("tiny", {"dropout": 0.1}),  # math-path attention on CPU
    ],
)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_layer_activation_formula_matches_autograd(
    preset: str, overrides: dict[str, object], precision: str
) -> None:
    """Per token and layer, the formula is within 10% above what autograd really keeps: the
    difference between 2 and 1 layers and between batch 3 and 1 cancels weights, weight copies,
    logits and everything outside the blocks."""
    base = tiny_config(preset, **overrides).replace(
        d_model=64, head_dim=None, ffn_hidden=None, context_length=48
    )
    measured: dict[tuple[int, int], int] = {}
    for layers in (1, 2):
        for batch in (1, 3):
            config = base.replace(n_layer=layers)
            measured[layers, batch] = saved_activation_bytes(config, batch, precision)
    per_token = (measured[2, 3] - measured[1, 3] - measured[2, 1] + measured[1, 1]) / (
        2 * base.context_length
    )
    estimate = layer_activation_bytes_per_token(base, precision)
    assert per_token <= estimate <= 1.1 * per_token, (estimate, per_token)


@pytest.mark.parametrize(
    ("micro_batch", "precision", "checkpointing"),
    [(1, "fp32", False), (8, "fp32", False), (8, "bf16", False), (8, "fp32", True)],
)
def test_estimate_covers_the_peak_of_live_tensors(
    micro_batch: int, precision: str, checkpointing: bool
) -> None:
    """Two real training steps (model, fused AdamW, forward, loss, backward, step) never hold more
    tensor bytes than the estimate, and the estimate is not wildly above (calibration of the
    RSS, which adds the allocator's and PyTorch's overhead: benchmarks/memory_estimate.py)."""
    from scratchlm.training.optim import build_optimizer
    from scratchlm.training.token_weights import weighted_cross_entropy

    config = preset_config("tiny", n_layer=3, context_length=64, vocab_size=1000)
    inputs = torch.randint(0, config.vocab_size, (micro_batch, config.context_length))
    torch.manual_seed(0)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    with TensorMemoryTracker() as tracker:
        model = build_model(config)
        if checkpointing:
            apply_activation_checkpointing(model)
        optimizer = build_optimizer(
            model, learning_rate=1e-3, weight_decay=0.1, betas=(0.9, 0.95), device=inputs.device
        )
        for _ in range(2):
            with autocast:
                logits = model(inputs)
                loss = weighted_cross_entropy(logits, inputs, None)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            del logits, loss
    estimate = estimate_training_bytes(
        config, micro_batch, precision=precision, activation_checkpointing=checkpointing
    )
    tensors = estimate["total"] - estimate["runtime"] - estimate["allocator"]
    assert tracker.peak <= tensors <= 1.3 * tracker.peak, (tensors, tracker.peak)


def test_estimate_parts_scale_as_documented() -> None:
    config = preset_config("small")
    one = estimate_training_bytes(config, 1, precision="fp32", activation_checkpointing=False)
    four = estimate_training_bytes(config, 4, precision="fp32", activation_checkpointing=False)
    assert one["parameters"] == 4 * config.n_params == four["parameters"]
    assert one["optimizer"] == 2 * one["parameters"]
    assert four["activations"] == 4 * one["activations"]
    assert four["logits"] == 4 * one["logits"]
    assert one["total"] == sum(value for key, value in one.items() if key != "total")
    checkpointed = estimate_training_bytes(
        config, 4, precision="fp32", activation_checkpointing=True
    )
    assert checkpointed["activations"] < four["activations"] / 2
    bf16 = estimate_training_bytes(config, 4, precision="bf16", activation_checkpointing=False)
    assert bf16["activations"] < four["activations"] and bf16["weight_copies"] > 0
    with pytest.raises(ScratchLMError, match="precision"):
        estimate_training_bytes(config, 1, precision="auto", activation_checkpointing=False)
    with pytest.raises(ScratchLMError, match="micro_batch"):
        estimate_training_bytes(config, 0, precision="fp32", activation_checkpointing=False)


FSDP_CONFIG_OVERRIDES = {"n_layer": 3, "context_length": 64, "vocab_size": 1000}


def _fsdp_step_peak(
    rank: int, world_size: int, rendezvous: str, micro_batch: int, precision: str, out: str
) -> None:
    """One rank of an FSDP2 run (gloo): the peak tensor bytes of two training steps, written to
    `out`/rank.json. The sharded weights exist before the tracker starts, so they are added."""
    import json

    import torch.distributed as dist

    from scratchlm.training.distributed import shard_model
    from scratchlm.training.optim import build_optimizer
    from scratchlm.training.token_weights import weighted_cross_entropy

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world_size)
    try:
        config = preset_config("tiny", **FSDP_CONFIG_OVERRIDES)
        torch.manual_seed(0)
        model = build_model(config)
        shard_model(model, precision)
        local_weights = sum(
            parameter.to_local().untyped_storage().nbytes() for parameter in model.parameters()
        )
        inputs = torch.randint(0, config.vocab_size, (micro_batch, config.context_length))
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
        with TensorMemoryTracker() as tracker:
            optimizer = build_optimizer(
                model,
                learning_rate=1e-3,
                weight_decay=0.1,
                betas=(0.9, 0.95),
                device=inputs.device,
                kind="adamw",
            )
            for _ in range(2):
                with autocast:
                    logits = model(inputs)
                    loss = weighted_cross_entropy(
                        logits.float().view(-1, logits.shape[-1]), inputs.view(-1), None
                    )
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                del logits, loss
        Path(out, f"{rank}.json").write_text(json.dumps(tracker.peak + local_weights))
    finally:
        dist.destroy_process_group()


@pytest.mark.xdist_group("torchrun")
@pytest.mark.parametrize(("micro_batch", "precision"), [(1, "fp32"), (8, "fp32"), (8, "bf16")])
def test_sharded_estimate_covers_each_ranks_peak(
    tmp_path: Path, micro_batch: int, precision: str
) -> None:
    """Two FSDP2 ranks on CPU: each rank's peak tensor bytes over two real steps stay under
    the estimate with shards=2, and the estimate is not wildly above."""
    import json

    import torch.multiprocessing as multiprocessing

    world_size = 2
    multiprocessing.spawn(
        _fsdp_step_peak,
        args=(world_size, f"file://{tmp_path / 'rendezvous'}", micro_batch, precision, tmp_path),
        nprocs=world_size,
    )
    peaks = [json.loads((tmp_path / f"{rank}.json").read_text()) for rank in range(world_size)]
    config = preset_config("tiny", **FSDP_CONFIG_OVERRIDES)
    estimate = estimate_training_bytes(
        config, micro_batch, precision=precision, activation_checkpointing=False, shards=2
    )
    tensors = estimate["total"] - estimate["runtime"] - estimate["allocator"]
    for peak in peaks:
        assert peak <= tensors <= 1.3 * peak, (tensors, peaks)


def test_sharded_estimate_splits_the_states() -> None:
    config = preset_config("small")
    whole = estimate_training_bytes(config, 1, precision="bf16", activation_checkpointing=False)
    sharded = estimate_training_bytes(
        config, 1, precision="bf16", activation_checkpointing=False, shards=4
    )
    assert whole["gathered"] == 0 and whole["weight_copies"] == 2 * config.n_params
    assert sharded["parameters"] == 4 * math.ceil(config.n_params / 4)
    assert sharded["optimizer"] == 2 * sharded["parameters"]
    # FSDP's gathers are in the compute dtype: they replace autocast's weight copies.
    per_layer = config.parameter_counts()["n_params_per_layer"]
    assert sharded["weight_copies"] == 0 and sharded["gathered"] > 2 * 2 * per_layer
    assert sharded["total"] < whole["total"]
    assert sharded["activations"] == whole["activations"]  # activations are not sharded
    with pytest.raises(ScratchLMError, match="shards"):
        estimate_training_bytes(
            config, 1, precision="fp32", activation_checkpointing=False, shards=0
        )


# --- choosing the micro-batch ---------------------------------------------------------------------


def test_candidates_are_powers_of_two_then_the_maximum() -> None:
    assert micro_batch_candidates(1) == [1]
    assert micro_batch_candidates(16) == [1, 2, 4, 8, 16]
    assert micro_batch_candidates(24) == [1, 2, 4, 8, 16, 24]
    with pytest.raises(ScratchLMError):
        micro_batch_candidates(0)


class FakeDevice:
    """A probe that runs out of memory above `capacity` sequences, and records its calls."""

    def __init__(self, capacity: int, error: type[BaseException] = torch.OutOfMemoryError) -> None:
        self.capacity = capacity
        self.error = error
        self.calls: list[int] = []
        self.releases = 0

    def probe(self, batch: int) -> None:
        self.calls.append(batch)
        if batch > self.capacity:
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB")

    def release(self) -> None:
        self.releases += 1


@pytest.mark.parametrize(
    ("capacity", "maximum", "expected"),
    [
        (100, 64, 64),  # 64 fits and so do 71 (10% more)
        (71, 64, 64),
        (70, 64, 32),  # 64 fits, 71 does not: step down to keep the headroom
        (40, 64, 32),  # 32 fits, 64 does not, 36 fits
        (35, 64, 16),  # 32 fits, 36 does not
        (1, 64, 1),  # 1 fits, 2 does not: 1 with little headroom
        (1000, 24, 24),  # a non-power-of-two maximum is kept when it fits
    ],
)
def test_search_finds_the_largest_fitting_candidate_with_headroom(
    capacity: int, maximum: int, expected: int
) -> None:
    device = FakeDevice(capacity)
    chosen, explanation = search_micro_batch(device.probe, maximum, release=device.release)
    assert chosen == expected, (chosen, explanation)
    assert chosen <= capacity / 1.1 or chosen == 1
    assert str(chosen) in explanation
    assert device.releases == sum(1 for batch in device.calls if batch > capacity)
    # doubling: never more than log2(max) + 2 probes
    assert len(device.calls) <= math.log2(maximum) + 3


def test_search_accepts_runtime_errors_that_say_out_of_memory() -> None:
    device = FakeDevice(8, RuntimeError)
    assert search_micro_batch(device.probe, 64, release=device.release)[0] == 4


def test_search_lets_other_errors_through_and_fails_when_nothing_fits() -> None:
    def broken(batch: int) -> None:
        raise ValueError("shape mismatch")

    with pytest.raises(ValueError, match="shape mismatch"):
        search_micro_batch(broken, 8, release=lambda: None)
    device = FakeDevice(0)
    with pytest.raises(ScratchLMError, match="--activation-checkpointing"):
        search_micro_batch(device.probe, 8, release=device.release)


def test_auto_micro_batch_on_cpu_follows_the_estimate() -> None:
    config = preset_config("small")
    cpu = torch.device("cpu")

    def total(batch: int, checkpointing: bool = False) -> int:
        return estimate_training_bytes(
            config, batch, precision="fp32", activation_checkpointing=checkpointing
        )["total"]

    # Room for exactly 8 sequences (after the safety fraction): 8, not 16.
    available = int(total(8) / CPU_SAFETY_FRACTION) + 1
    chosen, explanation = auto_micro_batch(
        config,
        cpu,
        precision="fp32",
        activation_checkpointing=False,
        max_micro_batch=64,
        available_bytes=available,
    )
    assert chosen == 8 and "micro-batch 8" in explanation and "16 would need" in explanation
    # Checkpointing fits more in the same memory.
    chosen_checkpointed, _ = auto_micro_batch(
        config,
        cpu,
        precision="fp32",
        activation_checkpointing=True,
        max_micro_batch=64,
        available_bytes=available,
    )
    assert chosen_checkpointed > 8
    # Plenty of memory: capped by the maximum asked for.
    assert (
        auto_micro_batch(
            config,
            cpu,
            precision="fp32",
            activation_checkpointing=False,
            max_micro_batch=12,
            available_bytes=1 << 50,
        )[0]
        == 12
    )
    with pytest.raises(ScratchLMError, match="--activation-checkpointing") as raised:
        auto_micro_batch(
            config,
            cpu,
            precision="fp32",
            activation_checkpointing=False,
            max_micro_batch=8,
            available_bytes=total(1) // 2,
        )
    assert "--fsdp" not in str(raised.value)  # not offered on CPU
    with pytest.raises(ScratchLMError) as raised:
        auto_micro_batch(
            config,
            cpu,
            precision="fp32",
            activation_checkpointing=True,
            max_micro_batch=8,
            available_bytes=total(1, True) // 2,
        )
    assert "--activation-checkpointing" not in str(raised.value)  # already on


def test_auto_micro_batch_probes_on_cuda() -> None:
    device = FakeDevice(20)
    chosen, explanation = auto_micro_batch(
        preset_config("tiny"),
        torch.device("cuda"),
        precision="bf16",
        activation_checkpointing=False,
        max_micro_batch=64,
        probe=device.probe,
    )
    assert chosen == 16 and "probed" in explanation and device.calls[:6] == [1, 2, 4, 8, 16, 32]


def test_auto_micro_batch_under_fsdp_estimates_the_sharded_run() -> None:
    """The probe would train an unsharded model (less room than FSDP leaves), so FSDP uses the
    sharded estimate; the ranks on one CPU host split its RAM."""
    config = preset_config("small")
    device = FakeDevice(1)  # an unsharded probe would find only 1 sequence
    free = 4 * GiB
    chosen, explanation = auto_micro_batch(
        config,
        torch.device("cuda"),
        precision="bf16",
        activation_checkpointing=False,
        max_micro_batch=64,
        probe=device.probe,
        available_bytes=free,
        shards=4,
    )
    assert device.calls == [] and chosen > 1
    assert "sharded over 4 ranks" in explanation and "estimated" in explanation

    def total(batch: int) -> int:
        return estimate_training_bytes(
            config, batch, precision="fp32", activation_checkpointing=False
        )["total"]

    room_for_8 = int(total(8) / CPU_SAFETY_FRACTION) + 1
    arguments: dict = {
        "precision": "fp32",
        "activation_checkpointing": False,
        "max_micro_batch": 64,
        "available_bytes": room_for_8,
    }
    alone, _ = auto_micro_batch(config, torch.device("cpu"), **arguments)
    shared, explanation = auto_micro_batch(
        config, torch.device("cpu"), ranks_per_host=2, **arguments
    )
    assert alone == 8 and shared < alone and "/ 2 processes on this host" in explanation


def test_available_memory_is_positive() -> None:
    assert available_memory_bytes() > 0


def test_derive_accumulation() -> None:
    assert derive_accumulation(None, 8, 256, 1) == 1
    assert derive_accumulation(8 * 256, 8, 256, 1) == 1
    assert derive_accumulation(524288, 16, 1024, 1) == 32
    assert derive_accumulation(524288, 16, 1024, 4) == 8
    assert derive_accumulation(524288 + 1, 16, 1024, 4) == 9  # rounds up: never fewer tokens
    assert derive_accumulation(100, 64, 1024, 8) == 1  # at least one micro-batch
    with pytest.raises(ScratchLMError):
        derive_accumulation(1000, 0, 256, 1)
    with pytest.raises(ScratchLMError):
        derive_accumulation(0, 8, 256, 1)


# --- out of memory --------------------------------------------------------------------------------


def test_is_out_of_memory() -> None:
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert is_out_of_memory(
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory"
        )
    )
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 8 GB)"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))  # not an allocation failure


def test_real_cpu_allocation_failure_is_recognized() -> None:
    try:
        torch.empty(1 << 62, dtype=torch.uint8)
    except Exception as error:  # the exact type varies across PyTorch versions
        assert is_out_of_memory(error), repr(error)
    else:
        pytest.skip("this machine allocated 4 EiB lazily")


def test_out_of_memory_message_names_only_flags_not_in_use() -> None:
    message = out_of_memory_message(
        32,
        4,
        activation_checkpointing=False,
        fsdp=False,
        device=torch.device("cuda"),
        precision="fp32",
    )
    assert "\n" not in message
    assert message.startswith("out of memory at --batch-size 32 (x4 accumulation) on cuda: ")
    for flag in (
        "lower --batch-size",
        "--micro-batch auto",
        "--activation-checkpointing",
        "--fsdp",
        "--precision bf16",
        "--context-length",
    ):
        assert flag in message, flag
    message = out_of_memory_message(
        32,
        4,
        activation_checkpointing=True,
        fsdp=True,
        device=torch.device("cuda"),
        precision="bf16",
        micro_batch_auto=True,
    )
    for flag in ("--micro-batch auto", "--activation-checkpointing", "--fsdp", "--precision"):
        assert flag not in message, flag
    assert "lower --batch-size" in message
    cpu = out_of_memory_message(
        1,
        1,
        activation_checkpointing=False,
        fsdp=False,
        device=torch.device("cpu"),
        precision="fp32",
    )
    assert "lower --batch-size" not in cpu and "--fsdp" not in cpu and "--precision" not in cpu
    assert "--activation-checkpointing" in cpu
