"""Building and loading the decode kernels: compile `decode.cpp` with the system C++ compiler,
cache the shared library, and bind it with ctypes.

The library is compiled (`$CXX` or g++, `-O3 -march=native -pthread`, ~3-5 s on a quiet machine)
on first use and cached under `$TORCH_EXTENSIONS_DIR` (default ~/.cache/torch_extensions), keyed by
the source, compiler, flags and the CPU's instruction sets (a home directory shared between
machines never loads a binary built for another CPU; the loaded binary's own ISA is checked against
the CPU's flags too). `SCRATCHLM_KERNEL_ISA=avx2` builds for AVX2 + FMA + F16C instead of the host's
best (`native`, the default). Without a compiler, on non-Linux systems or on a CPU without AVX2,
`load_library()` returns None and logs ONE warning line per process; callers keep PyTorch's path.
`SCRATCHLM_KERNELS=0` turns the kernels off without a warning.
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

from scratchlm.inference.kernels.quant import ROW_GROUP

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("decode.cpp")
ENV_SWITCH = "SCRATCHLM_KERNELS"  # "0" turns the fast path off
ENV_ISA = "SCRATCHLM_KERNEL_ISA"  # "native" (default) or "avx2"
ABI_VERSION = 5
COMMON_FLAGS = ("-O3", "-pthread", "-fPIC", "-shared", "-std=c++17")
ISA_FLAGS = {"native": ("-march=native",), "avx2": ("-mavx2", "-mfma", "-mf16c")}
# sl_isa_mask() bits and the /proc/cpuinfo flag each needs.
ISA_BITS = {
    1: "avx2",
    2: "fma",
    4: "f16c",
    8: "avx512f",
    16: "avx512bw",
    32: "avx512vl",
    64: "avx512_vnni",
    128: "avx512_bf16",
}
# The flags that change what -march=native compiles (part of the cache key and directory name).
ISA_FLAG_NAMES: tuple[str, ...] = (
    *("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq"),
    *("avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_int8", "amx_bf16"),
)

_POINTER = ctypes.c_void_p


class SlLayer(ctypes.Structure):
    """Mirror of `SlLayer` in decode.cpp (field order matters; `*_s`: q8/q4 block scales)."""

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
            "q_s",
            "k_s",
            "v_s",
            "o_s",
            "gate_s",
            "up_s",
            "down_s",
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
        ("lm_head_s", _POINTER),
        ("weight_type", ctypes.c_int32),
        ("pad2_", ctypes.c_int32),
        ("cache_row_stride", ctypes.c_int64),
        ("kv_type", ctypes.c_int32),
        ("pad3_", ctypes.c_int32),
    ]


# --- building and loading the library ---------------------------------------------------------

_library: ctypes.CDLL | None = None
_load_attempted = False
_failure: str | None = None


def kernels_enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip() != "0"


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++"))


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def isa_mode() -> str:
    """The instruction sets to build for: `$SCRATCHLM_KERNEL_ISA`, "native" by default."""
    mode = os.environ.get(ENV_ISA, "native").strip().lower() or "native"
    if mode not in ISA_FLAGS:
        raise RuntimeError(f"{ENV_ISA}={mode!r} is not one of {', '.join(ISA_FLAGS)}")
    return mode


def _isa_label(flags: frozenset[str], mode: str) -> str:
    """A readable name for the build's instruction sets (part of its cache directory's name)."""
    if mode == "avx2" or "avx512f" not in flags:
        return "avx2"
    return "avx512vnni" if "avx512_vnni" in flags else "avx512"


def _cache_dir() -> Path:
    # torch's default extension directory, so one place holds every compiled extension.
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or str(
        Path.home() / ".cache" / "torch_extensions"
    )
    return Path(root)


def library_path() -> tuple[Path, str, tuple[str, ...]]:
    """Where this machine's build lives (keyed by source, compiler, flags and the CPU's
    instruction sets), the compiler and its flags. Raises RuntimeError when no build can apply."""
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("no C++ compiler found (set $CXX or install g++)")
    mode = isa_mode()
    flags = cpu_flags()
    isa = sorted(flags & set(ISA_FLAG_NAMES))
    needed = {"avx2", "fma", "f16c"}
    if flags and not needed <= flags:
        raise RuntimeError(f"the CPU lacks {', '.join(sorted(needed - flags))} (AVX2 is needed)")
    source = SOURCE.read_bytes()
    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, check=False
    ).stdout
    compile_flags = (*COMMON_FLAGS, *ISA_FLAGS[mode])
    key = hashlib.sha256(
        b"\0".join(
            [
                source,
                version.encode(),
                " ".join(compile_flags).encode(),
                " ".join(isa).encode(),
                " ".join(sorted(flags)).encode(),  # -march=native may use any of them
            ]
        )
    ).hexdigest()[:16]
    directory = _cache_dir() / f"scratchlm_decode_{_isa_label(flags, mode)}_{key}"
    return directory / "libscratchlm_decode.so", compiler, compile_flags


def build_library(*, force: bool = False) -> Path:
    """Compile decode.cpp (or reuse the cached build); returns the shared library's path.

    Raises RuntimeError (with the compiler's output) when it cannot be built.
    """
    target, compiler, compile_flags = library_path()
    if target.is_file() and not force:
        return target
    directory = target.parent
    directory.mkdir(parents=True, exist_ok=True)
    # Build under a temporary name, then rename: concurrent first uses (test workers) never load
    # a half-written library.
    handle, partial = tempfile.mkstemp(suffix=".so", dir=directory)
    os.close(handle)
    try:
        result = subprocess.run(
            [compiler, *compile_flags, str(SOURCE), "-o", partial],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            output = result.stderr.strip()
            lines = output.splitlines() or ["(no output)"]
            first = next((line for line in lines if "error" in line), lines[0])
            # The first line (the warning shows it) names the first error; then the full output.
            raise RuntimeError(f"{compiler} failed: {first}\n{output}")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


def _check_isa(library: ctypes.CDLL) -> None:
    """Refuse a binary that uses instructions this CPU lacks (before any of its code runs)."""
    flags = cpu_flags()
    if not flags:
        return  # nothing to check against; the build targeted this machine
    mask = library.sl_isa_mask()
    missing = [name for bit, name in ISA_BITS.items() if mask & bit and name not in flags]
    if missing:
        raise RuntimeError(f"the kernel library needs {', '.join(missing)}, which this CPU lacks")


def _configure(library: ctypes.CDLL) -> None:
    library.sl_abi_version.restype = ctypes.c_int
    library.sl_simd_width.restype = ctypes.c_int
    library.sl_isa_mask.restype = ctypes.c_int
    library.sl_q_row_group.restype = ctypes.c_int
    library.sl_workspace_floats.restype = ctypes.c_int64
    library.sl_workspace_floats.argtypes = [ctypes.c_int64] * 7
    library.sl_gemv.restype = None
    library.sl_gemv.argtypes = [_POINTER] * 4 + [ctypes.c_int64, ctypes.c_int64, ctypes.c_int]
    library.sl_gemv_typed.restype = ctypes.c_int
    library.sl_gemv_typed.argtypes = (
        [ctypes.c_int32]
        + [_POINTER] * 5
        + [
            ctypes.c_int64,
            ctypes.c_int64,
            ctypes.c_int,
        ]
    )
    library.sl_decode_step.restype = ctypes.c_int
    library.sl_decode_step.argtypes = [
        ctypes.POINTER(SlModel),
        ctypes.c_int64,
        ctypes.c_int64,
        _POINTER,
        ctypes.c_int,
        ctypes.c_int64,
    ]
    library.sl_forward_workspace_floats.restype = ctypes.c_int64
    library.sl_forward_workspace_floats.argtypes = [ctypes.c_int64] * 8
    library.sl_forward_tokens.restype = ctypes.c_int
    library.sl_forward_tokens.argtypes = [
        ctypes.POINTER(SlModel),
        ctypes.c_int64,
        *(_POINTER,) * 5,
        ctypes.c_int,
        ctypes.c_int64,
    ]


def load_library() -> ctypes.CDLL | None:
    """The compiled kernels, or None when they are unavailable (the reason: `unavailable_reason`).

    Built and loaded once per process; a failure is logged once as a warning and remembered.
    """
    global _library, _load_attempted, _failure
    if _load_attempted:
        return _library
    _load_attempted = True
    try:
        if not sys.platform.startswith("linux"):
            # The thread team sleeps on Linux futexes.
            raise RuntimeError(f"they are built on Linux only ({sys.platform})")
        library = ctypes.CDLL(str(build_library()))
        _configure(library)
        if library.sl_abi_version() != ABI_VERSION or library.sl_q_row_group() != ROW_GROUP:
            raise RuntimeError("stale kernel library (ABI version mismatch)")
        _check_isa(library)
        if library.sl_simd_width() == 0:
            raise RuntimeError("the CPU has neither AVX2 nor AVX-512; PyTorch's kernels are faster")
        _library = library
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        _failure = str(error)
        # One line (a compiler's output is cut to its first line; the rest goes to debug).
        first_line = _failure.splitlines()[0] if _failure else "unknown error"
        logger.warning(
            "scratchlm: fast CPU decode kernels unavailable (%s); decoding with PyTorch instead "
            "(slower; %s=0 silences this)",
            first_line,
            ENV_SWITCH,
        )
        logger.debug("kernel failure in full: %s", _failure)
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


def gemv_packed(
    weight_type: int,
    data: torch.Tensor,
    scales: torch.Tensor | None,
    x: torch.Tensor,
    rows: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """y (rows) = W x (+ bias) for W (rows, x's length) packed in a kernel format (`data`, `scales`
    as scratchlm.inference.kernels.quant writes them); for tests and measurements."""
    library = load_library()
    if library is None:
        raise RuntimeError(f"kernels unavailable: {_failure}")
    for tensor in (data, scales, x, bias):
        if tensor is not None and not tensor.is_contiguous():
            raise ValueError("gemv_packed takes contiguous tensors")
    if x.dtype != torch.float32 or (bias is not None and bias.dtype != torch.float32):
        raise ValueError("x and bias must be fp32")
    out = torch.empty(rows, dtype=torch.float32)
    status = library.sl_gemv_typed(
        weight_type,
        data.data_ptr(),
        None if scales is None else scales.data_ptr(),
        None if bias is None else bias.data_ptr(),
        x.data_ptr(),
        out.data_ptr(),
        rows,
        x.shape[0],
        torch.get_num_threads(),
    )
    if status != 0:
        raise ValueError(f"unknown weight type {weight_type}")
    return out
