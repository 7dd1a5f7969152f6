"""The one chat template: training, chat, the server and every export use it.

Version 2 (the current one) renders a conversation as, with no other text between the pieces:

    <|system|>\\n{system}<|end|>\\n<|user|>\\n{user}<|end|>\\n<|assistant|>\\n{assistant}<|end|>\\n...

and a generation prompt ends with `<|assistant|>\\n`. This is exactly what llama.cpp's built-in
(non-Jinja) renderer produces for our template: `llama_chat_apply_template`, used by llama-cli and
servers started without --jinja, recognises the `<|assistant|>` and `<|end|>` spellings as Phi-3
and renders that layout whatever the Jinja text says. Version 1 had no newlines, so llama.cpp fed
a v1 model newlines it never saw in training; v2 removes the mismatch with no tokenizer change.

Version 1 (`<|system|>{system}<|end|><|user|>{user}<|end|><|assistant|>` ...) stays for the
models fine-tuned with it: the version travels on the tokenizer (`Tokenizer.chat_template_version`,
set from the checkpoint's config.json when it is loaded), so `render` and `jinja_template` pick the
model's own format and no caller passes a version.

The role markers are control tokens from the tokenizer's special-token list; message contents are
encoded as plain text, so a user who types "<|end|>" gets the pieces "<", "|", ... and never the
control token. `render` returns the ids and a loss mask that is 1 exactly on assistant contents and
their closing `<|end|>` (what fine-tuning learns) and 0 elsewhere: role markers, the newline after a
role marker (part of the generation prompt) and the newline after `<|end|>` (the template adds it).
`jinja_template` is the same format in Jinja for Hugging Face `chat_template` and GGUF
`tokenizer.chat_template`; tests prove every runtime gives the ids of `render`.
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

CHAT_TEMPLATE_VERSION = 2
CHAT_TEMPLATE_VERSIONS = (1, 2)
ROLES = ("system", "user", "assistant")
ROLE_TOKENS = {"system": SYSTEM_TOKEN, "user": USER_TOKEN, "assistant": ASSISTANT_TOKEN}
# Text after a role marker and after <|end|>, per version (llama.cpp's Phi-3 layout for v2).
SEPARATORS = {1: "", 2: "\n"}

# The Jinja forms: `'\n'` is a Jinja string escape, so the template text holds a backslash-n (as
# Hugging Face templates do) and renders a newline.
JINJA_TEMPLATES: dict[int, str] = {
    1: (
        "{% for message in messages %}"
        "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
    ),
    2: (
        "{% for message in messages %}"
        "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
    ),
}
JINJA_TEMPLATE = JINJA_TEMPLATES[CHAT_TEMPLATE_VERSION]


class Message(TypedDict):
    role: str
    content: str


def check_version(version: object, source: str) -> int:
    """`version` as a known template version, or a ScratchLMError naming `source`."""
    if isinstance(version, bool) or not isinstance(version, int):
        raise ScratchLMError(
            f"{source}: chat_template_version {version!r} is not an integer; the checkpoint is "
            "damaged or not a scratchlm one"
        )
    if version not in CHAT_TEMPLATE_VERSIONS:
        raise ScratchLMError(
            f"{source} uses chat template v{version}, which this scratchlm does not know (it "
            f"renders v{', v'.join(map(str, CHAT_TEMPLATE_VERSIONS))}); upgrade scratchlm"
        )
    return version


def template_version(tokenizer: Tokenizer) -> int:
    """The template version of the model this tokenizer belongs to (None on it: the current)."""
    version = tokenizer.chat_template_version
    if version is None:
        return CHAT_TEMPLATE_VERSION
    return check_version(version, "the tokenizer")


def version_of_jinja(text: object) -> int | None:
    """The version whose Jinja form `text` is (a Hugging Face `chat_template` we wrote), or None."""
    return next((version for version, jinja in JINJA_TEMPLATES.items() if jinja == text), None)


def jinja_template(tokenizer: Tokenizer) -> str:
    """The Jinja chat template that exports write for the model this tokenizer belongs to."""
    return JINJA_TEMPLATES[template_version(tokenizer)]


def llama_cpp_warning(tokenizer: Tokenizer) -> str | None:
    """One line for a GGUF export whose template llama.cpp's built-in renderer cannot match."""
    version = template_version(tokenizer)
    if version == CHAT_TEMPLATE_VERSION:
        return None
    return (
        f"this model was fine-tuned with chat template v{version}, which llama.cpp without --jinja "
        f"(llama-cli, llama-server) renders with newlines the model never saw: run llama.cpp with "
        f"--jinja, or fine-tune the base model again with this scratchlm (template "
        f"v{CHAT_TEMPLATE_VERSION}, docs/export.md)"
    )


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
    """(ids, loss_mask) for a conversation; with `add_generation_prompt`, ready for the reply.

    Tokenized the way a runtime tokenizes the rendered text: the control tokens split it, and each
    piece of plain text between two of them is encoded as one string (so v2's newline after a role
    marker is encoded together with the content that follows it)."""
    validate_messages(messages)
    separator = SEPARATORS[template_version(tokenizer)]
    end_id = tokenizer.special_id(END_OF_TURN_TOKEN)
    gap = _gap(tokenizer)
    ids: list[int] = []
    mask: list[int] = []
    for message in messages:
        learned = 1 if message["role"] == "assistant" else 0
        body = tokenizer.encode(separator + message["content"])
        # The newline after the role marker is prompt, not reply: unlearned when its ids start
        # the body. A content that starts with whitespace can merge with it into one token; that
        # token holds reply text, so it stays learned.
        prompt_part = len(gap) if body[: len(gap)] == gap else 0
        ids += [tokenizer.special_id(ROLE_TOKENS[message["role"]]), *body, end_id, *gap]
        mask += (
            [0] * (1 + prompt_part)
            + [learned] * (len(body) - prompt_part)
            + [learned]  # <|end|>: the model learns to close its turn
            + [0] * len(gap)
        )
    if add_generation_prompt:
        prompt = generation_prompt(tokenizer)
        ids += prompt
        mask += [0] * len(prompt)
    assert len(ids) == len(mask)
    return ids, mask


def _gap(tokenizer: Tokenizer) -> list[int]:
    """The ids after a role marker and after `<|end|>`: none for v1, the newline's for v2."""
    return tokenizer.encode(SEPARATORS[template_version(tokenizer)])


def generation_prompt(tokenizer: Tokenizer) -> list[int]:
    """The ids that open the assistant's reply: `<|assistant|>` (v2: and its newline)."""
    return [tokenizer.special_id(ASSISTANT_TOKEN), *_gap(tokenizer)]


def closed_reply(tokenizer: Tokenizer, reply: Sequence[int]) -> list[int]:
    """A generated reply (its ids, up to but without `<|end|>`) as it stands in the history:
    the generation prompt, the reply, `<|end|>` and (v2) the newline after it."""
    return [*generation_prompt(tokenizer), *reply, end_of_turn_id(tokenizer), *_gap(tokenizer)]


def render_text(
    messages: Sequence[Message], *, add_generation_prompt: bool = False, version: int | None = None
) -> str:
    """The template as a string (what the Jinja template produces); `version` defaults to the
    current one (callers with a tokenizer use `template_version(tokenizer)`)."""
    validate_messages(messages)
    separator = SEPARATORS[check_version(version or CHAT_TEMPLATE_VERSION, "render_text")]
    text = "".join(
        f"<|{m['role']}|>{separator}{m['content']}{END_OF_TURN_TOKEN}{separator}" for m in messages
    )
    return text + (ASSISTANT_TOKEN + separator if add_generation_prompt else "")


def end_of_turn_id(tokenizer: Tokenizer) -> int:
    return tokenizer.special_id(END_OF_TURN_TOKEN)
