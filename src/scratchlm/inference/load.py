"""Load a checkpoint for inference: the model on the chosen device, in the dtype that decodes
fastest there, optionally with q8/q4/bf16 weights for the CPU decode kernels (packed once, then
read from a file beside the checkpoint; see scratchlm.inference.quantize). Every front end (generate, chat, serve, eval,
bench, the Python API) loads through here."""

from __future__ import annotations

import torch

from scratchlm.checkpoint import Checkpoint, load_checkpoint
from scratchlm.device import inference_dtype, select_device
from scratchlm.errors import ScratchLMError
from scratchlm.inference.quantize import check_quantization, quantize_for_cpu
from scratchlm.kv_cache import KV_CACHE_TYPES, set_cache_dtype


def load_for_inference(
    checkpoint: str,
    device_name: str = "auto",
    quantize: str = "none",
    *,
    verify: bool = True,
    kv_cache: str = "fp32",
) -> tuple[Checkpoint, torch.device]:
    """The checkpoint's model on the chosen device, ready to decode. `verify=False`
    (`--skip-checksums`) skips only the checksums; the config and the weights' shapes are always
    checked before anything is allocated. `kv_cache="fp16"`: its KV caches hold fp16 (CPU)."""
    check_quantization(quantize)  # before the (possibly long) load
    if kv_cache not in KV_CACHE_TYPES:
        raise ScratchLMError(
            f"unknown --kv-cache {kv_cache!r}; use one of {', '.join(KV_CACHE_TYPES)}"
        )
    device = select_device(device_name)
    loaded = load_checkpoint(checkpoint, device, dtype=inference_dtype(device), verify=verify)
    loaded.model = quantize_for_cpu(
        loaded.model, quantize, checkpoint_dir=loaded.path, inplace=True
    )
    if kv_cache != "fp32":
        set_cache_dtype(loaded.model, kv_cache)
    return loaded, device
