"""A pre-allocated key/value cache for incremental decoding.

Keys and values for all layers live in two contiguous tensors of shape
(layers, batch, kv_heads, max_len, head_dim), allocated once; each forward writes its new entries in
place at their positions and attention reads views of the filled prefix (no copies, no concatenation,
no allocation per decode step). Rows are independent: a row is addressed by the positions its tokens
are written at, so rows of different lengths share one cache, and a row can be reused for a new
sequence by writing from position 0 (causal masking hides whatever a previous sequence left behind).
"""

from __future__ import annotations

import torch

from scratchlm.config import ModelConfig


class KVCache:
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
        self.max_len = max_len
        self.batch_size = batch_size
        # The uniform length of all rows when the caller lets the model choose positions
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
    def nbytes(self) -> int:
        return self.keys.numel() * self.keys.element_size() * 2

    def reset(self) -> None:
        self.length = 0

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

        Either `start` (all rows write positions start..start+T-1, a plain slice) or `positions`
        (B, T) per row (an index_copy per row) says where the entries go.
        """
        layer_keys, layer_values = self.keys[layer], self.values[layer]
        batch = keys.shape[0]
        if start is not None:
            end = start + keys.shape[2]
            layer_keys[:batch, :, start:end] = keys
            layer_values[:batch, :, start:end] = values
        else:
            assert positions is not None
            for row in range(batch):
                layer_keys[row].index_copy_(1, positions[row], keys[row])
                layer_values[row].index_copy_(1, positions[row], values[row])
        return layer_keys[:batch, :, :visible_len], layer_values[:batch, :, :visible_len]
