"""Device, precision and autocast: the choices every command shares (training, inference, bench).

- `select_device("auto")`: CUDA > MPS > CPU; a named device that is not there is a one-line error.
- `select_precision("auto", device)`: bf16 autocast on GPUs that support it, fp16 (with a GradScaler)
  on older ones and on MPS, fp32 on CPU (CPU autocast is slower than fp32 for small models).
- `inference_dtype(device)`: the dtype weights are loaded in for inference (None keeps fp32).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import torch

from scratchlm.errors import ScratchLMError


def select_device(name: str) -> torch.device:
    """auto: CUDA > MPS > CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ScratchLMError(
            f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ScratchLMError(
            "--device cuda was asked for but no CUDA GPU is visible; use --device cpu"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ScratchLMError(
            "--device mps was asked for but MPS is not available; use --device cpu"
        )
    return device


def select_precision(name: str, device: torch.device) -> str:
    """auto: bf16 autocast where the GPU supports it, fp16 (with a GradScaler) on older GPUs, fp32
    on CPU (CPU autocast is slower than fp32 for small models)."""
    if name != "auto":
        if name == "fp16" and device.type == "cpu":
            raise ScratchLMError(
                "fp16 training is not supported on CPU; use --precision bf16 or fp32"
            )
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "mps":
        return "fp16"
    return "fp32"


def autocast_context(
    precision: str, device: torch.device
) -> contextlib.AbstractContextManager[Any]:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def inference_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 weights on GPUs that support it (fp16 otherwise); fp32 on CPU, where it is fastest
    without int8 (see `--quantize`)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


@functools.cache
def _openmp_backend() -> bool:
    """Whether PyTorch's intra-op threads are OpenMP's (its Linux, Windows and macOS wheels)."""
    return "OpenMP" in torch.__config__.parallel_info()


_P = ParamSpec("_P")
_R = TypeVar("_R")


def on_one_torch_thread(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """`function` with PyTorch's intra-op threads set to one while it runs (then restored).

    For the small tensor work around the decode kernels (sampling between steps, a KV cache's
    allocation and row copies): one op that runs as an OpenMP parallel region (an op over more
    than 32,768 values, `max(dim=...)` over any) leaves PyTorch's helper threads spinning for
    milliseconds afterwards (libgomp's default wait policy) on the cores the kernels' own
    threads need next. Measured on llama-42m, 2 threads: an 8-row kernel batch step took 13.4
    ms instead of 9.3; a batch-1 kernel decode step followed by sampling over 50,304 logits
    9.5-12.0 ms instead of 6.8-7.5. Results do not change: these ops split work by rows or
    elements. Builds with PyTorch's native thread pool (no OpenMP) have no spinning helpers, and
    there changing the thread count after parallel work has started only warns: left alone."""

    @functools.wraps(function)
    def on_one_thread(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        threads = torch.get_num_threads()
        if threads == 1 or not _openmp_backend():
            return function(*args, **kwargs)
        torch.set_num_threads(1)
        try:
            return function(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return on_one_thread
