"""`scratchlm chat` in-process (standard input is not a terminal here: the plain view)."""

from __future__ import annotations

import argparse
import io
import json
import re
from pathlib import Path

import pytest

from scratchlm.cli.chat import add_chat, command_chat
from scratchlm.errors import ScratchLMError

STATS = re.compile(
    r"(\d+) tokens? · [\d.]+ tok/s · [\d.]+ s · cache: reused (\d+), prefilled (\d+)"
)


def parse_chat_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_chat(parser)
    return parser.parse_args(list(argv))


def run_chat(monkeypatch: pytest.MonkeyPatch, stdin: str, *argv: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    command_chat(parse_chat_args(*argv))


def test_chat_defaults_avoid_loops() -> None:
    args = parse_chat_args("--checkpoint", "x")
    assert (args.temperature, args.repetition_penalty, args.max_new_tokens) == (0.7, 1.1, 256)


def test_command_chat_plain_mode_and_context_file(
    chat_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    context = tmp_path / "context.json"
    common = ("--checkpoint", str(chat_checkpoint), "--max-new-tokens", "8", "--seed", "1")
    run_chat(monkeypatch, "hello\nquit\n", *common, "--context-file", str(context))
    captured = capsys.readouterr()
    assert "\x1b" not in captured.out + captured.err and "╭" not in captured.out + captured.err
    assert "parameters:" in captured.err and STATS.search(captured.err)
    first = json.loads(context.read_text(encoding="utf-8"))
    assert [m["role"] for m in first["messages"]] == ["user", "assistant"]
    assert first["settings"]["max_new_tokens"] == 8
    # A second run continues the saved conversation (end of input also ends the session).
    run_chat(monkeypatch, "again\n", *common, "--context-file", str(context))
    second = json.loads(context.read_text(encoding="utf-8"))
    assert [m["content"] for m in second["messages"] if m["role"] == "user"] == ["hello", "again"]
    assert "history: 2 messages" in capsys.readouterr().err


def test_command_chat_user_errors(
    chat_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ScratchLMError, match="does not exist"):
        run_chat(monkeypatch, "", "--checkpoint", str(tmp_path / "nope"))
    with pytest.raises(ScratchLMError, match="beam"):
        run_chat(monkeypatch, "", "--checkpoint", str(chat_checkpoint), "--sampler", "beam")
    (tmp_path / "broken.json").write_text("[", encoding="utf-8")
    # A broken --context-file stops the start: continuing would overwrite it.
    with pytest.raises(ScratchLMError, match="not valid JSON"):
        run_chat(
            monkeypatch,
            "",
            "--checkpoint",
            str(chat_checkpoint),
            "--context-file",
            str(tmp_path / "broken.json"),
        )


def test_short_checkpoint_flag() -> None:
    assert parse_chat_args("-m", "x", "--system-prompt", "be brief").checkpoint == "x"
