"""`scratchlm merge-lora`: base checkpoint + adapters -> one plain checkpoint."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file

from scratchlm.checkpoint import (
    chat_template_version,
    load_checkpoint,
    read_metadata,
    resolve_checkpoint,
    save_checkpoint,
    verify_checksums,
)
from scratchlm.errors import ScratchLMError
from scratchlm.finetune.lora import LoRASettings, apply_lora, load_adapter_state, merge_lora
from scratchlm.finetune.trainer import ADAPTER_FILE


def merge_lora_checkpoint(
    checkpoint: str, out: str, *, base: str | None = None, force: bool = False
) -> Path:
    lora_dir = resolve_checkpoint(checkpoint)
    metadata = read_metadata(lora_dir)
    finetune = metadata.get("finetune") or {}
    lora = finetune.get("lora")
    if not lora or not (lora_dir / ADAPTER_FILE).is_file():
        raise ScratchLMError(
            f"{lora_dir} is not a LoRA checkpoint (no {ADAPTER_FILE}); it is already a plain checkpoint"
        )
    base_path = base or finetune.get("base")
    if not base_path:
        raise ScratchLMError(f"{lora_dir} does not record its base checkpoint; pass it with --base")
    target = Path(out)
    if target.exists() and not force:
        raise ScratchLMError(
            f"{target} already exists; pass --force to replace it or choose another --out"
        )
    loaded = load_checkpoint(base_path)
    settings = LoRASettings(
        rank=lora["rank"],
        alpha=lora["alpha"],
        dropout=lora["dropout"],
        targets=tuple(lora["targets"]),
    )
    apply_lora(loaded.model, settings)
    # The adapters are weights too: checked against the checksum the LoRA run recorded.
    verify_checksums(lora_dir, metadata, (ADAPTER_FILE,))
    load_adapter_state(loaded.model, load_file(str(lora_dir / ADAPTER_FILE)))
    model = merge_lora(loaded.model)
    # The adapters were trained with the LoRA run's chat template, which the merged model keeps.
    loaded.tokenizer.chat_template_version = chat_template_version(lora_dir, metadata)
    training = {
        **metadata.get("training", {}),
        "merged_from": {"base": str(base_path), "adapter": str(lora_dir)},
    }
    return save_checkpoint(target, model, loaded.tokenizer, training=training, replace=force)
