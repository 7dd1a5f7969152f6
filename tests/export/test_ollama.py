"""Ollama export: the Modelfile, its Go template rendering our chat format, and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from scratchlm.chat_template import Message, render_text
from scratchlm.checkpoint import save_checkpoint
from scratchlm.errors import ScratchLMError
from scratchlm.export.ollama import (
    OLLAMA_TEMPLATE,
    export_ollama,
)
from scratchlm.model import build_model
from scratchlm.tokenizer import Tokenizer
from tests.conftest import tiny_config
from tests.test_chat_template_runtimes import render_go_template

pytest.importorskip("gguf")


def make_checkpoint(directory: Path, tokenizer: Tokenizer, preset: str = "llama-15m") -> Path:
    config = tiny_config(preset, vocab_size=tokenizer.vocab_size)
    return save_checkpoint(directory, build_model(config), tokenizer)


def test_template_renders_our_chat_format() -> None:
    conversations: list[list[Message]] = [
        [{"role": "user", "content": "Hi there"}],
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "你好 😀\n<|end|> typed"},
        ],
        [  # a trailing assistant message: no generation prompt, as transformers renders it
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
        ],
    ]
    for messages in conversations:
        prompt = messages[-1]["role"] != "assistant"
        expected = render_text(messages, add_generation_prompt=prompt)
        assert render_go_template(OLLAMA_TEMPLATE, messages) == expected


def test_export_writes_gguf_modelfile_and_readme(tmp_path: Path, bpe_tokenizer: Tokenizer) -> None:
    checkpoint = make_checkpoint(tmp_path / "ckpt", bpe_tokenizer)
    out = tmp_path / "ollama"
    modelfile = export_ollama(checkpoint, out, system="You are a storyteller.")
    assert modelfile == out / "Modelfile"
    assert (out / "model.gguf").read_bytes()[:4] == b"GGUF"
    text = modelfile.read_text()
    assert text.startswith("FROM ./model.gguf\n")
    assert f'TEMPLATE """{OLLAMA_TEMPLATE}"""' in text
    for line in (
        "PARAMETER temperature 0.7",
        "PARAMETER top_p 0.9",
        "PARAMETER top_k 40",
        "PARAMETER num_ctx 32",
        'PARAMETER stop "<|end|>"',
        'PARAMETER stop "<|endoftext|>"',
        'PARAMETER stop "<|user|>"',
        'SYSTEM """You are a storyteller."""',
    ):
        assert line in text.splitlines(), line
    readme = (out / "README.md").read_text()
    assert "ollama create" in readme and "-f Modelfile" in readme


def test_no_system_line_without_system(tmp_path: Path, bpe_tokenizer: Tokenizer) -> None:
    checkpoint = make_checkpoint(tmp_path / "ckpt", bpe_tokenizer)
    modelfile = export_ollama(checkpoint, tmp_path / "ollama", dtype="f16")
    assert "SYSTEM" not in modelfile.read_text()


def test_refusals(tmp_path: Path, bpe_tokenizer: Tokenizer) -> None:
    checkpoint = make_checkpoint(tmp_path / "ckpt", bpe_tokenizer)
    out = tmp_path / "ollama"
    out.mkdir()
    (out / "Modelfile").write_text("mine")
    with pytest.raises(ScratchLMError, match="--force"):
        export_ollama(checkpoint, out)
    assert (out / "Modelfile").read_text() == "mine"
    with pytest.raises(ScratchLMError, match="not written by"):  # not ours: --force refuses too
        export_ollama(checkpoint, out, force=True)
    assert (out / "Modelfile").read_text() == "mine"
    (out / "Modelfile").unlink()
    export_ollama(checkpoint, out)
    export_ollama(checkpoint, out, force=True)
    assert (out / "Modelfile").read_text().startswith("FROM")

    leaky = make_checkpoint(tmp_path / "leaky", bpe_tokenizer, preset="antimatter-300m")
    with pytest.raises(ScratchLMError, match="leaky_relu"):
        export_ollama(leaky, tmp_path / "leaky-out")
    assert not (tmp_path / "leaky-out" / "model.gguf").exists()
    with pytest.raises(ScratchLMError, match='"""'):
        export_ollama(checkpoint, tmp_path / "other", system='say """hi"""')
