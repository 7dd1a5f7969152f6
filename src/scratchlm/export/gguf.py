"""GGUF export (llama.cpp, Ollama, LM Studio): one self-contained file with weights and tokenizer.

Llama math is exported as llama.cpp's `llama` architecture, Llama math with QK-norm as its `qwen3`
architecture, and the GPT-2 layout (learned positions, biased LayerNorm and linears, tanh GELU,
multi-head attention) as its `gpt2` architecture; other configs are refused with the options that
block each and the routes that work (`export.layouts`). Exact GELU (`mlp="gelu"`) is refused:
llama.cpp's gpt2 graph uses the tanh approximation. No other llama.cpp architecture runs our other
MLPs exactly: its feed-forward builder (`build_ffn`) knows SiLU, tanh GELU, ReLU and ReLU² (plain
or gated), so Leaky ReLU and exact GELU have no home. Three details make the file reproduce our
model exactly:

- llama.cpp's `llama` architecture applies RoPE to interleaved pairs (x0, x1), (x2, x3), ...
  while we rotate halves (x_i, x_{i + head_dim/2}). The query and key projection rows are
  therefore permuted per head on export, the same permutation llama.cpp's convert_hf_to_gguf.py
  applies to Hugging Face Llama weights.
- llama.cpp's `gpt2` architecture takes one fused `attn_qkv` projection: our Q, K and V rows are
  concatenated in that order (torch [out, in] layout, as GGUF stores every linear).
- The tokenizer is stored as a `gpt2` byte-level BPE with the `gpt-2` pre-tokenizer, which is our
  tokenizer's regex; the token list is padded with unused tokens to the embedding's row count,
  because llama.cpp requires one token per embedding row.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scratchlm.chat_template import jinja_template, llama_cpp_warning
from scratchlm.config import ModelConfig
from scratchlm.errors import ScratchLMError
from scratchlm.export.dtypes import BLOCK_QUANTS, GGUF_DTYPES, KQUANT_DTYPES
from scratchlm.export.layouts import (
    LAYOUT_CHOICES,
    LLAMA_GGUF_KEY_MAP,
    choose_layout,
    export_state,
    exported_tie,
)
from scratchlm.export.qwen3 import qwen3_gguf_tensors
from scratchlm.io_utils import fsync_directory, write_failure
from scratchlm.model import GPT
from scratchlm.tokenizer import (
    BOS_TOKEN,
    END_OF_TURN_TOKEN,
    EOS_TOKEN,
    PAD_TOKEN,
    SPECIAL_TOKENS,
    UNK_TOKEN,
    Tokenizer,
)

ARCHITECTURE = "llama"
QWEN3_ARCHITECTURE = "qwen3"
GPT2_ARCHITECTURE = "gpt2"
logger = logging.getLogger(__name__)

# ours -> GGUF for the GPT-2 layout (llama.cpp's `gpt2` architecture); Q, K and V are fused apart.
GPT2_GGUF_KEY_MAP: dict[str, str] = {
    "token_embedding.weight": "token_embd.weight",
    "position_embedding.weight": "position_embd.weight",
    "blocks.{i}.attention_norm.weight": "blk.{i}.attn_norm.weight",
    "blocks.{i}.attention_norm.bias": "blk.{i}.attn_norm.bias",
    "blocks.{i}.attention.o_proj.weight": "blk.{i}.attn_output.weight",
    "blocks.{i}.attention.o_proj.bias": "blk.{i}.attn_output.bias",
    "blocks.{i}.mlp_norm.weight": "blk.{i}.ffn_norm.weight",
    "blocks.{i}.mlp_norm.bias": "blk.{i}.ffn_norm.bias",
    "blocks.{i}.mlp.up_proj.weight": "blk.{i}.ffn_up.weight",
    "blocks.{i}.mlp.up_proj.bias": "blk.{i}.ffn_up.bias",
    "blocks.{i}.mlp.down_proj.weight": "blk.{i}.ffn_down.weight",
    "blocks.{i}.mlp.down_proj.bias": "blk.{i}.ffn_down.bias",
    "final_norm.weight": "output_norm.weight",
    "final_norm.bias": "output_norm.bias",
    "lm_head.weight": "output.weight",
}


def _gguf() -> Any:
    try:
        import gguf
    except ImportError:
        raise ScratchLMError(
            "GGUF export needs the `gguf` package; install it with `pip install gguf==0.19.0`"
        ) from None
    return gguf


def check_dtype(dtype: str) -> None:
    """Refuse a weight type this exporter cannot write, pointing K-quants to llama-quantize."""
    if dtype in GGUF_DTYPES:
        return
    if dtype.lower() in KQUANT_DTYPES:
        raise ScratchLMError(
            f"GGUF dtype {dtype!r} is a llama.cpp K-quant, which gguf-py cannot write: export "
            f"--dtype f16, then run `llama-quantize model-f16.gguf model-{dtype.upper()}.gguf "
            f"{dtype.upper()}` (docs/export.md); or pick one of {', '.join(GGUF_DTYPES)}"
        )
    raise ScratchLMError(f"unknown GGUF dtype {dtype!r}; choose one of {', '.join(GGUF_DTYPES)}")


def check_exportable(config: ModelConfig, layout: str = "auto") -> str:
    """The llama.cpp architecture the config exports as (`llama`, `qwen3` or `gpt2`, the first
    exact one, or `layout` when it is exact); refuses others in one line with the routes that work."""
    return choose_layout(config, "gguf", layout)


def interleave_rope_rows(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder a query/key projection's output rows from rotate-half to interleaved RoPE pairs.

    Within each head, row j of the first half and row j of the second half form rotation pair j;
    llama.cpp expects that pair at rows 2j and 2j + 1 (convert_hf_to_gguf.py `LlamaModel.permute`).
    """
    rows, columns = weight.shape
    head_dim = rows // n_heads
    return (
        weight.reshape(n_heads, 2, head_dim // 2, columns)
        .transpose(1, 2)
        .reshape(rows, columns)
        .contiguous()
    )


def gguf_tensors(model: GPT, layout: str = "auto") -> dict[str, torch.Tensor]:
    """Our weights under GGUF names, float32 (llama: RoPE rows permuted; qwen3: as they are;
    gpt2: Q, K, V fused), an embedding norm baked into token_embd; a tied head is left out
    (llama.cpp falls back to token_embd when `output.weight` is missing)."""
    config = model.config
    architecture = check_exportable(config, layout)
    assert config.n_kv_head is not None
    if architecture == QWEN3_ARCHITECTURE:
        return qwen3_gguf_tensors(model)
    state = {name: tensor.float().cpu() for name, tensor in export_state(model).items()}
    if architecture == GPT2_ARCHITECTURE:
        return _gpt2_tensors(config, state)
    converted: dict[str, torch.Tensor] = {}
    for source, target in LLAMA_GGUF_KEY_MAP.items():
        layers = range(config.n_layer) if "{i}" in source else [None]
        for layer in layers:
            source_name = source.format(i=layer) if layer is not None else source
            target_name = target.format(i=layer) if layer is not None else target
            tensor = state[source_name]
            if source.endswith("q_proj.weight"):
                tensor = interleave_rope_rows(tensor, config.n_head)
            elif source.endswith("k_proj.weight"):
                tensor = interleave_rope_rows(tensor, config.n_kv_head)
            converted[target_name] = tensor
    if exported_tie(config):
        converted.pop("output.weight")
    return converted


def _gpt2_tensors(config: ModelConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    converted: dict[str, torch.Tensor] = {}
    for source, target in GPT2_GGUF_KEY_MAP.items():
        layers = range(config.n_layer) if "{i}" in source else [None]
        for layer in layers:
            if layer is None:
                converted[target] = state[source]
                continue
            if source == "blocks.{i}.attention.o_proj.weight":  # attn_qkv goes before it
                prefix = f"blocks.{layer}.attention."
                for part in ("weight", "bias"):
                    converted[f"blk.{layer}.attn_qkv.{part}"] = torch.cat(
                        [state[f"{prefix}{name}_proj.{part}"] for name in "qkv"]
                    ).contiguous()
            converted[target.format(i=layer)] = state[source.format(i=layer)]
    if exported_tie(config):
        converted.pop("output.weight")
    return converted


def tensor_type(gguf: Any, name: str, shape: tuple[int, ...], dtype: str, head: bool) -> Any:
    """The GGMLQuantizationType of one tensor in a `dtype` file, by llama.cpp's rules.

    - 1-D tensors (norm weights, biases) stay F32, as convert_hf_to_gguf.py keeps them: tiny and
      precision-sensitive. In a block-quantized file a learned position table (`position_embd`,
      [context, d_model]) stays F32 too: llama-quantize never quantizes positional embeddings.
    - The output head (`output.weight`, or `token_embd.weight` when it doubles as the head) in a
      q4/q5 file: llama-quantize's `llama_tensor_get_type` gives it Q6_K, which gguf-py cannot
      write; it is Q8_0 here, llama.cpp's own choice when Q6_K's 256-wide blocks do not fit a row.
      An untied `token_embd.weight` takes the file's type, as in llama-quantize.
    - Block quants split each row (the last, `in`, axis of a torch [out, in] weight) into blocks
      of 32: a row that does not split falls back to F16 (llama-quantize's fallback too).
    """
    quant = gguf.GGMLQuantizationType
    if len(shape) == 1 or dtype == "f32":
        return quant.F32
    if dtype == "f16":
        return quant.F16
    if dtype == "bf16":
        return quant.BF16
    assert dtype in BLOCK_QUANTS, dtype
    if name == "position_embd.weight":
        return quant.F32
    chosen = quant.Q8_0 if head else getattr(quant, dtype.upper())
    block_size, _ = gguf.GGML_QUANT_SIZES[chosen]
    if shape[-1] % block_size != 0:
        return quant.F16
    return chosen


def _encode_tensor(gguf: Any, tensor: torch.Tensor, raw_type: Any) -> np.ndarray:
    """The bytes (or float array) GGUFWriter.add_tensor takes for `raw_type`."""
    quant = gguf.GGMLQuantizationType
    data = tensor.numpy().astype(np.float32)
    if raw_type == quant.F32:
        return data
    if raw_type == quant.F16:
        return data.astype(np.float16)
    return np.asarray(gguf.quants.quantize(data, raw_type))


def tokenizer_vocabulary(
    tokenizer: Tokenizer, padded_vocab_size: int
) -> tuple[list[str], list[int], list[str]]:
    """(tokens, token types, merges) in llama.cpp's `gpt2` tokenizer form, padded to the
    embedding's row count with UNUSED tokens."""
    gguf = _gguf()
    if tokenizer.kind != "bpe":
        raise ScratchLMError(
            f"GGUF export needs a byte-level BPE tokenizer (this checkpoint uses {tokenizer.kind!r});"
            " retrain with --tokenizer bpe"
        )
    model_json = json.loads(tokenizer.to_json())["model"]
    vocab: dict[str, int] = tokenizer.backend.get_vocab(with_added_tokens=True)
    by_id = {token_id: token for token, token_id in vocab.items()}
    if sorted(by_id) != list(range(len(by_id))):
        raise ScratchLMError("tokenizer.json has gaps in its token ids; retrain the tokenizer")
    tokens = [by_id[index] for index in range(len(by_id))]
    types = [
        int(gguf.TokenType.CONTROL if index < len(SPECIAL_TOKENS) else gguf.TokenType.NORMAL)
        for index in range(len(tokens))
    ]
    for index in range(len(tokens), padded_vocab_size):
        tokens.append(f"[PAD{index}]")
        types.append(int(gguf.TokenType.UNUSED))
    # tokenizers writes merges as "a b" strings (older) or ["a", "b"] pairs (newer).
    merges = [
        merge if isinstance(merge, str) else " ".join(merge) for merge in model_json["merges"]
    ]
    return tokens, types, merges


def write_gguf(
    model: GPT, tokenizer: Tokenizer, out: Path, *, dtype: str = "f32", layout: str = "auto"
) -> None:
    """Write the GGUF file to `out` (overwriting it; callers check first)."""
    gguf = _gguf()
    check_dtype(dtype)
    config = model.config
    architecture = check_exportable(config, layout)
    assert config.n_kv_head is not None and config.head_dim is not None
    assert config.ffn_hidden is not None and config.padded_vocab_size is not None
    tensors = gguf_tensors(model, architecture)
    tokens, types, merges = tokenizer_vocabulary(tokenizer, config.padded_vocab_size)
    file_type = (
        gguf.LlamaFileType.ALL_F32
        if dtype == "f32"
        else getattr(gguf.LlamaFileType, f"MOSTLY_{dtype.upper()}")
    )

    writer = gguf.GGUFWriter(str(out), architecture)
    writer.add_name(config.name)
    writer.add_file_type(int(file_type))
    # The version of the block-quant formats (llama.cpp refuses files with a version it does not
    # know); convert_hf_to_gguf.py writes it whatever the file type.
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(config.context_length)
    writer.add_embedding_length(config.d_model)
    writer.add_block_count(config.n_layer)
    writer.add_feed_forward_length(config.ffn_hidden)
    writer.add_head_count(config.n_head)
    if architecture == GPT2_ARCHITECTURE:
        writer.add_layer_norm_eps(config.norm_eps)
    else:
        writer.add_head_count_kv(config.n_kv_head)
        # Explicit so that a head_dim other than d_model / n_head survives.
        writer.add_key_length(config.head_dim)
        writer.add_value_length(config.head_dim)
        writer.add_rope_dimension_count(config.head_dim)
        writer.add_rope_freq_base(config.rope_theta)
        writer.add_layer_norm_rms_eps(config.norm_eps)
    writer.add_vocab_size(config.padded_vocab_size)

    writer.add_tokenizer_model("gpt2")
    # "gpt-2" selects GPT-2's pre-tokenizer regex, which is ours (others give different ids).
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(SPECIAL_TOKENS.index(BOS_TOKEN))
    writer.add_eos_token_id(SPECIAL_TOKENS.index(EOS_TOKEN))
    writer.add_pad_token_id(SPECIAL_TOKENS.index(PAD_TOKEN))
    writer.add_unk_token_id(SPECIAL_TOKENS.index(UNK_TOKEN))
    writer.add_eot_token_id(SPECIAL_TOKENS.index(END_OF_TURN_TOKEN))
    # Our training never prepends bos nor appends eos to prompts.
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_chat_template(jinja_template(tokenizer))
    template_warning = llama_cpp_warning(tokenizer)
    if template_warning is not None:
        logger.warning("%s", template_warning)

    # llama.cpp treats token_embd as the head when the file has no output.weight (tied).
    head_name = "output.weight" if "output.weight" in tensors else "token_embd.weight"
    fallbacks: list[str] = []
    for name, tensor in tensors.items():
        shape = tuple(tensor.shape)
        raw_type = tensor_type(gguf, name, shape, dtype, head=name == head_name)
        if dtype in BLOCK_QUANTS and raw_type == gguf.GGMLQuantizationType.F16:
            fallbacks.append(f"{name} {list(shape)}")
        writer.add_tensor(name, _encode_tensor(gguf, tensor, raw_type), raw_dtype=raw_type)
    if fallbacks:
        logger.warning(
            "%s: %d tensor(s) kept in f16, their rows not a multiple of the 32-weight block: %s",
            dtype,
            len(fallbacks),
            ", ".join(fallbacks),
        )

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def is_gguf_file(path: Path) -> bool:
    """True when the file starts with the GGUF magic (what `--force` may overwrite)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == b"GGUF"
    except OSError:
        return False


def export_gguf(
    checkpoint: str | os.PathLike[str],
    out: Path,
    *,
    dtype: str = "f32",
    force: bool = False,
    verify: bool = True,
    layout: str = "auto",
) -> Path:
    """Export a checkpoint to one GGUF file in `layout` (auto: the first exact llama.cpp
    architecture); refuses a config no architecture runs exactly, and an existing `out`."""
    from scratchlm.checkpoint import load_checkpoint

    out = Path(out)
    if layout not in LAYOUT_CHOICES:
        raise ScratchLMError(
            f"unknown layout {layout!r}; choose one of {', '.join(LAYOUT_CHOICES)}"
        )
    check_dtype(dtype)
    if out.is_dir():
        raise ScratchLMError(f"{out} is a directory; pass a file path such as {out / 'model.gguf'}")
    if out.exists() and not force:
        raise ScratchLMError(f"{out} already exists; pass --force to overwrite it")
    if out.exists() and not is_gguf_file(out):
        raise ScratchLMError(
            f"{out} exists and is not a GGUF file; --force overwrites only a GGUF file: remove it "
            "yourself or choose another --out"
        )
    loaded = load_checkpoint(checkpoint, verify=verify)
    layout = check_exportable(loaded.config, layout)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed: a failed export never leaves half a file at `out`.
    handle, temp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(handle)
    try:
        write_gguf(loaded.model, loaded.tokenizer, Path(temp_name), dtype=dtype, layout=layout)
        os.replace(temp_name, out)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        if isinstance(error, OSError):
            raise write_failure(out, error) from None
        raise
    fsync_directory(out.parent)
    return out
