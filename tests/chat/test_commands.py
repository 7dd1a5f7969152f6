from __future__ import annotations

import dataclasses

import pytest

from scratchlm.chat.commands import (
    COMMANDS,
    SETTING_TYPES,
    Command,
    coerce_setting,
    help_lines,
    parse_line,
    parse_settings,
)
from scratchlm.errors import ScratchLMError
from scratchlm.inference.settings import SamplingSettings


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("hello there", Command("message", "hello there")),
        ("  hello  \n", Command("message", "hello")),
        ("", Command("message", "")),
        ("quit", Command("quit")),
        ("EXIT", Command("quit")),
        (" q ", Command("quit")),
        ("/quit", Command("quit")),
        ("/q", Command("quit")),
        ("/reset", Command("reset")),
        ("/HELP", Command("help")),
        ("/system You are a pirate.", Command("system", "You are a pirate.")),
        ("/system", Command("system", "")),
        ("/save  chats/a b.json ", Command("save", "chats/a b.json")),
        ("/load a.json", Command("load", "a.json")),
        ("/settings temperature=0.5 top_k=20", Command("settings", "temperature=0.5 top_k=20")),
        ("//etc/hosts is a file", Command("message", "/etc/hosts is a file")),
        ("quit now", Command("message", "quit now")),
    ],
)
def test_parse_line(line: str, expected: Command) -> None:
    assert parse_line(line) == expected


def test_unknown_commands_and_missing_files_are_user_errors() -> None:
    with pytest.raises(ScratchLMError, match=r"unknown command /frobnicate; type /help"):
        parse_line("/frobnicate now")
    for name in ("save", "load"):
        with pytest.raises(ScratchLMError, match=f"/{name} needs a file"):
            parse_line(f"/{name}")


def test_parse_settings() -> None:
    assert parse_settings("temperature=0.5 top_k=20") == {"temperature": 0.5, "top_k": 20}
    assert parse_settings("top-p=0.9, min_p=none seed=off") == {
        "top_p": 0.9,
        "min_p": None,
        "seed": None,
    }
    assert parse_settings("max_new_tokens=64") == {"max_new_tokens": 64}


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("temperature", "KEY=VALUE"),
        ("=3", "KEY=VALUE"),
        ("warmth=1", "unknown setting 'warmth'"),
        ("temperature=hot", "temperature needs a number"),
        ("top_k=2.5", "top_k needs a whole number"),
        ("temperature=none", "temperature needs a number"),
        ("max_new_tokens=0", "max_new_tokens must be >= 1"),
    ],
)
def test_parse_settings_rejects(argument: str, message: str) -> None:
    with pytest.raises(ScratchLMError, match=message):
        parse_settings(argument)


def test_coerce_setting_from_json_values() -> None:
    assert coerce_setting("top_k", 20.0) == 20
    assert coerce_setting("top_p", None) is None
    with pytest.raises(ScratchLMError):
        coerce_setting("temperature", True)  # JSON true is not a number here
    with pytest.raises(ScratchLMError):
        coerce_setting("temperature", [1])


def test_settings_cover_every_sampling_field() -> None:
    # A new SamplingSettings field must become a chat setting too (shown, saved, changeable).
    fields = {item.name for item in dataclasses.fields(SamplingSettings)}
    assert set(SETTING_TYPES) == fields | {"max_new_tokens", "seed"}


def test_help_names_every_command() -> None:
    text = "\n".join(help_lines())
    assert all(f"/{name}" in text for name in COMMANDS)
