"""Fixtures of the fine-tuning tests: a tiny base checkpoint with the BPE tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scratchlm.checkpoint import save_checkpoint
from scratchlm.model import build_model
from scratchlm.tokenizer import Tokenizer
from tests.conftest import tiny_config


@pytest.fixture
def base(tmp_path: Path, bpe_tokenizer: Tokenizer) -> Path:
    torch.manual_seed(0)
    model = build_model(
        tiny_config(
            "tiny",
            vocab_size=bpe_tokenizer.vocab_size,
            context_length=64,
            d_model=64,
            ffn_hidden=128,
        )
    )
    return save_checkpoint(tmp_path / "base", model, bpe_tokenizer)
