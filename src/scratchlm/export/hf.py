"""Hugging Face transformers interop: one explicit key map per architecture.

Llama math (RMSNorm with weight, SwiGLU, rotate-half RoPE, GQA, no biases) maps onto
`LlamaForCausalLM` without any weight permutation: transformers' Llama uses the same rotate-half
RoPE convention. QK-norm models map onto `Qwen3ForCausalLM` (`export.qwen3`), the GPT-2 layout onto
`GPT2LMHeadModel`; which layout is exact is decided in `export.layouts`, which also bakes an
embedding norm into the exported rows. Every other model exports in the custom layout
(`export.custom`: our modeling code and weights, loaded with `trust_remote_code=True`). The
vocabulary is exported at its padded size so the shapes match exactly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from scratchlm.chat_template import jinja_template, version_of_jinja
from scratchlm.checkpoint import (
    CONFIG_FILE,
    TOKENIZER_FILE,
    TRAINER_STATE_FILE,
    WEIGHTS_FILE,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
)
from scratchlm.config import MlpKind, ModelConfig
from scratchlm.errors import ScratchLMError
from scratchlm.export.custom import (
    MODEL_TYPE,
    REMOTE_CODE_FILES,
    config_from_custom,
    custom_config,
    custom_state_dict,
    custom_to_ours,
    remote_code_files,
)
from scratchlm.export.dtypes import HF_DTYPES
from scratchlm.export.hub import resolve_model_source
from scratchlm.export.layouts import (
    CUSTOM,
    GPT2_ACTIVATIONS,
    LAYOUT_CHOICES,
    LLAMA_KEY_MAP,
    export_state,
    exported_tie,
    llama_blockers,
    llama_family_hf_config,
)
from scratchlm.export.layouts import choose_layout as choose_standard_layout
from scratchlm.export.model_card import (
    DEFAULT_LICENSE,
    MODEL_CARD_FILE,
    check_license,
    model_card,
)
from scratchlm.export.qwen3 import (
    config_from_qwen3,
    qwen3_config,
    qwen3_state_dict,
    qwen3_to_ours,
)
from scratchlm.io_utils import atomic_directory, refuse_foreign_entries, write_failure
from scratchlm.model import GPT, build_model
from scratchlm.tokenizer import (
    ASSISTANT_TOKEN,
    BOS_TOKEN,
    END_OF_TURN_TOKEN,
    EOS_TOKEN,
    PAD_TOKEN,
    SPECIAL_TOKENS,
    SYSTEM_TOKEN,
    UNK_TOKEN,
    USER_TOKEN,
    Tokenizer,
)


def llama_config(config: ModelConfig) -> dict[str, Any]:
    """A transformers LlamaConfig (as keyword arguments) for a Llama-math ModelConfig."""
    blockers = llama_blockers(config)
    if blockers:
        raise ScratchLMError(
            "this model is not expressible as a Hugging Face Llama: "
            + ", ".join(blockers)
            + "; train a llama-* (or tiny/small) preset to export it"
        )
    return {**llama_family_hf_config(config, "LlamaForCausalLM", "llama"), "mlp_bias": False}


def llama_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights under Hugging Face Llama names (a tied head is left out, as transformers does)."""
    llama_config(model.config)  # refuses what Llama cannot express
    ours = export_state(model)
    converted: dict[str, torch.Tensor] = {}
    for layer in range(model.config.n_layer):
        for source, target in LLAMA_KEY_MAP.items():
            if "{i}" in source:
                converted[target.format(i=layer)] = ours[source.format(i=layer)]
    for source, target in LLAMA_KEY_MAP.items():
        if "{i}" not in source:
            converted[target] = ours[source]
    if exported_tie(model.config):
        converted.pop("lm_head.weight")
    return converted


def to_transformers_llama(model: GPT) -> Any:
    """A `transformers.LlamaForCausalLM` holding the same weights (for parity checks and benchmarks)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    values = llama_config(model.config)
    values.pop("architectures")
    values.pop("model_type")
    hf_model = LlamaForCausalLM(LlamaConfig(**values))
    missing, unexpected = hf_model.load_state_dict(llama_state_dict(model), strict=False)
    tied = exported_tie(model.config)
    allowed_missing = {"lm_head.weight"} if tied else set()
    assert not unexpected and set(missing) <= allowed_missing, (missing, unexpected)
    if tied:
        hf_model.tie_weights()
    moved: Any = hf_model
    return moved.to(model.lm_head.weight.device).eval()


# --- GPT-2 layout ----------------------------------------------------------------------------------
# Learned positions, LayerNorm with bias, GELU (exact or tanh), MHA, biases everywhere. Hugging Face's
# GPT-2 stores linear weights as Conv1D, [in, out]: the transpose of ours; Q, K and V are one c_attn.
def gpt2_config(config: ModelConfig) -> dict[str, Any]:
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.padded_vocab_size,
        "n_positions": config.context_length,
        "n_embd": config.d_model,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": config.ffn_hidden,
        "activation_function": GPT2_ACTIVATIONS[config.mlp],
        "layer_norm_epsilon": config.norm_eps,
        "initializer_range": config.init_std,
        "tie_word_embeddings": exported_tie(config),
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "bos_token_id": SPECIAL_TOKENS.index(BOS_TOKEN),
        "eos_token_id": SPECIAL_TOKENS.index(EOS_TOKEN),
        "pad_token_id": SPECIAL_TOKENS.index(PAD_TOKEN),
    }


def gpt2_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    ours = export_state(model)
    converted = {
        "transformer.wte.weight": ours["token_embedding.weight"],
        "transformer.wpe.weight": ours["position_embedding.weight"],
        "transformer.ln_f.weight": ours["final_norm.weight"],
        "transformer.ln_f.bias": ours["final_norm.bias"],
    }
    for i in range(model.config.n_layer):
        ours_prefix, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        for our_norm, their_norm in (("attention_norm", "ln_1"), ("mlp_norm", "ln_2")):
            for part in ("weight", "bias"):
                converted[f"{theirs}{their_norm}.{part}"] = ours[f"{ours_prefix}{our_norm}.{part}"]
        qkv = [ours[f"{ours_prefix}attention.{name}_proj.weight"] for name in "qkv"]
        converted[f"{theirs}attn.c_attn.weight"] = torch.cat(qkv, dim=0).t().contiguous()
        converted[f"{theirs}attn.c_attn.bias"] = torch.cat(
            [ours[f"{ours_prefix}attention.{name}_proj.bias"] for name in "qkv"]
        )
        for our_linear, their_linear in (
            ("attention.o_proj", "attn.c_proj"),
            ("mlp.up_proj", "mlp.c_fc"),
            ("mlp.down_proj", "mlp.c_proj"),
        ):
            converted[f"{theirs}{their_linear}.weight"] = (
                ours[f"{ours_prefix}{our_linear}.weight"].t().contiguous()
            )
            converted[f"{theirs}{their_linear}.bias"] = ours[f"{ours_prefix}{our_linear}.bias"]
    if not exported_tie(model.config):
        converted["lm_head.weight"] = ours["lm_head.weight"]
    return converted


def gpt2_to_ours(state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """The reverse of `gpt2_state_dict`."""
    d = config.d_model
    ours = {
        "token_embedding.weight": state["transformer.wte.weight"],
        "position_embedding.weight": state["transformer.wpe.weight"],
        "final_norm.weight": state["transformer.ln_f.weight"],
        "final_norm.bias": state["transformer.ln_f.bias"],
    }
    for i in range(config.n_layer):
        ours_prefix, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        for our_norm, their_norm in (("attention_norm", "ln_1"), ("mlp_norm", "ln_2")):
            for part in ("weight", "bias"):
                ours[f"{ours_prefix}{our_norm}.{part}"] = state[f"{theirs}{their_norm}.{part}"]
        qkv_weight = state[f"{theirs}attn.c_attn.weight"].t()
        qkv_bias = state[f"{theirs}attn.c_attn.bias"]
        for index, name in enumerate("qkv"):
            ours[f"{ours_prefix}attention.{name}_proj.weight"] = qkv_weight[
                index * d : (index + 1) * d
            ].contiguous()
            ours[f"{ours_prefix}attention.{name}_proj.bias"] = qkv_bias[index * d : (index + 1) * d]
        for our_linear, their_linear in (
            ("attention.o_proj", "attn.c_proj"),
            ("mlp.up_proj", "mlp.c_fc"),
            ("mlp.down_proj", "mlp.c_proj"),
        ):
            ours[f"{ours_prefix}{our_linear}.weight"] = (
                state[f"{theirs}{their_linear}.weight"].t().contiguous()
            )
            ours[f"{ours_prefix}{our_linear}.bias"] = state[f"{theirs}{their_linear}.bias"]
    if not config.tie_embeddings:
        ours["lm_head.weight"] = state["lm_head.weight"]
    return ours


def llama_to_ours(state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """The reverse of `llama_state_dict`."""
    ours: dict[str, torch.Tensor] = {}
    for source, target in LLAMA_KEY_MAP.items():
        layers = range(config.n_layer) if "{i}" in source else [0]
        for layer in layers:
            name = target.format(i=layer)
            if name in state:
                ours[source.format(i=layer)] = state[name]
    if config.tie_embeddings:
        ours.pop("lm_head.weight", None)
    return ours


# --- directories -------------------------------------------------------------------------------------


def choose_layout(config: ModelConfig, requested: str = "auto") -> str:
    """'llama', 'qwen3' or 'gpt2' (the first exact one, or `requested` when it is exact), else
    'custom' (exact for every config); a forced standard layout that is not exact is refused."""
    return choose_standard_layout(config, "hf", requested)


# config.json and weights of each layout
HF_LAYOUTS: dict[
    str, tuple[Callable[[ModelConfig], dict[str, Any]], Callable[[GPT], dict[str, torch.Tensor]]]
] = {
    "llama": (llama_config, llama_state_dict),
    "qwen3": (qwen3_config, qwen3_state_dict),
    "gpt2": (gpt2_config, gpt2_state_dict),
    CUSTOM: (custom_config, custom_state_dict),
}


def tokenizer_config(tokenizer: Tokenizer, context_length: int) -> dict[str, Any]:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "pad_token": PAD_TOKEN,
        "unk_token": UNK_TOKEN,
        "additional_special_tokens": [SYSTEM_TOKEN, USER_TOKEN, ASSISTANT_TOKEN, END_OF_TURN_TOKEN],
        "chat_template": jinja_template(tokenizer),
        "model_max_length": context_length,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
    }


# What `export hf` writes; `--force` replaces a directory that holds nothing else.
HF_EXPORT_FILES = frozenset(
    {
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "model.safetensors",
        "model.safetensors.index.json",
        MODEL_CARD_FILE,
        *REMOTE_CODE_FILES,
    }
)
HF_SHARD_PATTERN = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")
# What `import hf` writes (a checkpoint directory; training may add its resume state later).
CHECKPOINT_FILES = frozenset({CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE, TRAINER_STATE_FILE})


def is_hf_export_file(name: str) -> bool:
    return name in HF_EXPORT_FILES or HF_SHARD_PATTERN.match(name) is not None


def write_safetensors_shards(
    directory: Path, state: dict[str, torch.Tensor], max_shard_bytes: int
) -> None:
    """One model.safetensors, or model-0000K-of-0000N.safetensors + an index past the size limit."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor.contiguous()
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], str(directory / "model.safetensors"), metadata={"format": "pt"})
        return
    weight_map = {}
    for index, shard in enumerate(shards, start=1):
        file_name = f"model-{index:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(directory / file_name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, file_name))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index_json = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index_json, indent=2))


# --dtype of `export hf` -> (torch dtype of the stored weights, config.json's dtype name)
HF_TORCH_DTYPES: dict[str, tuple[torch.dtype, str]] = {
    "fp32": (torch.float32, "float32"),
    "bf16": (torch.bfloat16, "bfloat16"),
    "fp16": (torch.float16, "float16"),
}


def export_hf(
    checkpoint: str,
    out: str | Path,
    *,
    force: bool = False,
    max_shard_bytes: int = 2 * 2**30,
    verify: bool = True,
    layout: str = "auto",
    dtype: str = "fp32",
    license: str = DEFAULT_LICENSE,
    hub_id: str | None = None,
) -> Path:
    """Write a Hugging Face model directory (weights, config, generation config, tokenizer, model
    card) in `layout` (one of LAYOUT_CHOICES; auto = the first exact standard one, else custom,
    which adds its configuration and modeling files), weights stored in `dtype` (one of
    HF_DTYPES). The card's metadata carries `license`; its usage snippet loads `hub_id` (the Hub
    repository it will be pushed to) or else the output folder."""
    if layout not in LAYOUT_CHOICES:
        raise ScratchLMError(
            f"unknown layout {layout!r}; choose one of {', '.join(LAYOUT_CHOICES)}"
        )
    if dtype not in HF_TORCH_DTYPES:
        raise ScratchLMError(
            f"unknown Hugging Face export dtype {dtype!r}; choose one of {', '.join(HF_DTYPES)}"
        )
    torch_dtype, dtype_name = HF_TORCH_DTYPES[dtype]
    check_license(license)
    loaded = load_checkpoint(checkpoint, verify=verify)
    config, tokenizer = loaded.config, loaded.tokenizer
    layout = choose_layout(config, layout)
    target = Path(out)
    if target.exists() and not force:
        raise ScratchLMError(
            f"{target} already exists; pass --force to replace it or choose another --out"
        )
    refuse_foreign_entries(target, is_hf_export_file, "a Hugging Face export")
    config_of, state_of = HF_LAYOUTS[layout]
    hf_config, state = config_of(config), state_of(loaded.model)
    # transformers < 4.56 reads `torch_dtype`, newer versions `dtype`: both say the stored type.
    hf_config["torch_dtype"] = dtype_name
    hf_config["dtype"] = dtype_name
    end_id = SPECIAL_TOKENS.index(END_OF_TURN_TOKEN)
    generation = {
        "bos_token_id": hf_config["bos_token_id"],
        "eos_token_id": [hf_config["eos_token_id"], end_id],
        "pad_token_id": hf_config["pad_token_id"],
    }
    special_map = {
        k: v
        for k, v in tokenizer_config(tokenizer, config.context_length).items()
        if k.endswith("_token") or k == "additional_special_tokens"
    }
    try:
        with atomic_directory(target, replace=force) as directory:
            write_safetensors_shards(
                directory,
                {
                    name: tensor.detach().cpu().to(torch_dtype)
                    if tensor.is_floating_point()
                    else tensor.detach().cpu()
                    for name, tensor in state.items()
                },
                max_shard_bytes,
            )
            (directory / "config.json").write_text(json.dumps(hf_config, indent=2))
            (directory / "generation_config.json").write_text(json.dumps(generation, indent=2))
            (directory / "tokenizer.json").write_text(tokenizer.to_json())
            (directory / "tokenizer_config.json").write_text(
                json.dumps(tokenizer_config(tokenizer, config.context_length), indent=2)
            )
            (directory / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2))
            card = model_card(
                loaded,
                hf_config=hf_config,
                layout=layout,
                custom=layout == CUSTOM,
                license=license,
                model_id=hub_id if hub_id is not None else str(target),
            )
            (directory / MODEL_CARD_FILE).write_text(card, encoding="utf-8")
            if layout == CUSTOM:
                for name, text in remote_code_files().items():
                    (directory / name).write_text(text, encoding="utf-8")
    except (OSError, SafetensorError) as error:
        raise write_failure(target, error) from None
    return target


def read_hf_state(directory: Path) -> dict[str, torch.Tensor]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json_object(index).get("weight_map")
        if not isinstance(weight_map, dict) or not all(
            isinstance(name, str) and "/" not in name and name != ".."
            for name in weight_map.values()
        ):
            raise ScratchLMError(
                f"{index} has no valid 'weight_map' (tensor name -> file in this directory); "
                "pass a complete Hugging Face model directory"
            )
        files = sorted(set(weight_map.values()))
    elif (directory / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise ScratchLMError(
            f"{directory} has no model.safetensors (or index); pass a Hugging Face model directory"
        )
    state: dict[str, torch.Tensor] = {}
    for file_name in files:
        try:
            state.update(load_file(str(directory / file_name)))
        except (OSError, SafetensorError) as error:
            raise ScratchLMError(
                f"cannot read {directory / file_name} ({error}); the file is missing, damaged "
                "or not safetensors: download the model again"
            ) from None
    return state


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from a file we did not write, or one line saying why it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ScratchLMError(
            f"cannot read {path} as JSON ({error}); pass a complete Hugging Face model directory"
        ) from None
    if not isinstance(data, dict):
        raise ScratchLMError(f"{path} is not a JSON object; pass a Hugging Face model directory")
    return data


def load_or_adopt_tokenizer(directory: Path) -> tuple[Tokenizer, list[int] | None]:
    """The model's tokenizer; a foreign one (without scratchlm's special tokens at ids 0-7) is
    adopted: our special tokens take ids 0-7 and the foreign vocabulary follows in its own order
    (a foreign token spelled like one of ours, e.g. GPT-2's <|endoftext|>, becomes ours). Returns
    the tokenizer and, for an adopted one, the old id of every new id (-1 for a new token)."""
    path = directory / "tokenizer.json"
    if not path.is_file():
        raise ScratchLMError(
            f"{directory} has no tokenizer.json; scratchlm imports fast (tokenizers) vocabularies"
        )
    data = read_json_object(path)
    ours = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    vocab = data.get("model", {}).get("vocab")
    if isinstance(vocab, dict) and all(vocab.get(token) == index for token, index in ours.items()):
        return Tokenizer.from_json(path.read_text(encoding="utf-8")), None
    if data.get("model", {}).get("type") != "BPE" or not isinstance(vocab, dict):
        raise ScratchLMError(
            f"{path}: only BPE tokenizers can be imported (this one is {data.get('model', {}).get('type')})"
        )
    old_ids = dict(vocab)
    for added in data.get("added_tokens", []):
        old_ids.setdefault(added["content"], added["id"])
    new_vocab = dict(ours)
    old_id_for_new = [old_ids.get(token, -1) for token in SPECIAL_TOKENS]
    for token, old_id in sorted(old_ids.items(), key=lambda item: item[1]):
        if token not in new_vocab:
            new_vocab[token] = len(new_vocab)
            old_id_for_new.append(old_id)
    foreign_added = [
        added for added in data.get("added_tokens", []) if added["content"] not in ours
    ]
    data["model"]["vocab"] = {
        token: index for token, index in new_vocab.items() if token in vocab or token in ours
    }
    data["added_tokens"] = [
        {
            "id": index,
            "content": token,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for token, index in ours.items()
    ] + [{**added, "id": new_vocab[added["content"]]} for added in foreign_added]
    data["post_processor"] = None  # scratchlm adds no bos/eos itself
    return Tokenizer.from_json(json.dumps(data)), old_id_for_new


def reindex_vocabulary_rows(
    state: dict[str, torch.Tensor], old_id_for_new: list[int], config: ModelConfig
) -> dict[str, torch.Tensor]:
    """Move embedding (and untied head) rows to the adopted tokenizer's ids; new tokens start at the
    mean embedding (a neutral guess that fine-tuning then refines); padding rows are zero."""
    assert config.padded_vocab_size is not None
    old_ids = torch.tensor(old_id_for_new)
    known = old_ids >= 0
    for name in ("token_embedding.weight", "lm_head.weight"):
        if name not in state:
            continue
        old = state[name]
        rows = torch.zeros(config.padded_vocab_size, old.shape[1], dtype=old.dtype)
        rows[: len(old_id_for_new)][known] = old[old_ids[known]]
        rows[: len(old_id_for_new)][~known] = old[old_ids[known]].mean(dim=0)
        state[name] = rows
    return state


def config_from_hf(
    hf: dict[str, Any], vocab: int
) -> tuple[ModelConfig, Callable[[dict[str, torch.Tensor], ModelConfig], dict[str, torch.Tensor]]]:
    """Our ModelConfig for a Hugging Face llama, qwen3 or gpt2 config.json (or our own custom
    layout's), and its weight converter; a missing key raises KeyError (the caller names the
    file)."""
    model_type = hf.get("model_type")
    if model_type == "llama":
        config = ModelConfig(
            name="imported-llama",
            vocab_size=vocab,
            n_layer=hf["num_hidden_layers"],
            d_model=hf["hidden_size"],
            n_head=hf["num_attention_heads"],
            n_kv_head=hf.get("num_key_value_heads", hf["num_attention_heads"]),
            head_dim=hf.get("head_dim"),
            ffn_hidden=hf["intermediate_size"],
            context_length=hf["max_position_embeddings"],
            position="rope",
            rope_theta=float(
                hf.get("rope_theta", (hf.get("rope_parameters") or {}).get("rope_theta", 10000.0))
            ),
            norm="rmsnorm",
            norm_eps=hf["rms_norm_eps"],
            mlp="swiglu",
            bias=False,
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            init_std=hf.get("initializer_range", 0.02),
        )
        convert = llama_to_ours
    elif model_type == "qwen3":
        config, convert = config_from_qwen3(hf, vocab), qwen3_to_ours
    elif model_type == MODEL_TYPE:
        config, convert = config_from_custom(hf, vocab), custom_to_ours
    elif model_type == "gpt2":
        activations = {value: key for key, value in GPT2_ACTIVATIONS.items()}
        if hf.get("activation_function") not in activations:
            raise ScratchLMError(
                f"GPT-2 activation {hf.get('activation_function')!r} is not supported; gelu or gelu_new"
            )
        config = ModelConfig(
            name="imported-gpt2",
            vocab_size=vocab,
            n_layer=hf["n_layer"],
            d_model=hf["n_embd"],
            n_head=hf["n_head"],
            ffn_hidden=hf.get("n_inner") or 4 * hf["n_embd"],
            context_length=hf["n_positions"],
            position="learned",
            norm="layernorm",
            norm_eps=hf["layer_norm_epsilon"],
            mlp=cast(MlpKind, activations[hf["activation_function"]]),
            bias=True,
            tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
            init_std=hf.get("initializer_range", 0.02),
        )
        convert = gpt2_to_ours
    else:
        raise ScratchLMError(
            f"model_type {model_type!r} is not supported; scratchlm imports llama, qwen3, gpt2 and "
            "its own custom layout"
        )
    return config, convert


def import_hf(
    model_dir: str | Path, out: str | Path, *, force: bool = False, revision: str | None = None
) -> Path:
    """Read a Hugging Face Llama, Qwen3, GPT-2 or custom-layout model into a scratchlm checkpoint:
    a local directory, or a Hub id ORG/NAME (no such local path), downloaded at `revision` through
    the HF cache (`export.hub`)."""
    directory, origin = resolve_model_source(model_dir, revision)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ScratchLMError(f"{directory} has no config.json; pass a Hugging Face model directory")
    hf = read_json_object(config_path)
    tokenizer, old_id_for_new = load_or_adopt_tokenizer(directory)
    # A chat model we exported carries its template version in the Jinja text: a v1 model comes
    # back as v1 (unrecognised or absent templates: the current version).
    tokenizer_config = directory / "tokenizer_config.json"
    if tokenizer_config.is_file():
        template = read_json_object(tokenizer_config).get("chat_template")
        tokenizer.chat_template_version = version_of_jinja(template)
    vocab = tokenizer.vocab_size
    try:
        config, convert = config_from_hf(hf, vocab)
    except KeyError as error:
        raise ScratchLMError(
            f"{config_path} has no {error.args[0]!r}, which a {hf.get('model_type')} config needs; "
            "pass a complete Hugging Face model directory"
        ) from None
    except (TypeError, ValueError) as error:  # ScratchLMError included: add the file's name
        raise ScratchLMError(f"{config_path}: {error}") from None
    # The custom layout keeps vocab_size as the tokenizer's size and names the rows apart.
    rows = (
        hf.get("padded_vocab_size") if hf.get("model_type") == MODEL_TYPE else hf.get("vocab_size")
    )
    if old_id_for_new is None and config.padded_vocab_size != rows:
        raise ScratchLMError(
            f"{directory}: the embedding has {rows} rows but the tokenizer's {vocab} tokens pad "
            f"to {config.padded_vocab_size}; export the model again or check its tokenizer.json"
        )
    target = Path(out)
    if target.exists() and not force:
        raise ScratchLMError(
            f"{target} already exists; pass --force to replace it or choose another --out"
        )
    refuse_foreign_entries(target, CHECKPOINT_FILES.__contains__, "a checkpoint directory")
    model = build_model(config, initialize=False)
    state = convert(read_hf_state(directory), config)
    if old_id_for_new is not None:
        state = reindex_vocabulary_rows(state, old_id_for_new, config)
    load_model_state(model, state, source=directory)
    try:
        return save_checkpoint(
            target, model, tokenizer, training={"imported_from": origin}, replace=force
        )
    except (OSError, SafetensorError) as error:
        raise write_failure(target, error) from None
