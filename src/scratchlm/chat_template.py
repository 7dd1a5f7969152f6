"""The one chat template: training, chat, the server and every export use it.

A conversation renders as, with no other text between the pieces:

    <|system|>{system}<|end|><|user|>{user}<|end|><|assistant|>{assistant}<|end|>...

and a generation prompt ends with `<|assistant|>`. The role markers are control tokens from the
tokenizer's special-token list; message contents are encoded as plain text, so a user who types
"<|end|>" gets the pieces "<", "|", ... and never the control token. `render` returns the ids and a
loss mask that is 1 exactly on assistant contents and their closing `<|end|>` (what fine-tuning
learns) and 0 elsewhere. `JINJA_TEMPLATE` is the same format in Jinja for Hugging Face
`chat_template`, GGUF `tokenizer.chat_template` and Ollama; a test proves both give the same ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

from scratchlm.errors import ScratchLMError
from scratchlm.tokenizer import (
    ASSISTANT_TOKEN,
    END_OF_TURN_TOKEN,
    SYSTEM_TOKEN,
    USER_TOKEN,
    Tokenizer,
)

CHAT_TEMPLATE_VERSION = 1
ROLES = ("system", "user", "assistant")
ROLE_TOKENS = {"system": SYSTEM_TOKEN, "user": USER_TOKEN, "assistant": ASSISTANT_TOKEN}

JINJA_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


class Message(TypedDict):
    role: str
    content: str


def validate_messages(messages: Sequence[Message]) -> None:
    if not messages:
        raise ScratchLMError("the conversation is empty; give at least one message")
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES:
            raise ScratchLMError(
                f"message {index} has role {role!r}; use one of {', '.join(ROLES)}"
            )
        if not isinstance(message.get("content"), str):
            raise ScratchLMError(f"message {index} ({role}) needs a string 'content'")
        if role == "system" and index != 0:
            raise ScratchLMError(f"message {index}: a system message may only come first")


def render(
    messages: Sequence[Message], tokenizer: Tokenizer, *, add_generation_prompt: bool = False
) -> tuple[list[int], list[int]]:
    """(ids, loss_mask) for a conversation; with `add_generation_prompt`, ready for the reply."""
    validate_messages(messages)
    end_id = tokenizer.special_id(END_OF_TURN_TOKEN)
    ids: list[int] = []
    mask: list[int] = []
    for message in messages:
        learned = 1 if message["role"] == "assistant" else 0
        content = tokenizer.encode(message["content"])
        ids += [tokenizer.special_id(ROLE_TOKENS[message["role"]]), *content, end_id]
        mask += [0] + [learned] * len(content) + [learned]
    if add_generation_prompt:
        ids.append(tokenizer.special_id(ASSISTANT_TOKEN))
        mask.append(0)
    return ids, mask


def render_text(messages: Sequence[Message], *, add_generation_prompt: bool = False) -> str:
    """The template as a string (what the Jinja template produces)."""
    validate_messages(messages)
    text = "".join(f"<|{m['role']}|>{m['content']}{END_OF_TURN_TOKEN}" for m in messages)
    return text + (ASSISTANT_TOKEN if add_generation_prompt else "")


def end_of_turn_id(tokenizer: Tokenizer) -> int:
    return tokenizer.special_id(END_OF_TURN_TOKEN)
