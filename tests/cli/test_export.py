"""`scratchlm export hf|gguf|ollama` and `import hf`: the flags over the export functions."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from scratchlm.checkpoint import save_checkpoint
from scratchlm.cli import export
from scratchlm.errors import ScratchLMError
from scratchlm.model import build_model
from scratchlm.tokenizer import Tokenizer
from tests.conftest import tiny_config


def make_checkpoint(directory: Path, tokenizer: Tokenizer) -> Path:
    config = tiny_config("llama-15m", vocab_size=tokenizer.vocab_size)
    return save_checkpoint(directory, build_model(config), tokenizer)


def parser_for(add: object) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add(parser)  # type: ignore[operator]
    return parser


def test_gguf_dtypes_match_the_exporter() -> None:
    from scratchlm.export.gguf import GGUF_DTYPES

    assert export.GGUF_DTYPES == GGUF_DTYPES


def test_export_gguf(tmp_path: Path, bpe_tokenizer: Tokenizer) -> None:
    pytest.importorskip("gguf")
    checkpoint = make_checkpoint(tmp_path / "ckpt", bpe_tokenizer)
    out = tmp_path / "model.gguf"
    args = parser_for(export.add_export_gguf).parse_args(
        ["-m", str(checkpoint), "--out", str(out), "--dtype", "f16"]
    )
    export.command_export_gguf(args)
    assert out.read_bytes()[:4] == b"GGUF"
    with pytest.raises(ScratchLMError, match="--force"):
        export.command_export_gguf(args)


@pytest.mark.parametrize("flag", ["--system-prompt", "--system"])
def test_export_ollama(flag: str, tmp_path: Path, bpe_tokenizer: Tokenizer) -> None:
    pytest.importorskip("gguf")
    checkpoint = make_checkpoint(tmp_path / "ckpt", bpe_tokenizer)
    out = tmp_path / "ollama"
    args = parser_for(export.add_export_ollama).parse_args(
        ["--checkpoint", str(checkpoint), "--out", str(out), flag, "Hi"]
    )
    assert args.dtype == "q8_0"
    export.command_export_ollama(args)
    assert 'SYSTEM """Hi"""' in (out / "Modelfile").read_text()


@pytest.mark.parametrize("flag", ["--checkpoint", "-m", "--model"])
def test_import_hf_takes_checkpoint_and_its_old_name(flag: str) -> None:
    args = parser_for(export.add_import_hf).parse_args([flag, "hf-dir", "--out", "x"])
    assert args.checkpoint == "hf-dir"


def test_import_hf_needs_a_model() -> None:
    args = parser_for(export.add_import_hf).parse_args(["--out", "x"])
    with pytest.raises(ScratchLMError, match="--checkpoint"):
        export.command_import_hf(args)
