"""Load a checkpoint for inference: the model on the chosen device, in the dtype that decodes
fastest there, optionally int8-quantized on CPU. Every front end (generate, chat, serve, eval,
bench, the Python API) loads through here."""

from __future__ import annotations

import torch

from scratchlm.checkpoint import Checkpoint, load_checkpoint
from scratchlm.device import inference_dtype, select_device
from scratchlm.inference.quantize import quantize_for_cpu


def load_for_inference(
    checkpoint: str, device_name: str = "auto", quantize: str = "none", *, verify: bool = True
) -> tuple[Checkpoint, torch.device]:
    """The checkpoint's model on the chosen device, ready to decode. `verify=False`
    (`--skip-checksums`) skips only the checksums; the config and the weights' shapes are always
    checked before anything is allocated."""
    device = select_device(device_name)
    loaded = load_checkpoint(checkpoint, device, dtype=inference_dtype(device), verify=verify)
    loaded.model = quantize_for_cpu(loaded.model, quantize)
    return loaded, device
