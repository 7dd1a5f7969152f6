"""What a run ran on, and how close it came to the machine's peak: hardware description, model
FLOPs per token, peak FLOP/s (published for GPUs, measured for CPUs) and MFU.

MFU (model FLOPs utilization, PaLM appendix B) = achieved model FLOP/s / peak FLOP/s, where the
achieved FLOP/s counts only the FLOPs the model mathematically needs (no recomputation, no
padding), so it compares fairly across implementations.
"""

from __future__ import annotations

import os
import platform
import re
import time
from pathlib import Path
from typing import Any

import torch

CPU_FLAGS_OF_NOTE: tuple[str, ...] = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


# --- hardware description -------------------------------------------------------------------------
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _cpu_model(cpuinfo: str) -> str:
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def _cpu_flags(cpuinfo: str) -> list[str]:
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(value.split())
            break  # every core lists the same flags
    return [flag for flag in CPU_FLAGS_OF_NOTE if flag in flags]


def _ram_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) * 1024 / 2**30, 1)  # the file says kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (AttributeError, ValueError, OSError):
        return None


def describe_hardware(device: torch.device) -> dict[str, Any]:
    """A JSON-serializable description of the machine, for run_config.json and reports.

    Deliberately free of hostnames, user names and paths: run directories get shared."""
    cpuinfo = _cpuinfo()
    gpu_name: str | None = None
    gpu_count: int | None = None
    gpu_memory_gb: float | None = None
    if device.type == "cuda" and torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(device)
        gpu_name = str(properties.name)
        gpu_count = int(torch.cuda.device_count())
        gpu_memory_gb = round(properties.total_memory / 2**30, 1)
    return {
        "device": str(device),
        "cpu_model": _cpu_model(cpuinfo),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "ram_gb": _ram_gb(),
        "gpu_name": gpu_name,
        "gpu_count": gpu_count,
        "gpu_memory_gb": gpu_memory_gb,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "cpu_flags_of_note": _cpu_flags(cpuinfo),
    }


# --- peak FLOP/s ----------------------------------------------------------------------------------
# Published dense peaks (no 2:4 sparsity) from NVIDIA's datasheets, in FLOP/s:
# (half = bf16/fp16 tensor cores with fp32 accumulation, tf32 = tf32 tensor cores or None where the
# GPU has none, fp32 = plain CUDA cores). Patterns are tried in order, most specific first.
_GPU_PEAKS: tuple[tuple[str, str, float, float | None, float], ...] = (
    (r"\bH100\b.*\bNVL\b", "NVIDIA H100 NVL", 835e12, 417.5e12, 60e12),
    (r"\bH100\b.*\bPCIe\b", "NVIDIA H100 PCIe", 756.5e12, 378e12, 51.2e12),
    (r"\bH100\b", "NVIDIA H100 SXM", 989.4e12, 494.7e12, 66.9e12),
    (r"\bH200\b.*\bNVL\b", "NVIDIA H200 NVL", 835e12, 417.5e12, 60e12),
    (r"\bG?H200\b", "NVIDIA H200", 989.4e12, 494.7e12, 66.9e12),
    (r"\bA100\b", "NVIDIA A100", 312e12, 156e12, 19.5e12),
    (r"\bA10G\b", "NVIDIA A10G", 70e12, 35e12, 35e12),
    (r"\bA10\b", "NVIDIA A10", 125e12, 62.5e12, 31.2e12),
    (r"\bL40S\b", "NVIDIA L40S", 362.05e12, 183e12, 91.6e12),
    (r"\bL40\b", "NVIDIA L40", 181e12, 90.5e12, 90.5e12),
    (r"\bL4\b", "NVIDIA L4", 121e12, 60e12, 30.3e12),
    (r"\bRTX 4090\b", "NVIDIA GeForce RTX 4090", 165.2e12, 82.6e12, 82.6e12),
    (r"\bRTX 3090 Ti\b", "NVIDIA GeForce RTX 3090 Ti", 80e12, 40e12, 40e12),
    (r"\bRTX 3090\b", "NVIDIA GeForce RTX 3090", 71e12, 35.6e12, 35.6e12),
    (r"\bV100\b", "NVIDIA V100", 125e12, None, 15.7e12),
    (r"\bT4\b", "NVIDIA T4", 65e12, None, 8.1e12),
)


def published_peak_flops(gpu_name: str, precision: str) -> tuple[float | None, str]:
    """The published dense peak of a GPU, looked up by its name (`torch.cuda.get_device_name`).

    `precision` is the training precision: bf16/fp16 use the tensor-core half-precision peak;
    fp32 uses the TF32 tensor-core peak where the GPU has one (the trainer enables TF32 matmuls)
    and the plain fp32 peak otherwise."""
    if precision not in ("bf16", "fp16", "fp32", "tf32"):
        return None, f"no published peak for precision {precision!r} (expected bf16, fp16 or fp32)"
    for pattern, label, half, tf32, fp32 in _GPU_PEAKS:
        if re.search(pattern, gpu_name):
            if precision in ("bf16", "fp16"):
                return half, f"published peak for {label} {precision}"
            if tf32 is not None:
                return tf32, f"published peak for {label} tf32"
            return fp32, f"published peak for {label} fp32"
    return None, f"unknown GPU {gpu_name!r}: no published peak on record, MFU not computed"


# (dtype name, threads) -> measured FLOP/s: the probe costs ~0.25 s, so a process pays it once.
_CPU_PEAK_CACHE: dict[tuple[str, int], float] = {}
_PROBE_SIZE = 1024
_PROBE_SECONDS = 0.2


def measure_cpu_peak_flops(dtype: torch.dtype = torch.float32) -> float:
    """The best matmul FLOP/s of this CPU at the current thread count (cached).

    CPUs have no honest published peak (turbo, AVX frequency drops, shared cores), so we measure
    the same kernel family training uses: a square matmul, best of ~0.2 s of repeats."""
    threads = torch.get_num_threads()
    key = (str(dtype).replace("torch.", ""), threads)
    if key in _CPU_PEAK_CACHE:
        return _CPU_PEAK_CACHE[key]
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(_PROBE_SIZE, _PROBE_SIZE, generator=generator).to(dtype)
    b = torch.randn(_PROBE_SIZE, _PROBE_SIZE, generator=generator).to(dtype)
    flops = 2.0 * _PROBE_SIZE**3
    with torch.inference_mode():
        started = time.perf_counter()
        torch.mm(a, b)  # warm-up: thread pool start, kernel selection, page faults
        warm_up = time.perf_counter() - started
        best = warm_up
        deadline = time.perf_counter() + _PROBE_SECONDS
        repeats = 0
        # A slow path (bf16 emulated on a CPU without bf16 units) gets one timed repeat only.
        while repeats == 0 or (time.perf_counter() < deadline and warm_up < _PROBE_SECONDS):
            started = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - started)
            repeats += 1
            if repeats >= 100:
                break
    peak = flops / max(best, 1e-9)
    _CPU_PEAK_CACHE[key] = peak
    return peak


def peak_flops(device: torch.device, precision: str) -> tuple[float | None, str]:
    """(dense peak FLOP/s of one device, where the number comes from); (None, why) if unknown."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return None, "CUDA is not available"
        return published_peak_flops(torch.cuda.get_device_name(device), precision)
    if device.type == "cpu":
        measured = measure_cpu_peak_flops(torch.float32)
        name = "fp32"
        if precision == "bf16":
            # Without bf16 instructions (AVX512-BF16, AMX) a bf16 matmul is emulated and far
            # slower than fp32: the machine's peak is then its fp32 one, whichever is higher.
            bf16 = measure_cpu_peak_flops(torch.bfloat16)
            if bf16 > measured:
                measured, name = bf16, "bf16"
        return (
            measured,
            f"measured {name} matmul peak on this CPU ({torch.get_num_threads()} threads)",
        )
    return None, f"no peak known for device type {device.type!r}"


def mfu(tokens_per_s: float, flops_per_token: float, peak: float | None) -> float | None:
    """Model FLOPs utilization as a fraction (0..1), or None when the peak is unknown.

    `tokens_per_s` and `peak` must describe the same hardware: for data parallelism pass the
    global tokens/s and the per-device peak times the number of devices."""
    if peak is None or peak <= 0:
        return None
    return tokens_per_s * flops_per_token / peak
