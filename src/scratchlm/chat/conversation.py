"""A chat conversation: the system prompt, the user/assistant messages and the sampling settings.

Saved as JSON (`/save`, `/load`, `--context-file`):

    {"version": 1, "system": "..." or null, "messages": [{"role": "user", "content": "..."}, ...],
     "settings": {"temperature": 0.7, ...}}

A turn is a user message and the assistant messages after it. When the conversation no longer fits
the model's context, `fit` drops whole turns, oldest first; the system prompt always stays, and so
does the newest turn (the one being answered). This module knows nothing of models or terminals, so
it is cheap to test and to reuse (a server can keep conversations the same way).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scratchlm.chat_template import Message, generation_prompt, render
from scratchlm.errors import ScratchLMError
from scratchlm.io_utils import atomic_write_json
from scratchlm.tokenizer import Tokenizer, require_unicode

CONVERSATION_FORMAT_VERSION = 1
TURN_ROLES = ("user", "assistant")


@dataclass(frozen=True)
class DroppedTurn:
    messages: list[Message]
    tokens: int  # what the turn took in the rendered prompt


@dataclass
class Conversation:
    system: str | None = None
    messages: list[Message] = field(default_factory=list)
    # The sampling settings in force, saved with the conversation; opaque here (plain JSON values)
    # because this module must not import torch through the sampling code.
    settings: dict[str, Any] = field(default_factory=dict)

    # --- contents -------------------------------------------------------------------------------
    def template_messages(self) -> list[Message]:
        """The messages as the chat template takes them: the system prompt first, if any."""
        head: list[Message] = [{"role": "system", "content": self.system}] if self.system else []
        return head + list(self.messages)

    def add(self, role: str, content: str) -> None:
        if role not in TURN_ROLES:
            raise ScratchLMError(f"a conversation message has role user or assistant, not {role!r}")
        self.messages.append({"role": role, "content": content})

    def clear(self) -> None:
        """Forget the messages; the system prompt and settings stay (they describe the session)."""
        self.messages = []

    def turn_starts(self) -> list[int]:
        """Index of the first message of each turn. Messages before the first user message (an
        edited file may start with an assistant message) belong to the first turn."""
        starts = [index for index, message in enumerate(self.messages) if message["role"] == "user"]
        if not starts:
            return [0] if self.messages else []
        starts[0] = 0
        return starts

    # --- fitting the context --------------------------------------------------------------------
    def prompt_tokens(
        self, tokenizer: Tokenizer, encode_message: Callable[[Message], list[int]] | None = None
    ) -> int:
        """Tokens of the rendered conversation plus the generation prompt."""
        encode = encode_message or _template_encoder(tokenizer)
        prompt = len(generation_prompt(tokenizer))
        return sum(len(encode(message)) for message in self.template_messages()) + prompt

    def fit(
        self,
        tokenizer: Tokenizer,
        context_length: int,
        reply_room: int,
        *,
        encode_message: Callable[[Message], list[int]] | None = None,
    ) -> list[DroppedTurn]:
        """Drop the oldest turns until prompt + `reply_room` tokens fit in `context_length`.

        The newest turn is never dropped: if it alone is too long the caller decides (shrink the
        reply, or refuse the message). `encode_message` gives a message's ids as the caller will
        render them (default: the chat template), so counts match the prompt actually fed.
        Returns the dropped turns, oldest first.
        """
        encode = encode_message or _template_encoder(tokenizer)
        counts = [len(encode(message)) for message in self.messages]
        system_tokens = (
            len(encode({"role": "system", "content": self.system})) if self.system else 0
        )
        total = system_tokens + sum(counts) + len(generation_prompt(tokenizer))
        dropped: list[DroppedTurn] = []
        starts = self.turn_starts()
        while len(starts) > 1 and total + reply_room > context_length:
            end = starts[1]
            turn_tokens = sum(counts[:end])
            dropped.append(DroppedTurn(self.messages[:end], turn_tokens))
            self.messages, counts = self.messages[end:], counts[end:]
            total -= turn_tokens
            starts = [start - end for start in starts[1:]]
        return dropped

    # --- JSON -----------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "version": CONVERSATION_FORMAT_VERSION,
            "system": self.system,
            "messages": [
                {"role": message["role"], "content": message["content"]}
                for message in self.messages
            ],
            "settings": dict(self.settings),
        }

    @classmethod
    def from_json(cls, data: Any, *, source: str = "the conversation") -> Conversation:
        """Validate and build; every problem is a ScratchLMError naming `source`."""
        if not isinstance(data, dict):
            raise ScratchLMError(f"{source} is not a JSON object with 'messages'")
        version = data.get("version", CONVERSATION_FORMAT_VERSION)
        if version != CONVERSATION_FORMAT_VERSION:
            raise ScratchLMError(
                f"{source} has version {version!r}; this scratchlm reads version "
                f"{CONVERSATION_FORMAT_VERSION}"
            )
        system = data.get("system")
        if system is not None and not isinstance(system, str):
            raise ScratchLMError(f"{source}: 'system' must be a string or null")
        if system is not None:
            require_unicode(system, f"{source}: 'system'")
        raw_messages = data.get("messages", [])
        if not isinstance(raw_messages, list):
            raise ScratchLMError(f"{source}: 'messages' must be a list")
        messages: list[Message] = []
        for index, message in enumerate(raw_messages):
            role = message.get("role") if isinstance(message, dict) else None
            content = message.get("content") if isinstance(message, dict) else None
            if not isinstance(content, str):
                raise ScratchLMError(f"{source}: message {index} needs a string 'content'")
            # JSON escapes can spell lone surrogates ("\\ud800"); refuse them here, by index.
            require_unicode(content, f"{source}: message {index}")
            # A leading system message (the OpenAI layout) is accepted as the system prompt.
            if role == "system" and index == 0 and system is None:
                system = content
                continue
            if role not in TURN_ROLES:
                raise ScratchLMError(
                    f"{source}: message {index} has role {role!r}; use user or assistant "
                    "(the system prompt goes in 'system')"
                )
            messages.append({"role": role, "content": content})
        settings = data.get("settings", {})
        if not isinstance(settings, dict):
            raise ScratchLMError(f"{source}: 'settings' must be an object")
        return cls(system=system or None, messages=messages, settings=dict(settings))

    def save(self, path: str | os.PathLike[str]) -> None:
        try:
            atomic_write_json(path, self.to_json())
        except OSError as error:
            raise ScratchLMError(f"cannot write {path}: {error.strerror or error}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Conversation:
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ScratchLMError(f"{file} does not exist") from None
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
            raise ScratchLMError(f"cannot read {file}: {reason or error}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ScratchLMError(
                f"{file} is not valid JSON (line {error.lineno}: {error.msg}); "
                "give a file written by /save"
            ) from None
        return cls.from_json(data, source=str(file))


def _template_encoder(tokenizer: Tokenizer) -> Callable[[Message], list[int]]:
    def encode(message: Message) -> list[int]:
        return render([message], tokenizer)[0]

    return encode
