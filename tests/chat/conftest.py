"""Tiny chat checkpoints (random weights: the tests check mechanics, not replies) and a ChatApp
wired to in-memory streams."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from scratchlm.chat.app import ChatApp, ChatSettings
from scratchlm.chat.conversation import Conversation
from scratchlm.chat.views import PlainView
from scratchlm.checkpoint import load_checkpoint, save_checkpoint
from scratchlm.inference.session import DecodeSession
from scratchlm.inference.settings import SamplingSettings
from scratchlm.model import build_model
from scratchlm.tokenizer import Tokenizer
from tests.conftest import tiny_config


def write_checkpoint(directory: Path, tokenizer: Tokenizer, context_length: int) -> Path:
    torch.manual_seed(0)  # the same weights every run, so sampled replies repeat
    model = build_model(
        tiny_config("tiny", vocab_size=tokenizer.vocab_size, context_length=context_length)
    )
    save_checkpoint(directory, model, tokenizer)
    return directory


@pytest.fixture(scope="session")
def chat_checkpoint(tmp_path_factory: pytest.TempPathFactory, bpe_tokenizer: Tokenizer) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("chat") / "ckpt", bpe_tokenizer, 256)


@pytest.fixture(scope="session")
def small_context_checkpoint(
    tmp_path_factory: pytest.TempPathFactory, bpe_tokenizer: Tokenizer
) -> Path:
    # Two short turns of chat template v2 and an 8-token reply fit; three do not.
    return write_checkpoint(tmp_path_factory.mktemp("chat") / "small", bpe_tokenizer, 80)


class RecordingApp:
    """A ChatApp on a PlainView over StringIO: `output` holds replies, `status` the rest."""

    def __init__(self, app: ChatApp, output: io.StringIO, status: io.StringIO) -> None:
        self.app, self.output, self.status = app, output, status

    def lines(self, *texts: str) -> bool:
        """Feed lines; False as soon as one ends the session."""
        return all(self.app.handle_line(text) for text in texts)


MakeApp = Callable[..., RecordingApp]


@pytest.fixture
def make_app() -> MakeApp:
    def make(
        checkpoint: Path,
        *,
        max_new_tokens: int = 20,
        seed: int | None = 0,
        system: str | None = None,
        context_file: Path | None = None,
    ) -> RecordingApp:
        loaded = load_checkpoint(checkpoint)
        output, status = io.StringIO(), io.StringIO()
        view = PlainView(io.StringIO(), output, status)
        settings = ChatSettings(
            SamplingSettings(temperature=0.7, repetition_penalty=1.1), max_new_tokens, seed
        )
        app = ChatApp(
            DecodeSession(loaded.model),
            loaded.tokenizer,
            view,
            settings=settings,
            conversation=Conversation(system=system),
            context_file=context_file,
        )
        return RecordingApp(app, output, status)

    return make
