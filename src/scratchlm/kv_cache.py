"""A pre-allocated key/value cache for incremental decoding.

Keys and values for all layers live in two contiguous tensors of shape
(layers, batch, kv_heads, max_len, head_dim), allocated once; each forward writes its new entries in
place at their positions and attention reads views of the filled prefix (no copies, no concatenation,
no allocation per decode step). Rows are independent: a row is addressed by the positions its tokens
are written at, so rows of different lengths share one cache, and a row can be reused for a new
sequence by writing from position 0 (causal masking by position hides whatever a previous sequence
left behind).

The cache holds the model's dtype unless `set_cache_dtype` chose another for the model
(`--kv-cache fp16` on CPU): half the bytes per position, keys and values rounded to fp16 when
written, attention still computed in the model's dtype. `cache_dtype(model)` is what every decoder
allocates.
"""

from __future__ import annotations

import torch
from torch import nn

from scratchlm.config import ModelConfig
from scratchlm.device import on_one_torch_thread
from scratchlm.errors import ScratchLMError

KV_CACHE_TYPES = {"fp32": torch.float32, "fp16": torch.float16}
_ATTRIBUTE = "_scratchlm_kv_cache_dtype"


def set_cache_dtype(model: nn.Module, name: str) -> None:
    """Make the KV caches of `model` fp32 (its default on CPU) or fp16 (`--kv-cache`)."""
    if name not in KV_CACHE_TYPES:
        raise ScratchLMError(
            f"unknown KV cache type {name!r}; use one of {', '.join(KV_CACHE_TYPES)}"
        )
    weights = next(model.parameters())
    if name == "fp16" and (weights.device.type != "cpu" or weights.dtype != torch.float32):
        raise ScratchLMError(
            "--kv-cache fp16 is for fp32 models on CPU; on a GPU the cache already has the "
            "model's 16-bit dtype, so drop --kv-cache"
        )
    setattr(model, _ATTRIBUTE, KV_CACHE_TYPES[name])


def cache_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the KV caches made for `model`: `set_cache_dtype`'s choice, else its
    embedding's dtype (the dtype it computes in)."""
    chosen = getattr(model, _ATTRIBUTE, None)
    if isinstance(chosen, torch.dtype):
        return chosen
    embedding = getattr(model, "token_embedding", None)
    if isinstance(embedding, nn.Embedding):
        return embedding.weight.dtype
    return next(model.parameters()).dtype


class KVCache:
    # Allocated (zero-filled) and its rows copied on one PyTorch thread: right before the decode
    # kernels run, a parallel fill or copy would leave PyTorch's helper threads spinning on the
    # kernels' cores (see on_one_torch_thread).
    @on_one_torch_thread
    def __init__(
        self,
        n_layer: int,
        batch_size: int,
        n_kv_head: int,
        max_len: int,
        head_dim: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        shape = (n_layer, batch_size, n_kv_head, max_len, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.lengths = torch.zeros(batch_size, dtype=torch.long, device=device)  # filled per row
        self.max_len = max_len
        # The common length of all rows when the caller lets the model place tokens
        # (positions=None): the next token of every row goes at `length`.
        self.length = 0

    @classmethod
    def for_model(
        cls,
        config: ModelConfig,
        batch_size: int,
        max_len: int | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> KVCache:
        assert config.n_kv_head is not None and config.head_dim is not None
        return cls(
            config.n_layer,
            batch_size,
            config.n_kv_head,
            max_len or config.context_length,
            config.head_dim,
            dtype=dtype,
            device=device,
        )

    @property
    def batch_size(self) -> int:
        return self.keys.shape[1]

    @property
    def nbytes(self) -> int:
        return self.keys.numel() * self.keys.element_size() * 2

    def reset(self) -> None:
        self.length = 0
        self.lengths.zero_()

    # --- writes (called by the model's attention layers) -------------------------------------
    def write(
        self,
        layer: int,
        keys: torch.Tensor,
        values: torch.Tensor,
        start: int | None,
        positions: torch.Tensor | None,
        visible_len: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store new keys/values (B, kv_heads, T, head_dim) and return views of the first
        `visible_len` cached positions, (B, kv_heads, visible_len, head_dim).

        Either `start` (all rows write positions start..start+T-1: a plain slice) or `positions`
        (B, T), one position per token (one scatter for all rows), says where the entries go.
        """
        batch = keys.shape[0]
        layer_keys, layer_values = self.keys[layer, :batch], self.values[layer, :batch]
        compute_dtype = keys.dtype
        if layer_keys.dtype != compute_dtype:  # an fp16 cache under fp32 compute
            keys, values = keys.to(layer_keys.dtype), values.to(layer_keys.dtype)
        if start is not None:
            end = start + keys.shape[2]
            layer_keys[:, :, start:end] = keys
            layer_values[:, :, start:end] = values
        else:
            assert positions is not None
            index = positions[:, None, :, None].expand(-1, keys.shape[1], -1, keys.shape[3])
            layer_keys.scatter_(2, index, keys)
            layer_values.scatter_(2, index, values)
        visible_keys, visible_values = (
            layer_keys[:, :, :visible_len],
            layer_values[:, :, :visible_len],
        )
        if visible_keys.dtype != compute_dtype:
            # attention computes in the model's dtype on the stored (rounded) values
            return visible_keys.to(compute_dtype), visible_values.to(compute_dtype)
        return visible_keys, visible_values

    def advance(self, positions: torch.Tensor | None, count: int, batch: int) -> None:
        """Record a forward's writes: `count` tokens at the common length, or explicit positions."""
        if positions is None:
            self.length += count
            self.lengths[:batch] = self.length
        else:
            # amax, not max(dim=1): max launches an OpenMP region even for a few values, and
            # the woken helper thread then spins for milliseconds on a core the decode kernels
            # need (an 8-row kernel step took 13.4 ms instead of 9.3).
            filled = positions.reshape(batch, -1).amax(dim=1) + 1
            self.lengths[:batch] = torch.maximum(self.lengths[:batch], filled)

    # --- row management (batching, beam search) ----------------------------------------------
    def rows(self, start: int, stop: int) -> KVCache:
        """A cache over rows [start, stop) that shares this one's storage (no copy)."""
        view = KVCache.__new__(KVCache)
        view.keys, view.values = self.keys[:, start:stop], self.values[:, start:stop]
        view.lengths = self.lengths[start:stop]
        view.max_len = self.max_len
        view.length = 0
        return view

    @on_one_torch_thread
    def copy_row(self, source: int, target: int, filled: int | None = None) -> None:
        """Row `target` becomes a copy of row `source`; `filled`: only its first positions are
        copied (the rest is never read: attention stops at a row's own position), so compacting
        a batch costs the rows' lengths, not the context length."""
        stop = self.max_len if filled is None else filled
        self.keys[:, target, :, :stop] = self.keys[:, source, :, :stop]
        self.values[:, target, :, :stop] = self.values[:, source, :, :stop]
        self.lengths[target] = self.lengths[source]

    @on_one_torch_thread
    def swap_rows(self, first: int, second: int, filled: int | None = None) -> None:
        """Exchange two rows (their first `filled` positions, as copy_row)."""
        stop = self.max_len if filled is None else filled
        for tensor in (self.keys, self.values):
            saved = tensor[:, first, :, :stop].clone()
            tensor[:, first, :, :stop] = tensor[:, second, :, :stop]
            tensor[:, second, :, :stop] = saved
        self.lengths[[first, second]] = self.lengths[[second, first]]

    @on_one_torch_thread
    def reorder_rows(self, order: torch.Tensor) -> None:
        """Row i becomes old row order[i] (beam search keeps the surviving beams' histories)."""
        count = order.numel()
        self.keys[:, :count] = self.keys[:, order]
        self.values[:, :count] = self.values[:, order]
        self.lengths[:count] = self.lengths[order]
