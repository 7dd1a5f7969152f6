"""Fixtures for the data pipeline tests: tiny tokenizers trained in-process and the cache folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scratchlm.tokenizer import Tokenizer, train_bpe, train_char
from tests.data.helpers import ALPHABET, stories_text


@pytest.fixture
def cache_dir() -> Path:
    # tests/conftest.py points $SCRATCHLM_CACHE at a fresh temporary folder for every test.
    return Path(os.environ["SCRATCHLM_CACHE"])


@pytest.fixture(scope="session")
def alphabet_tokenizer() -> Tokenizer:
    """A character tokenizer knowing every character the data tests use."""
    return train_char([ALPHABET])


@pytest.fixture(scope="session")
def small_bpe_tokenizer() -> Tokenizer:
    return train_bpe([stories_text() * 3, ALPHABET], 300)
