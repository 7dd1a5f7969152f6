"""Decode steps and prefills through the compiled kernels: which models and caches they apply to
(`unsupported_reason`), and `FastDecoder`, which points the library at a model's parameters (or at
its packed q8/q4/bf16 copy, see `quant.attach`) and KV cache in place. `fast_decoder(model, cache)`
gives one, or None when the fast path does not apply; `batch=True` accepts a cache of many rows
(continuous batching, beam search) for `FastDecoder.forward`.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
from collections.abc import Sequence

import torch
from torch import nn

from scratchlm.inference.kernels.loader import SlLayer, SlModel, kernels_enabled, load_library
from scratchlm.inference.kernels.quant import (
    WEIGHT_TYPES,
    PackedModel,
    PackedWeight,
    materialize,
    packed_weights,
)
from scratchlm.kv_cache import KVCache, cache_dtype
from scratchlm.model import GPT, Block

logger = logging.getLogger(__name__)
_warned_stale = False

NORM_KINDS = {"rmsnorm": 0, "layernorm": 1}
MLP_KINDS = {"gelu": 0, "gelu_tanh": 1, "leaky_relu": 2, "swiglu": 3, "relu2": 4}
MLP_PREFIXES = ("gate", "up", "down")
KV_TYPES = {torch.float32: 0, torch.float16: 1}  # decode.cpp's KvType


def _plain_fp32(tensor: torch.Tensor | None) -> bool:
    if isinstance(tensor, PackedWeight):
        return True  # the kernel reads its packed matrix (fast_decoder checks that it matches)
    return tensor is None or (
        type(tensor) in (torch.Tensor, nn.Parameter)  # not a DTensor (FSDP) or other subclass
        and tensor.device.type == "cpu"
        and tensor.dtype == torch.float32
        and tensor.layout == torch.strided
        and tensor.is_contiguous()
    )


def unsupported_reason(model: nn.Module, cache: KVCache, *, batch: bool = False) -> str | None:
    """Why the fast path cannot decode this model with this cache (None: it can). `batch`: the
    cache may hold many rows (`FastDecoder.forward` only); else it must be a batch-1 cache."""
    return model_unsupported_reason(model) or cache_unsupported_reason(cache, batch=batch)


def model_unsupported_reason(model: nn.Module) -> str | None:
    """Why the fast path cannot run this model with any cache (None: it can).

    One walk over the modules, reading each one's own parameters: `Engine.generate` builds a
    decoder per call, and `model.parameters()` walks the module tree again for every parameter
    (this check took 0.6 ms of a 32-token prefill's ~20 on llama-42m, as three walks)."""
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
        if not all(_plain_fp32(tensor) for tensor in module._parameters.values()):
            return "weights are not contiguous fp32 CPU tensors"
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
    if model.config.position == "rope" and not (
        _plain_fp32(model.rope_cos) and _plain_fp32(model.rope_sin)
    ):
        return "RoPE tables are not contiguous fp32 CPU tensors"
    return None


def cache_unsupported_reason(cache: KVCache, *, batch: bool = False) -> str | None:
    """Why the fast path cannot decode into this cache (None: it can)."""
    keys, values = cache.keys, cache.values
    if keys.dtype not in KV_TYPES or keys.device.type != "cpu":
        return "the cache is not an fp32 or fp16 CPU cache"
    if keys.shape[1] != 1 and not batch:
        return "the cache is not a batch-1 cache"
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


# Tokens per sl_forward_tokens call: longer prefills go in chunks (one after another, so each
# chunk attends to the cache the earlier ones wrote), which bounds the workspace (~6K floats per
# token at llama-42m's sizes: 6 MB) while every weight block is read once per 256 tokens. Chunks
# of 64 read every weight four times in a 256-token prefill and redo the per-panel work of the
# GEMM tiles (packing, bf16/q8/q4 rearranging) as often: 256 measured 1.2x (fp32) and 1.4x (bf16)
# the tokens/s of 64 on llama-42m (2 threads, 2026-12-03).
FORWARD_CHUNK = 256


class FastDecoder:
    """Decode steps (batch 1) and many-token forwards (prefills, batch steps) of one model against
    one KV cache through decode.cpp.

    Holds raw pointers into the model's parameters and the cache (and references to both, so
    they stay alive); build a new one whenever either may have been replaced (once per
    generation: `fast_decoder` took 0.7 ms on llama-42m, 2026-12-04).
    """

    def __init__(
        self, library: ctypes.CDLL, model: GPT, cache: KVCache, packed: PackedModel | None = None
    ) -> None:
        """`packed`: the model's linear layers in a kernel format (None: its fp32 parameters)."""
        config = model.config
        assert config.head_dim is not None and config.n_kv_head is not None
        assert config.ffn_hidden is not None and config.padded_vocab_size is not None
        self.library = library
        self.model = model
        self.cache = cache
        self.packed = packed  # kept alive: the library reads its tensors
        self.vocab = config.padded_vocab_size
        self.max_positions = min(cache.max_len, config.context_length)
        layers = (SlLayer * config.n_layer)()
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
                name = f"blocks.{index}.{'mlp' if prefix in MLP_PREFIXES else 'attention'}"
                data, scales = self._matrix(linear.weight, f"{name}.{prefix}_proj")
                setattr(layer, f"{prefix}_w", data)
                setattr(layer, f"{prefix}_s", scales)
                setattr(layer, f"{prefix}_b", _pointer(linear.bias))
            if attention.q_norm is not None and attention.k_norm is not None:
                layer.q_norm_w = attention.q_norm.weight.data_ptr()
                layer.k_norm_w = attention.k_norm.weight.data_ptr()
            # cache.keys (layers, batch, kv_heads, max_len, head_dim): this layer's row 0.
            layer.keys = cache.keys[index, 0].data_ptr()
            layer.values = cache.values[index, 0].data_ptr()
        self._layers = layers  # kept alive: the struct below points into it
        spec = SlModel()
        spec.n_layer = config.n_layer
        spec.d_model = config.d_model
        spec.n_head = config.n_head
        spec.n_kv_head = config.n_kv_head
        spec.head_dim = config.head_dim
        spec.ffn_hidden = config.ffn_hidden
        spec.vocab = config.padded_vocab_size
        spec.cache_head_stride = cache.keys.stride(2)
        spec.cache_row_stride = cache.keys.stride(1)
        spec.kv_type = KV_TYPES[cache.keys.dtype]
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
        spec.lm_head_w, spec.lm_head_s = self._matrix(model.lm_head.weight, "lm_head")
        spec.weight_type = WEIGHT_TYPES["f32" if packed is None else packed.format]
        spec.layers = layers
        self._spec = spec
        self._capacity = (0, 0)  # (threads, tokens) the workspace holds
        self._workspace = torch.empty(0)
        self._ensure_workspace(torch.get_num_threads(), 1)

    def _matrix(self, weight: torch.Tensor, name: str) -> tuple[int, int | None]:
        """Pointers to a linear layer's weights as the kernel reads them: the fp32 parameter, or
        its packed data and block scales."""
        if self.packed is None:
            return weight.data_ptr(), None
        matrix = self.packed.matrices[name]
        return matrix.data.data_ptr(), _pointer(matrix.scales)

    def _ensure_workspace(self, threads: int, tokens: int) -> None:
        """Room for `threads` threads and `tokens` tokens per call (a decode step needs no more
        than a one-token forward)."""
        held_threads, held_tokens = self._capacity
        if threads <= held_threads and tokens <= held_tokens:
            return
        threads, tokens = max(threads, held_threads), max(tokens, held_tokens)
        config = self.model.config
        floats = self.library.sl_forward_workspace_floats(
            config.d_model,
            config.n_head,
            config.n_kv_head,
            config.head_dim,
            config.ffn_hidden,
            self.max_positions,
            threads,
            tokens,
        )
        self._workspace = torch.empty(floats, dtype=torch.float32)
        self._spec.workspace = self._workspace.data_ptr()
        self._capacity = (threads, tokens)

    def step(self, token: int) -> torch.Tensor:
        """Logits (1, 1, padded_vocab) of the token after `token`, which goes at the cache's
        current length; advances the cache by one position."""
        position = self.cache.length
        if position >= self.max_positions:
            raise IndexError(f"the KV cache is full ({self.max_positions} positions)")
        if not 0 <= token < self.vocab:
            raise IndexError(f"token id {token} is outside the vocabulary ({self.vocab})")
        assert self.cache.batch_size == 1, "step() decodes a batch-1 cache; use forward()"
        threads = torch.get_num_threads()
        self._ensure_workspace(threads, 1)
        logits = torch.empty((1, 1, self.vocab), dtype=torch.float32)
        status = self.library.sl_decode_step(
            ctypes.byref(self._spec),
            token,
            position,
            logits.data_ptr(),
            threads,
            self.max_positions,
        )
        assert status == 0, f"decode step failed ({status})"
        self.cache.advance(None, 1, 1)
        return logits

    def forward(
        self,
        tokens: Sequence[int],
        rows: Sequence[int],
        positions: Sequence[int],
        *,
        last_only: bool = False,
        logits_for: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Token i into cache row rows[i] at positions[i], attending over positions
        0..positions[i] of its row; logits (n, padded_vocab), or (1, padded_vocab) of the last
        token with `last_only` (a prefill), or (len(logits_for), padded_vocab) of the tokens whose
        indexes `logits_for` lists in increasing order (a batch step with prompt chunks mixed in).

        N rows at one position each (a batch step) and consecutive positions of one row (a
        prefill, a speculative verification) are the same call; the model's
        `model(tokens, positions=..., kv_cache=cache)` up to fp32 rounding (and, for q8/q4, the
        rounding of each GEMV's input to int8 blocks). The cache's `length` and `lengths` are the
        caller's to update (as the model's forward would: `cache.advance`).
        """
        count = len(tokens)
        if count == 0 or len(rows) != count or len(positions) != count:
            raise ValueError("forward takes one row and one position per token (at least one)")
        if not all(0 <= token < self.vocab for token in tokens):
            raise IndexError(f"a token id is outside the vocabulary ({self.vocab})")
        if not all(0 <= position < self.max_positions for position in positions):
            raise IndexError(f"a position is past the KV cache ({self.max_positions} positions)")
        if not all(0 <= row < self.cache.batch_size for row in rows):
            raise IndexError(f"a row is outside the cache ({self.cache.batch_size} rows)")
        if len(set(zip(rows, positions, strict=True))) != count:
            raise ValueError("two tokens go to the same row and position")
        threads = torch.get_num_threads()
        self._ensure_workspace(threads, min(count, FORWARD_CHUNK))
        # int64 arrays the library reads: tokens, rows, positions and, per token, the logits row
        # it writes (-1: none).
        if logits_for is not None:
            wanted: Sequence[int] = list(logits_for)
            if any(not 0 <= index < count for index in wanted) or any(
                later <= earlier for earlier, later in itertools.pairwise(wanted)
            ):
                raise ValueError("logits_for lists token indexes in increasing order")
        else:
            wanted = [count - 1] if last_only else range(count)
        logit_rows = [-1] * count
        for index, token_index in enumerate(wanted):
            logit_rows[token_index] = index
        table = torch.tensor([list(tokens), list(rows), list(positions), logit_rows])  # (4, n)
        logits = torch.empty((len(wanted), self.vocab), dtype=torch.float32)
        for start in range(0, count, FORWARD_CHUNK):
            stop = min(start + FORWARD_CHUNK, count)
            chunk = table[:, start:stop].contiguous()  # (4, chunk)
            # Logits rows are numbered over the whole call; point the library at this chunk's
            # first one (rows of chunks that want none are never written).
            first = next((row for row in logit_rows[start:stop] if row >= 0), 0)
            chunk[3] -= torch.where(chunk[3] >= 0, first, 0)
            status = self.library.sl_forward_tokens(
                ctypes.byref(self._spec),
                stop - start,
                chunk[0].data_ptr(),
                chunk[1].data_ptr(),
                chunk[2].data_ptr(),
                logits[first:].data_ptr(),
                chunk[3].data_ptr(),
                threads,
                self.max_positions,
            )
            assert status == 0, f"forward failed ({status})"
        return logits


def fast_decoder(model: nn.Module, cache: KVCache, *, batch: bool = False) -> FastDecoder | None:
    """A FastDecoder for this model and cache, or None when the fast path does not apply.
    `batch`: the cache may hold many rows (then use `forward` only)."""
    model_reason = "kernels disabled" if not kernels_enabled() else model_unsupported_reason(model)
    if model_reason is None and load_library() is None:
        model_reason = "the kernels could not be built"
    if model_reason is not None:
        logger.debug("decode kernels not used: %s", model_reason)
        _hold_fp32_weights(model)  # the model's forward runs every step from now on
        return None
    cache_reason = cache_unsupported_reason(cache, batch=batch)
    if cache_reason is not None:
        logger.debug("decode kernels not used: %s", cache_reason)
        return None
    library = load_library()
    assert isinstance(model, GPT) and library is not None
    packed = packed_weights(model)
    if packed is not None and not packed.matches(model):
        # The weights were replaced or changed after quantization: the packed copy is stale, and
        # the current fp32 weights are what the model computes with.
        global _warned_stale
        if not _warned_stale:
            logger.warning(
                "scratchlm: the model's weights changed after %s quantization; decoding them "
                "in fp32 (quantize again for %s speed)",
                packed.format,
                packed.format,
            )
            _warned_stale = True
        packed = None
        _hold_fp32_weights(model)  # the kernel reads fp32 pointers of every linear layer
    return FastDecoder(library, model, cache, packed)


def quantized_fast_decoder(model: nn.Module, cache: KVCache) -> FastDecoder | None:
    """A FastDecoder (many rows) for a quantized model (q8, q4, bf16) whose many-token forwards
    an evaluation runs: its PyTorch forward would dequantize every weight at every op, where the
    kernels read the packed blocks (scoring 1.4-2.1x faster, docs/benchmarks.md). None for fp32
    models, which keep PyTorch's batched matmuls, and where the kernels do not apply."""
    if not isinstance(model, GPT) or packed_weights(model) is None:
        return None
    return fast_decoder(model, cache, batch=True)


def kernel_logits(model: GPT, inputs: torch.Tensor) -> torch.Tensor | None:
    """Logits (B, T, padded vocab) of a quantized model through the decode kernels, each row of
    `inputs` (B, T) from position 0; None for an fp32 model or where the kernels do not apply.
    For the evaluations' many-token forwards (`evaluate_text(..., fast_logits=kernel_logits)`).
    One row at a time through one batch-1 cache: the kernel reads each weight block once per 256
    tokens either way, and a cache of all B rows would hold B times the keys and values."""
    if packed_weights(model) is None:
        return None  # before allocating a cache: fp32 models take this path at every batch
    length = inputs.shape[1]
    cache = KVCache.for_model(model.config, 1, length, dtype=cache_dtype(model))
    fast = quantized_fast_decoder(model, cache)
    if fast is None:
        return None
    positions = list(range(length))
    return torch.stack(
        [fast.forward(row.tolist(), [0] * length, positions) for row in inputs]
    )  # (B, T, padded vocab)


def _hold_fp32_weights(model: nn.Module) -> None:
    """Give a quantized model plain fp32 weights before a path that reads them at every step
    (a PyTorch decode, or the kernel's fp32 mode): a PackedWeight would dequantize itself at
    each use."""
    if isinstance(model, GPT) and packed_weights(model) is not None:
        replaced = materialize(model)
        if replaced:
            logger.info(
                "holding fp32 copies of %d quantized weights (fast path not used)", replaced
            )
