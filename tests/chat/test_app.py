"""ChatApp in-process: the mechanics without a terminal (the command: tests/cli/test_chat.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scratchlm.chat.app import TurnStats
from scratchlm.chat.views import visible_text
from scratchlm.chat_template import closed_reply, generation_prompt, render
from tests.chat.conftest import MakeApp

FIRST = "Once upon a time, there was a little cat named Tom."
SECOND = "Tom loved to play with his red ball."
STATS = re.compile(
    r"(\d+) tokens? · [\d.]+ tok/s · [\d.]+ s · cache: reused (\d+), prefilled (\d+)"
)


def test_second_turn_reuses_the_cache(chat_checkpoint: Path, make_app: MakeApp) -> None:
    chat = make_app(chat_checkpoint)
    app = chat.app
    first_prompt = render(
        [{"role": "user", "content": FIRST}], app.tokenizer, add_generation_prompt=True
    )[0]
    first = app.send(FIRST)
    assert (first.reused, first.prefilled) == (0, len(first_prompt))
    # Turn 2's prompt: the history (without the trailing generation prompt) + the new message
    # and the generation prompt.
    opening = len(generation_prompt(app.tokenizer))
    message = render(
        [{"role": "user", "content": SECOND}], app.tokenizer, add_generation_prompt=True
    )
    second_prompt_length = len(app.prompt_ids()) - opening + len(message[0])
    second = app.send(SECOND)
    assert second.reused + second.prefilled == second_prompt_length
    # The whole first turn comes from the cache (less the last reply token when the reply was cut
    # by the token limit: a sampled token is fed only when the next one is needed) ...
    assert second.reused >= len(first_prompt) + first.tokens - 1
    # ... and only the first reply's closing (<|end|>, v2's newline), the new message and its
    # markers are prefilled.
    closing = len(closed_reply(app.tokenizer, [])) - opening
    assert second.prefilled <= 1 + closing + len(message[0])
    assert [m["role"] for m in app.conversation.messages] == ["user", "assistant"] * 2
    stats_lines = STATS.findall(chat.status.getvalue())
    assert len(stats_lines) == 2
    assert (int(stats_lines[1][1]), int(stats_lines[1][2])) == (second.reused, second.prefilled)


def test_replies_are_fed_back_as_generated(chat_checkpoint: Path, make_app: MakeApp) -> None:
    app = make_app(chat_checkpoint, system="Be brief.").app
    app.send(FIRST)
    first_prompt_length = len(
        render(
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": FIRST}],
            app.tokenizer,
            add_generation_prompt=True,
        )[0]
    )
    reply_ids = app.reply_ids[app.conversation.messages[-1]["content"]]
    fed = len(reply_ids) - (0 if app.session.finish_reason == "stop" else 1)
    cached = app.session.ids[first_prompt_length : first_prompt_length + fed]
    assert cached == reply_ids[:fed]
    # Without the generated ids the prompt is exactly the chat template.
    app.reply_ids = {}
    expected, _ = render(
        app.conversation.template_messages(), app.tokenizer, add_generation_prompt=True
    )
    assert app.prompt_ids() == expected


def test_ctrl_c_during_a_reply_keeps_the_partial_reply(
    chat_checkpoint: Path, make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat = make_app(chat_checkpoint, max_new_tokens=40)
    app = chat.app
    app.stop_ids = frozenset()  # no early stop: the interrupt must land mid-reply
    real_generate = app.session.generate

    def interrupted_generate(*args: Any, **kwargs: Any) -> Iterator[int]:
        for index, token in enumerate(real_generate(*args, **kwargs)):
            if index == 6:
                raise KeyboardInterrupt
            yield token

    monkeypatch.setattr(app.session, "generate", interrupted_generate)
    assert chat.lines(FIRST)
    stats = app.last_stats
    assert stats is not None and stats.finish == "interrupted" and stats.tokens == 6
    assert "stopped (Ctrl-C)" in chat.status.getvalue()
    partial = app.conversation.messages[-1]
    assert partial["role"] == "assistant"
    assert len(app.reply_ids[partial["content"]]) == 6  # the six tokens shown before Ctrl-C
    monkeypatch.undo()
    # The chat goes on and the cache still serves the history.
    assert chat.lines(SECOND)
    assert app.last_stats is not None and app.last_stats.reused > 0
    assert len(app.conversation.messages) == 4


def test_save_reset_load_restores_the_history(
    chat_checkpoint: Path, make_app: MakeApp, tmp_path: Path
) -> None:
    chat = make_app(chat_checkpoint, system="Be brief.")
    app = chat.app
    assert chat.lines(FIRST, SECOND, "/settings temperature=0.5 top_k=none")
    saved = tmp_path / "chat.json"
    assert chat.lines(f"/save {saved}")
    data = json.loads(saved.read_text(encoding="utf-8"))
    assert data["version"] == 1 and data["system"] == "Be brief."
    assert [m["content"] for m in data["messages"] if m["role"] == "user"] == [FIRST, SECOND]
    assert data["settings"]["temperature"] == 0.5 and data["settings"]["top_k"] is None
    assert data["settings"]["repetition_penalty"] == 1.1
    history = list(app.conversation.messages)

    assert chat.lines("/reset", "/settings temperature=1.0")
    assert app.conversation.messages == [] and app.conversation.system == "Be brief."
    assert chat.lines(f"/load {saved}")
    assert app.conversation.messages == history
    assert app.settings.sampling.temperature == 0.5  # the file's settings come back too
    assert "loaded 4 messages" in chat.status.getvalue()
    # The restored history is the prompt: the prefix of the old conversation is still cached.
    assert chat.lines("and then?")
    assert app.last_stats is not None and app.last_stats.reused > len(app.tokenizer.encode(FIRST))


def test_bad_load_files_and_unknown_commands_leave_the_session_as_it_was(
    chat_checkpoint: Path, make_app: MakeApp, tmp_path: Path
) -> None:
    chat = make_app(chat_checkpoint)
    app = chat.app
    assert chat.lines(FIRST)
    history = list(app.conversation.messages)
    (tmp_path / "bad.json").write_text("{oops", encoding="utf-8")
    (tmp_path / "bad_settings.json").write_text(
        json.dumps({"version": 1, "messages": [], "settings": {"temperature": -1}}),
        encoding="utf-8",
    )
    lines = [
        f"/load {tmp_path / 'missing.json'}",
        f"/load {tmp_path / 'bad.json'}",
        f"/load {tmp_path / 'bad_settings.json'}",
        f"/load {tmp_path}",
        "/frobnicate",
        "/settings temperature=hot",
        f"/save {tmp_path / 'bad.json' / 'inside.json'}",
    ]
    assert chat.lines(*lines)
    errors = [line for line in chat.status.getvalue().splitlines() if line.startswith("error:")]
    assert len(errors) == len(lines)
    assert "does not exist" in errors[0] and "not valid JSON" in errors[1]
    assert "--temperature must be >= 0" in errors[2]
    assert "type /help" in errors[4]
    assert app.conversation.messages == history and app.settings.sampling.temperature == 0.7


def test_commands_help_system_settings_and_quit(chat_checkpoint: Path, make_app: MakeApp) -> None:
    chat = make_app(chat_checkpoint)
    app = chat.app
    assert chat.lines("/help", "/system", "/system You are a cat.", "/settings", "")
    assert app.conversation.system == "You are a cat."
    out = chat.output.getvalue()
    assert "/load FILE" in out and "system prompt: none" in out
    assert "temperature: 0.7" in out  # the /settings table
    assert chat.lines("/system none") and app.conversation.system is None
    for word in ("quit", "exit", "q", "/quit"):
        assert app.handle_line(word) is False
    assert app.conversation.messages == []  # an empty line sent nothing


def test_context_overflow_drops_the_oldest_turn(
    small_context_checkpoint: Path, make_app: MakeApp
) -> None:
    chat = make_app(small_context_checkpoint, max_new_tokens=8, system="Be brief.")
    app = chat.app
    assert app.context_length == 80
    assert chat.lines(FIRST, SECOND, "One day, the ball rolled into the garden. Tom was sad.")
    notices = re.findall(
        r"context full: dropped the oldest turn \((\d+) tokens\)", chat.status.getvalue()
    )
    assert notices, chat.status.getvalue()
    assert app.conversation.system == "Be brief."
    assert FIRST not in [m["content"] for m in app.conversation.messages]
    assert len(app.prompt_ids()) < app.context_length


def test_a_message_longer_than_the_context_is_refused(
    small_context_checkpoint: Path, make_app: MakeApp
) -> None:
    chat = make_app(small_context_checkpoint)
    assert chat.lines(FIRST, "zebra quartz jumps over the vexed fjord " * 6)
    assert "send a shorter message" in chat.status.getvalue()
    # Refused before fitting: the earlier turn is still there.
    assert [m["role"] for m in chat.app.conversation.messages] == ["user", "assistant"]
    assert chat.app.conversation.messages[0]["content"] == FIRST


def test_stats_line_format() -> None:
    stats = TurnStats(42, 0.76, 118, 9, "stop")
    assert stats.describe() == "42 tokens · 55.3 tok/s · 0.8 s · cache: reused 118, prefilled 9"
    assert TurnStats(1, 0.5, 0, 3, "length").describe().endswith("cut at the token limit")


def test_visible_text_keeps_newlines_and_shows_control_characters() -> None:
    assert visible_text("a\nb\tc\x1b[2J\r\x07") == "a\nb\tc␛[2J␍␇"
