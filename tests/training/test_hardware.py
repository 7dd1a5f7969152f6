"""Hardware description, model FLOPs per token (against hand counts), peak FLOP/s and MFU."""

from __future__ import annotations

import json

import pytest
import torch

from scratchlm.config import ModelConfig, model_flops_per_token
from scratchlm.training.hardware import (
    describe_hardware,
    measure_cpu_peak_flops,
    mfu,
    peak_flops,
    published_peak_flops,
)


def test_flops_per_token_gqa_swiglu_by_hand() -> None:
    config = ModelConfig(
        vocab_size=100,  # padded to 128
        n_layer=2,
        d_model=64,
        n_head=4,  # head_dim 16
        n_kv_head=2,
        ffn_hidden=96,
        context_length=32,
        mlp="swiglu",
        position="rope",
        norm="rmsnorm",
        bias=False,
        tie_embeddings=True,
    )
    # Per layer: q 64x64, k and v 64x32 each (2 KV heads of 16), o 64x64, MLP 3 x 64x96.
    q, k, v, o = 64 * 64, 64 * 32, 64 * 32, 64 * 64
    mlp = 3 * 64 * 96
    per_layer = q + k + v + o + mlp  # 4096 + 2048 + 2048 + 4096 + 18432 = 30720
    head = 128 * 64  # the tied head is still a matmul, over the padded vocabulary
    weights = 2 * per_layer + head
    attention = 12 * 2 * 4 * 16 * 32  # 12 * layers * heads * head_dim * context
    assert weights == 69632
    assert model_flops_per_token(config) == 6 * weights + attention == 466_944


def test_flops_per_token_mha_gelu_with_biases_by_hand() -> None:
    config = ModelConfig(
        vocab_size=64,  # already a multiple of 64
        n_layer=3,
        d_model=48,
        n_head=3,  # head_dim 16, MHA
        ffn_hidden=192,
        context_length=16,
        mlp="gelu",
        bias=True,
        tie_embeddings=False,
    )
    # Biases, norms and the position/token embeddings are no matmuls and are left out.
    per_layer = 4 * 48 * 48 + 2 * 48 * 192
    expected = 6 * (3 * per_layer + 64 * 48) + 12 * 3 * 3 * 16 * 16
    assert model_flops_per_token(config) == expected == 543_744


def test_describe_hardware_is_json_with_the_keys() -> None:
    described = describe_hardware(torch.device("cpu"))
    assert json.loads(json.dumps(described)) == described
    for key in (
        "cpu_model",
        "cpu_count",
        "torch_threads",
        "ram_gb",
        "gpu_name",
        "gpu_count",
        "gpu_memory_gb",
        "torch_version",
        "python_version",
        "platform",
        "cpu_flags_of_note",
    ):
        assert key in described, key
    assert described["gpu_name"] is None and described["gpu_count"] is None
    assert described["torch_threads"] == torch.get_num_threads()
    assert set(described["cpu_flags_of_note"]) <= {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}
    assert described["ram_gb"] is None or described["ram_gb"] > 0


def test_cpu_peak_is_measured_and_cached() -> None:
    first, source = peak_flops(torch.device("cpu"), "fp32")
    assert first is not None and first > 1e8  # any CPU of this century does > 0.1 GFLOP/s
    assert "measured" in source and f"{torch.get_num_threads()} threads" in source
    again, _ = peak_flops(torch.device("cpu"), "fp32")
    assert again == first  # identical: the cached number, not a second measurement
    assert measure_cpu_peak_flops(torch.float32) == first


def test_published_gpu_peaks_by_name() -> None:
    peak, source = published_peak_flops("NVIDIA H100 80GB HBM3", "bf16")
    assert peak == pytest.approx(989.4e12) and source == "published peak for NVIDIA H100 SXM bf16"
    assert published_peak_flops("NVIDIA H100 PCIe", "bf16")[0] == pytest.approx(756.5e12)
    assert published_peak_flops("NVIDIA H200", "fp16")[0] == pytest.approx(989.4e12)
    # fp32 training runs its matmuls in TF32 where the GPU has tensor cores for it
    peak, source = published_peak_flops("NVIDIA A100-SXM4-80GB", "fp32")
    assert peak == pytest.approx(156e12) and "tf32" in source
    assert published_peak_flops("NVIDIA A10G", "bf16")[0] == pytest.approx(70e12)
    assert published_peak_flops("NVIDIA L40S", "bf16")[0] == pytest.approx(362.05e12)
    assert published_peak_flops("NVIDIA L4", "bf16")[0] == pytest.approx(121e12)
    assert published_peak_flops("NVIDIA GeForce RTX 4090", "bf16")[0] == pytest.approx(165.2e12)
    # no TF32 before Ampere: plain fp32
    peak, source = published_peak_flops("Tesla V100-SXM2-16GB", "fp32")
    assert peak == pytest.approx(15.7e12) and source.endswith("fp32")
    assert published_peak_flops("Tesla T4", "fp16")[0] == pytest.approx(65e12)


def test_unknown_gpu_has_no_peak() -> None:
    peak, source = published_peak_flops("Imaginary Accelerator 9000", "bf16")
    assert peak is None and source.startswith("unknown GPU")
    assert published_peak_flops("NVIDIA H100 80GB HBM3", "int3")[0] is None


def test_mfu_arithmetic() -> None:
    assert mfu(1000.0, 6e9, 12e12) == pytest.approx(0.5)
    assert mfu(0.0, 6e9, 12e12) == 0.0
    assert mfu(1000.0, 6e9, None) is None


def test_a_cpu_bf16_peak_is_never_below_the_fp32_one() -> None:
    """Without bf16 instructions a bf16 matmul is emulated: MFU against that slow peak would
    exceed 100%. The bf16 peak is the higher of the two measured."""
    fp32, _ = peak_flops(torch.device("cpu"), "fp32")
    bf16, source = peak_flops(torch.device("cpu"), "bf16")
    assert fp32 is not None and bf16 is not None and bf16 >= fp32
    assert bf16 == max(fp32, measure_cpu_peak_flops(torch.bfloat16))
    assert ("bf16" in source) == (bf16 > fp32)
