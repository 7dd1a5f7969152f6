"""fp32 CPU decode kernels: one C++ call per decoded token, with automatic fallback.

Decoding one token at batch 1 reads every weight once. PyTorch's CPU GEMV streams weights from
DRAM at ~10 GB/s on the reference machine (2-core EPYC, AVX-512) while a plain read reaches 30+
GB/s, and a small model spends most of its step in per-op overhead (~200 PyTorch ops per token).
`decode.cpp` computes a whole decode step (embedding, every block, final norm, lm_head) in one call
with row-blocked FMA GEMVs (~24 GB/s with two threads), reading the model's own parameters and KV
cache in place (no copies, no extra memory). See docs/benchmarks.md, "Inference
speed (issue 3)".

Use: `decoder = fast_decoder(model, cache)` after the prefill; it is None whenever the fast path
does not apply (then keep calling the model), else `decoder.step(token)` returns the logits
(1, 1, padded_vocab) for that token and advances the cache, exactly like
`model(tensor([[token]]), kv_cache=cache, last_token_only=True)` up to fp32 rounding.

It applies to plain `GPT` models with fp32 weights on CPU, unquantized `nn.Linear` layers (no LoRA
wrappers, no hooks, no replaced `forward`), in eval mode (or with dropout 0), batch-1 caches. The
library is compiled with the system C++ compiler (`$CXX` or g++, `-O3 -march=native -pthread`,
2.5-4 s) on first use and cached under `$TORCH_EXTENSIONS_DIR` (default
~/.cache/torch_extensions), keyed by the source, compiler and CPU; without a compiler, on non-Linux systems, without AVX2, or with
`SCRATCHLM_KERNELS=0`, everything silently keeps PyTorch's path (logged once at debug level).
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
from torch import nn

from scratchlm.kv_cache import KVCache
from scratchlm.model import GPT, Block

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("decode.cpp")
ENV_SWITCH = "SCRATCHLM_KERNELS"  # "0" turns the fast path off
ABI_VERSION = 2
COMPILE_FLAGS = ("-O3", "-march=native", "-pthread", "-fPIC", "-shared", "-std=c++17")
NORM_KINDS = {"rmsnorm": 0, "layernorm": 1}
MLP_KINDS = {"gelu": 0, "gelu_tanh": 1, "leaky_relu": 2, "swiglu": 3, "relu2": 4}

_POINTER = ctypes.c_void_p


class _Layer(ctypes.Structure):
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


class _Model(ctypes.Structure):
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
        ("layers", ctypes.POINTER(_Layer)),
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
        ctypes.POINTER(_Model),
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


# --- the decode step ----------------------------------------------------------------------------


def _plain_fp32(tensor: torch.Tensor | None) -> bool:
    return tensor is None or (
        type(tensor) in (torch.Tensor, nn.Parameter)  # not a DTensor (FSDP) or other subclass
        and tensor.device.type == "cpu"
        and tensor.dtype == torch.float32
        and tensor.layout == torch.strided
        and tensor.is_contiguous()
    )


def unsupported_reason(model: nn.Module, cache: KVCache) -> str | None:
    """Why the fast path cannot decode this model with this cache (None: it can)."""
    if not isinstance(model, GPT) or type(model).forward is not GPT.forward:
        return "not a plain GPT"
    if "forward" in model.__dict__:
        return "the model's forward was replaced (e.g. torch.compile)"
    if model.training and model.config.dropout > 0:
        return "training mode with dropout"
    for module in model.modules():
        if module._forward_hooks or module._forward_pre_hooks:
            return "a module has forward hooks"
        if isinstance(module, nn.Linear) and type(module) is not nn.Linear:
            return f"a linear layer is a {type(module).__name__}"
    for block in model.blocks:
        assert isinstance(block, Block)
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            if type(getattr(block.attention, name)) is not nn.Linear:
                return f"{name} is not an nn.Linear (quantized or adapted)"
        for projection in (block.mlp.gate_proj, block.mlp.up_proj, block.mlp.down_proj):
            if projection is not None and type(projection) is not nn.Linear:
                return "an MLP projection is not an nn.Linear (quantized or adapted)"
    if type(model.lm_head) is not nn.Linear:
        return "lm_head is not an nn.Linear"
    if not all(_plain_fp32(tensor) for tensor in model.parameters()):
        return "weights are not contiguous fp32 CPU tensors"
    if model.config.position == "rope" and not (
        _plain_fp32(model.rope_cos) and _plain_fp32(model.rope_sin)
    ):
        return "RoPE tables are not contiguous fp32 CPU tensors"
    keys, values = cache.keys, cache.values
    if keys.shape[1] != 1 or keys.dtype != torch.float32 or keys.device.type != "cpu":
        return "the cache is not a batch-1 fp32 CPU cache"
    for tensor in (keys, values):
        if tensor.stride(-1) != 1 or tensor.stride(-2) != tensor.shape[-1]:
            return "the cache rows are not contiguous"
    if keys.stride() != values.stride():
        return "keys and values have different layouts"
    return None


def _pointer(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def _norm_pointers(norm: nn.Module) -> tuple[int | None, int | None]:
    weight = getattr(norm, "weight", None)
    bias = getattr(norm, "bias", None)
    assert isinstance(weight, torch.Tensor)
    return weight.data_ptr(), _pointer(bias if isinstance(bias, torch.Tensor) else None)


class FastDecoder:
    """Batch-1 decode steps of one model against one KV cache through decode.cpp.

    Holds raw pointers into the model's parameters and the cache (and references to both, so
    they stay alive); build a new one whenever either may have been replaced (once per
    generation is cheap: ~0.1 ms).
    """

    def __init__(self, library: ctypes.CDLL, model: GPT, cache: KVCache) -> None:
        config = model.config
        assert config.head_dim is not None and config.n_kv_head is not None
        assert config.ffn_hidden is not None and config.padded_vocab_size is not None
        self.library = library
        self.model = model
        self.cache = cache
        self.vocab = config.padded_vocab_size
        self.max_positions = min(cache.max_len, config.context_length)
        layers = (_Layer * config.n_layer)()
        for index, block in enumerate(model.blocks):
            assert isinstance(block, Block)
            attention, mlp = block.attention, block.mlp
            layer = layers[index]
            layer.attn_norm_w, layer.attn_norm_b = _norm_pointers(block.attention_norm)
            layer.mlp_norm_w, layer.mlp_norm_b = _norm_pointers(block.mlp_norm)
            for prefix, linear in (
                ("q", attention.q_proj),
                ("k", attention.k_proj),
                ("v", attention.v_proj),
                ("o", attention.o_proj),
                ("gate", mlp.gate_proj),
                ("up", mlp.up_proj),
                ("down", mlp.down_proj),
            ):
                if linear is None:
                    continue
                setattr(layer, f"{prefix}_w", linear.weight.data_ptr())
                setattr(layer, f"{prefix}_b", _pointer(linear.bias))
            if attention.q_norm is not None and attention.k_norm is not None:
                layer.q_norm_w = attention.q_norm.weight.data_ptr()
                layer.k_norm_w = attention.k_norm.weight.data_ptr()
            # cache.keys (layers, batch, kv_heads, max_len, head_dim): this layer's row 0.
            layer.keys = cache.keys[index, 0].data_ptr()
            layer.values = cache.values[index, 0].data_ptr()
        self._layers = layers  # kept alive: the struct below points into it
        spec = _Model()
        spec.n_layer = config.n_layer
        spec.d_model = config.d_model
        spec.n_head = config.n_head
        spec.n_kv_head = config.n_kv_head
        spec.head_dim = config.head_dim
        spec.ffn_hidden = config.ffn_hidden
        spec.vocab = config.padded_vocab_size
        spec.cache_head_stride = cache.keys.stride(2)
        spec.norm_kind = NORM_KINDS[config.norm]
        spec.mlp_kind = MLP_KINDS[config.mlp]
        spec.norm_eps = config.norm_eps
        spec.leaky_relu_slope = config.leaky_relu_slope
        spec.logit_softcap = config.logit_softcap or 0.0
        spec.token_embedding = model.token_embedding.weight.data_ptr()
        if model.position_embedding is not None:
            spec.position_embedding = model.position_embedding.weight.data_ptr()
        if model.embedding_norm is not None:
            spec.embedding_norm_w = model.embedding_norm.weight.data_ptr()
        if config.position == "rope":
            spec.rope_cos = model.rope_cos.data_ptr()
            spec.rope_sin = model.rope_sin.data_ptr()
        spec.final_norm_w, spec.final_norm_b = _norm_pointers(model.final_norm)
        spec.lm_head_w = model.lm_head.weight.data_ptr()
        spec.layers = layers
        self._spec = spec
        self._threads = 0
        self._workspace = torch.empty(0)
        self._ensure_workspace(torch.get_num_threads())

    def _ensure_workspace(self, threads: int) -> None:
        if threads <= self._threads:
            return
        config = self.model.config
        floats = self.library.sl_workspace_floats(
            config.d_model,
            config.n_head,
            config.n_kv_head,
            config.head_dim,
            config.ffn_hidden,
            self.max_positions,
            threads,
        )
        self._workspace = torch.empty(floats, dtype=torch.float32)
        self._spec.workspace = self._workspace.data_ptr()
        self._threads = threads

    def step(self, token: int) -> torch.Tensor:
        """Logits (1, 1, padded_vocab) of the token after `token`, which goes at the cache's
        current length; advances the cache by one position."""
        position = self.cache.length
        if position >= self.max_positions:
            raise IndexError(f"the KV cache is full ({self.max_positions} positions)")
        if not 0 <= token < self.vocab:
            raise IndexError(f"token id {token} is outside the vocabulary ({self.vocab})")
        threads = torch.get_num_threads()
        self._ensure_workspace(threads)
        logits = torch.empty((1, 1, self.vocab), dtype=torch.float32)
        self.library.sl_decode_step(
            ctypes.byref(self._spec),
            token,
            position,
            logits.data_ptr(),
            threads,
            self.max_positions,
        )
        self.cache.advance(None, 1, 1)
        return logits


def fast_decoder(model: nn.Module, cache: KVCache) -> FastDecoder | None:
    """A FastDecoder for this model and cache, or None when the fast path does not apply."""
    if not kernels_enabled():
        return None
    reason = unsupported_reason(model, cache)
    if reason is not None:
        logger.debug("fp32 decode kernels not used: %s", reason)
        return None
    library = load_library()
    if library is None:
        return None
    assert isinstance(model, GPT)
    return FastDecoder(library, model, cache)
