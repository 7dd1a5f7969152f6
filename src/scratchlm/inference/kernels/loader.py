"""Building and loading the fp32 decode kernels: compile `decode.cpp` with the system C++ compiler,
cache the shared library, and bind it with ctypes.

The library is compiled (`$CXX` or g++, `-O3 -march=native -pthread`, 2.5-4 s) on first use and
cached under `$TORCH_EXTENSIONS_DIR` (default ~/.cache/torch_extensions), keyed by the source,
compiler and CPU. Without a compiler, on non-Linux systems, without AVX2, or with
`SCRATCHLM_KERNELS=0`, `load_library()` returns None (logged once at debug level) and callers keep
PyTorch's path.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("decode.cpp")
ENV_SWITCH = "SCRATCHLM_KERNELS"  # "0" turns the fast path off
ABI_VERSION = 2
COMPILE_FLAGS = ("-O3", "-march=native", "-pthread", "-fPIC", "-shared", "-std=c++17")

_POINTER = ctypes.c_void_p


class SlLayer(ctypes.Structure):
    """Mirror of `SlLayer` in decode.cpp (field order matters)."""

    _fields_ = [
        (name, _POINTER)
        for name in (
            "attn_norm_w",
            "attn_norm_b",
            "q_w",
            "q_b",
            "k_w",
            "k_b",
            "v_w",
            "v_b",
            "o_w",
            "o_b",
            "q_norm_w",
            "k_norm_w",
            "mlp_norm_w",
            "mlp_norm_b",
            "gate_w",
            "gate_b",
            "up_w",
            "up_b",
            "down_w",
            "down_b",
            "keys",
            "values",
        )
    ]


class SlModel(ctypes.Structure):
    """Mirror of `SlModel` in decode.cpp."""

    _fields_ = [
        ("n_layer", ctypes.c_int64),
        ("d_model", ctypes.c_int64),
        ("n_head", ctypes.c_int64),
        ("n_kv_head", ctypes.c_int64),
        ("head_dim", ctypes.c_int64),
        ("ffn_hidden", ctypes.c_int64),
        ("vocab", ctypes.c_int64),
        ("cache_head_stride", ctypes.c_int64),
        ("norm_kind", ctypes.c_int32),
        ("mlp_kind", ctypes.c_int32),
        ("norm_eps", ctypes.c_float),
        ("leaky_relu_slope", ctypes.c_float),
        ("logit_softcap", ctypes.c_float),
        ("pad_", ctypes.c_float),
        ("token_embedding", _POINTER),
        ("position_embedding", _POINTER),
        ("embedding_norm_w", _POINTER),
        ("rope_cos", _POINTER),
        ("rope_sin", _POINTER),
        ("final_norm_w", _POINTER),
        ("final_norm_b", _POINTER),
        ("lm_head_w", _POINTER),
        ("layers", ctypes.POINTER(SlLayer)),
        ("workspace", _POINTER),
    ]


# --- building and loading the library ---------------------------------------------------------

_library: ctypes.CDLL | None = None
_load_attempted = False
_failure: str | None = None


def kernels_enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip() != "0"


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++"))


def _cpu_flags() -> str:
    """The CPU's feature flags: part of the cache key, because -march=native bakes them in."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return ""


def _cache_dir() -> Path:
    # torch's default extension directory, so one place holds every compiled extension.
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or str(
        Path.home() / ".cache" / "torch_extensions"
    )
    return Path(root)


def build_library(*, force: bool = False) -> Path:
    """Compile decode.cpp (or reuse the cached build); returns the shared library's path.

    Raises RuntimeError (with the compiler's output) when it cannot be built.
    """
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("no C++ compiler found (set $CXX or install g++)")
    source = SOURCE.read_bytes()
    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, check=False
    ).stdout
    key = hashlib.sha256(
        b"\0".join(
            [source, version.encode(), " ".join(COMPILE_FLAGS).encode(), _cpu_flags().encode()]
        )
    ).hexdigest()[:16]
    directory = _cache_dir() / f"scratchlm_decode_{key}"
    target = directory / "libscratchlm_decode.so"
    if target.is_file() and not force:
        return target
    directory.mkdir(parents=True, exist_ok=True)
    # Build under a temporary name, then rename: concurrent first uses (test workers) never load
    # a half-written library.
    handle, partial = tempfile.mkstemp(suffix=".so", dir=directory)
    os.close(handle)
    try:
        result = subprocess.run(
            [compiler, *COMPILE_FLAGS, str(SOURCE), "-o", partial],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} failed:\n{result.stderr.strip()}")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


def _configure(library: ctypes.CDLL) -> None:
    library.sl_abi_version.restype = ctypes.c_int
    library.sl_simd_width.restype = ctypes.c_int
    library.sl_workspace_floats.restype = ctypes.c_int64
    library.sl_workspace_floats.argtypes = [ctypes.c_int64] * 7
    library.sl_gemv.restype = None
    library.sl_gemv.argtypes = [_POINTER] * 4 + [ctypes.c_int64, ctypes.c_int64, ctypes.c_int]
    library.sl_decode_step.restype = ctypes.c_int
    library.sl_decode_step.argtypes = [
        ctypes.POINTER(SlModel),
        ctypes.c_int64,
        ctypes.c_int64,
        _POINTER,
        ctypes.c_int,
        ctypes.c_int64,
    ]


def load_library() -> ctypes.CDLL | None:
    """The compiled kernels, or None when they are unavailable (the reason: `unavailable_reason`).

    Built and loaded once per process; a failure is logged once at debug level and remembered.
    """
    global _library, _load_attempted, _failure
    if _load_attempted:
        return _library
    _load_attempted = True
    try:
        if not sys.platform.startswith("linux"):
            # The thread team sleeps on Linux futexes.
            raise RuntimeError(f"the fp32 decode kernels are built on Linux only ({sys.platform})")
        library = ctypes.CDLL(str(build_library()))
        _configure(library)
        if library.sl_abi_version() != ABI_VERSION:
            raise RuntimeError("stale kernel library (ABI version mismatch)")
        if library.sl_simd_width() == 0:
            raise RuntimeError("the CPU has neither AVX2 nor AVX-512; PyTorch's kernels are faster")
        _library = library
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        _failure = str(error)
        logger.debug("fp32 decode kernels unavailable, using PyTorch: %s", error)
    return _library


def unavailable_reason() -> str | None:
    """Why `load_library()` returned None (None when it loaded or was not tried yet)."""
    return _failure


def gemv(weight: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """weight (N, K) @ x (K,) (+ bias) with the library's GEMV; for tests and measurements."""
    library = load_library()
    if library is None:
        raise RuntimeError(f"kernels unavailable: {_failure}")
    for tensor in (weight, x, bias):
        if tensor is not None and (tensor.dtype != torch.float32 or not tensor.is_contiguous()):
            raise ValueError("gemv takes contiguous fp32 tensors")
    out = torch.empty(weight.shape[0], dtype=torch.float32)
    library.sl_gemv(
        weight.data_ptr(),
        None if bias is None else bias.data_ptr(),
        x.data_ptr(),
        out.data_ptr(),
        weight.shape[0],
        weight.shape[1],
        torch.get_num_threads(),
    )
    return out
