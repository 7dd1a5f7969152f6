"""Fixtures the command tests share with the packages they drive: tiny checkpoints to chat with
and to serve."""

from tests.chat.conftest import chat_checkpoint
from tests.server.conftest import loaded, server_checkpoint

__all__ = ["chat_checkpoint", "loaded", "server_checkpoint"]
