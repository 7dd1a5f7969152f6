"""The custom Hugging Face layout: our own modeling code beside our own weights.

Any `ModelConfig` exports this way, exactly: `config.json` holds every ModelConfig field (plus
`auto_map`, which points transformers at the two files copied from `export/remote_code/`), and
`model.safetensors` holds our state dict under our own tensor names (a tied head is left out;
transformers ties it back). Loaded with `AutoModelForCausalLM.from_pretrained(path,
trust_remote_code=True)`. `export.layouts.choose_layout` picks it for `export hf` when no standard
layout is exact, or when `--layout custom` asks for it. `import hf` reads such an export back,
bit for bit (`config_from_custom`, `custom_to_ours`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from scratchlm.config import ModelConfig
from scratchlm.model import GPT
from scratchlm.tokenizer import BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, SPECIAL_TOKENS

REMOTE_CODE_DIRECTORY = Path(__file__).resolve().parent / "remote_code"
CONFIGURATION_FILE = "configuration_scratchlm.py"
MODELING_FILE = "modeling_scratchlm.py"
REMOTE_CODE_FILES: tuple[str, ...] = (CONFIGURATION_FILE, MODELING_FILE)
MODEL_TYPE = "scratchlm"
ARCHITECTURE = "ScratchLMForCausalLM"


def custom_config(config: ModelConfig) -> dict[str, Any]:
    """config.json of the custom layout: every ModelConfig field under its own name."""
    return {
        "architectures": [ARCHITECTURE],
        "model_type": MODEL_TYPE,
        "auto_map": {
            "AutoConfig": f"{Path(CONFIGURATION_FILE).stem}.ScratchLMConfig",
            "AutoModelForCausalLM": f"{Path(MODELING_FILE).stem}.{ARCHITECTURE}",
        },
        **config.to_dict(),
        "tie_word_embeddings": config.tie_embeddings,
        "bos_token_id": SPECIAL_TOKENS.index(BOS_TOKEN),
        "eos_token_id": SPECIAL_TOKENS.index(EOS_TOKEN),
        "pad_token_id": SPECIAL_TOKENS.index(PAD_TOKEN),
    }


@torch.no_grad()
def custom_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights as they are (the modeling code computes the embedding norm itself, so nothing
    is baked); a tied head is left out, as transformers saves it."""
    state = {name: tensor.detach() for name, tensor in model.state_dict().items()}
    if model.config.tie_embeddings:
        state.pop("lm_head.weight")
    return state


def remote_code_files() -> dict[str, str]:
    """File name -> text of the configuration and modeling files an export carries."""
    return {
        name: (REMOTE_CODE_DIRECTORY / name).read_text(encoding="utf-8")
        for name in REMOTE_CODE_FILES
    }


def config_from_custom(hf: dict[str, Any], vocab: int) -> ModelConfig:
    """The ModelConfig of a custom-layout config.json (its ModelConfig fields; transformers' own
    keys such as auto_map are ignored), with the tokenizer's vocabulary size."""
    fields = {item.name for item in dataclasses.fields(ModelConfig)} - {"padded_vocab_size"}
    return ModelConfig.from_dict(
        {**{k: v for k, v in hf.items() if k in fields}, "vocab_size": vocab}
    )


def custom_to_ours(state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """The reverse of `custom_state_dict`: the names are already ours."""
    return dict(state)
