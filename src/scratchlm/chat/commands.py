"""What a line typed into the chat means: a message, a /command, or the end of the session.

Pure parsing (no model, no terminal), so every rule here is a unit test. Bad input raises
ScratchLMError with a one-line message; the chat prints it and goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scratchlm.errors import ScratchLMError

QUIT_WORDS = frozenset({"quit", "exit", "q"})

# name -> (argument shown in /help, what it does). The order is the /help order.
COMMANDS: dict[str, tuple[str, str]] = {
    "help": ("", "show this help"),
    "reset": ("", "start a new conversation (the system prompt and settings stay)"),
    "system": ("[TEXT]", "show the system prompt, set it to TEXT, or remove it with 'none'"),
    "save": ("FILE", "save the conversation as JSON"),
    "load": ("FILE", "load a conversation saved with /save (its settings too)"),
    "settings": ("[KEY=VALUE ...]", "show the sampling settings, or change some"),
    "quit": ("", "leave (also: quit, exit, q, Ctrl-D)"),
}
COMMANDS_NEEDING_ARGUMENT = frozenset({"save", "load"})

# Settings `/settings` can change and a saved conversation carries. Optional ones accept "none".
SETTING_TYPES: dict[str, tuple[type, bool]] = {
    "temperature": (float, False),
    "top_k": (int, True),
    "top_p": (float, True),
    "min_p": (float, True),
    "repetition_penalty": (float, False),
    "presence_penalty": (float, False),
    "frequency_penalty": (float, False),
    "max_new_tokens": (int, False),
    "seed": (int, True),
}
NONE_WORDS = frozenset({"none", "null", "off"})


@dataclass(frozen=True)
class Command:
    """`name` is a key of COMMANDS, or "message" for text to send to the model."""

    name: str
    argument: str = ""


def parse_line(text: str) -> Command:
    stripped = text.strip()
    if stripped.lower() in QUIT_WORDS:
        return Command("quit")
    # "//text" sends "/text": the way to start a message with a slash.
    if stripped.startswith("//"):
        return Command("message", stripped[1:])
    if not stripped.startswith("/"):
        return Command("message", stripped)
    name, _, argument = stripped[1:].partition(" ")
    name, argument = name.lower(), argument.strip()
    if name in QUIT_WORDS:
        return Command("quit")
    if name not in COMMANDS:
        raise ScratchLMError(f"unknown command /{name}; type /help for the commands")
    if name in COMMANDS_NEEDING_ARGUMENT and not argument:
        raise ScratchLMError(f"/{name} needs a file: /{name} {COMMANDS[name][0]}")
    return Command(name, argument)


def help_lines() -> list[str]:
    lines = [
        f"/{name} {argument}".rstrip().ljust(32) + description
        for name, (argument, description) in COMMANDS.items()
    ]
    settings = ", ".join(SETTING_TYPES)
    lines.append(f"settings: {settings} (e.g. /settings temperature=0.5 top_k=20)")
    lines.append("Ctrl-C stops a reply; a line starting with // sends a message starting with /")
    return lines


def coerce_setting(key: str, value: Any) -> Any:
    """A setting's value from text (/settings) or JSON (a saved file), checked for its type."""
    name = key.strip().lower().replace("-", "_")
    if name not in SETTING_TYPES:
        raise ScratchLMError(
            f"unknown setting {key!r}; the settings are {', '.join(SETTING_TYPES)}"
        )
    kind, optional = SETTING_TYPES[name]
    if value is None or (isinstance(value, str) and value.strip().lower() in NONE_WORDS):
        if optional:
            return None
        raise ScratchLMError(f"{name} needs a number, not {value!r}")
    if isinstance(value, bool):
        raise ScratchLMError(f"{name} needs a number, not {value!r}")
    try:
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            number: Any = int(value)
        else:
            number = float(value)
    except (TypeError, ValueError):
        expected = "a whole number" if kind is int else "a number"
        raise ScratchLMError(f"{name} needs {expected}, not {value!r}") from None
    if name == "max_new_tokens" and number < 1:
        raise ScratchLMError(f"max_new_tokens must be >= 1, got {number}")
    return number


def parse_settings(argument: str) -> dict[str, Any]:
    """'temperature=0.5 top_k=20' (commas also separate) -> {'temperature': 0.5, 'top_k': 20}."""
    changes: dict[str, Any] = {}
    for item in argument.replace(",", " ").split():
        key, equals, value = item.partition("=")
        if not equals or not key or not value:
            raise ScratchLMError(
                f"write settings as KEY=VALUE (e.g. temperature=0.5), not {item!r}"
            )
        changes[key.strip().lower().replace("-", "_")] = coerce_setting(key, value)
    return changes
