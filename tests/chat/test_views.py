"""`scratchlm chat` as a user runs it: in a pseudo-terminal (rich panels) and through a pipe."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scratchlm.tokenizer import Tokenizer

pexpect = pytest.importorskip("pexpect")

TIMEOUT_S = 120  # generous: CI machines are 2 shared cores
# Wide enough that status lines never wrap; the patterns still allow a wrap (spaces, line breaks
# and color codes) between words, since a long temp path can push a line past any width.
COLUMNS = 200
GAP = r"(?:\x1b\[[0-9;]*m|\s)+"
STATS = rf"cache:{GAP}reused{GAP}(\d+),{GAP}prefilled{GAP}(\d+)"
PROMPT = "you> "


def terminal_env() -> dict[str, str]:
    return {
        **os.environ,
        "COLUMNS": str(COLUMNS),
        "LINES": "50",
        "TERM": "xterm-256color",
        "PYTHONUNBUFFERED": "1",
    }


def restore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn_chat(checkpoint: Path, *extra: str) -> pexpect.spawn:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "scratchlm", "chat", "--checkpoint", str(checkpoint), "--seed", "0", *extra],
        env=terminal_env(),
        encoding="utf-8",
        # Ctrl-C makes the terminal drop output not yet read, which can cut a character in two.
        codec_errors="replace",
        timeout=TIMEOUT_S,
        dimensions=(50, COLUMNS),
        # Ctrl-C must reach the chat as it reaches a chat in a terminal. A job started in the
        # background of a non-interactive shell (`.ci/run &`) ignores SIGINT, its children
        # inherit that, and Python then installs no KeyboardInterrupt handler.
        preexec_fn=restore_sigint,
    )
    child.expect(PROMPT)
    return child


def send_and_read_stats(child: pexpect.spawn, text: str) -> tuple[int, int]:
    child.sendline(text)
    child.expect(STATS)
    reused, prefilled = (int(value) for value in child.match.groups())
    child.expect(PROMPT)
    return reused, prefilled


def wait_until_reading_input(child: pexpect.spawn) -> None:
    """Block until the chat sits in readline's select() on the terminal.

    CPython's `input()` checks for signals only when that select() returns EINTR: a SIGINT that
    lands between the prompt being printed and the select() starting stays pending until the next
    key (python/cpython#112585). A person cannot press Ctrl-C in that microsecond window; a test
    on a loaded machine can, so it waits for the select() first (the kernel shows where the main
    thread sleeps in /proc/PID/wchan: `poll_schedule_timeout` or `do_select`).
    """
    wchan = Path(f"/proc/{child.pid}/wchan")
    for _ in range(TIMEOUT_S * 100):
        try:
            where = wchan.read_text()
        except OSError:
            break
        if "poll" in where or "select" in where:
            return
        if where in ("", "0"):
            break  # a kernel that hides where tasks sleep
        time.sleep(0.01)
    # No way to see it: give the prompt a moment to reach its select().
    time.sleep(0.5)


def expect_exit(child: pexpect.spawn) -> int | None:
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus


def test_two_turns_save_reset_load_and_quit(
    chat_checkpoint: Path, bpe_tokenizer: Tokenizer, tmp_path: Path
) -> None:
    child = spawn_chat(chat_checkpoint, "--max-new-tokens", "24")
    first, second = (
        "Once upon a time, there was a little cat named Tom.",
        "Tom loved to play with his red ball.",
    )
    reused, _ = send_and_read_stats(child, first)
    assert reused == 0
    reused, prefilled = send_and_read_stats(child, second)
    history = reused + prefilled
    assert reused > len(bpe_tokenizer.encode(first))
    # New this turn: `<|end|>\n` closing the cut reply, `<|user|>\n` ... `<|end|>\n`
    # `<|assistant|>\n` around the message (8 template tokens), and slack for the reply's tail.
    assert prefilled <= len(bpe_tokenizer.encode(second)) + 11 and prefilled * 2 < history

    saved, again = tmp_path / "chat.json", tmp_path / "again.json"
    child.sendline(f"/save {saved}")
    child.expect("saved 4 messages")
    child.expect(PROMPT)
    child.sendline("/reset")
    child.expect("new conversation")
    child.expect(PROMPT)
    child.sendline(f"/load {tmp_path / 'missing.json'}")
    # one message, and the chat goes on; rich may wrap the long path (and color codes) mid-sentence
    child.expect(f"does{GAP}not{GAP}exist")
    child.expect(PROMPT)
    child.sendline(f"/load {saved}")
    child.expect("loaded 4 messages")
    child.expect(PROMPT)
    child.sendline("/frobnicate")
    child.expect("type /help")
    child.expect(PROMPT)
    child.sendline(f"/save {again}")
    child.expect("saved 4 messages")
    child.expect(PROMPT)
    child.sendline("quit")
    assert expect_exit(child) == 0

    data = json.loads(saved.read_text(encoding="utf-8"))
    assert data["version"] == 1 and data["system"] is None
    assert [m["role"] for m in data["messages"]] == ["user", "assistant"] * 2
    assert [m["content"] for m in data["messages"][::2]] == [first, second]
    assert data["settings"]["temperature"] == 0.7 and data["settings"]["max_new_tokens"] == 24
    assert json.loads(again.read_text(encoding="utf-8")) == data


def test_context_overflow_drops_the_oldest_turn(
    small_context_checkpoint: Path, tmp_path: Path
) -> None:
    child = spawn_chat(
        small_context_checkpoint, "--max-new-tokens", "8", "--system-prompt", "Be brief."
    )
    assert "80 tokens" in child.before and "parameters" in child.before  # the start panel
    messages = [
        "Once upon a time, there was a little cat named Tom.",
        "Tom loved to play with his red ball.",
        "One day, the ball rolled into the garden. Tom was sad.",
    ]
    # 80 tokens hold two short turns (with 8 kept for the reply) but not three.
    for message in messages[:2]:
        send_and_read_stats(child, message)
    child.sendline(messages[2])
    child.expect(r"context full: dropped the oldest turn \((\d+) tokens\)")
    child.expect(STATS)
    child.expect(PROMPT)
    saved = tmp_path / "chat.json"
    child.sendline(f"/save {saved}")
    child.expect("saved")
    child.expect(PROMPT)
    wait_until_reading_input(child)
    child.sendintr()  # Ctrl-C at the prompt leaves cleanly
    assert expect_exit(child) == 0
    data = json.loads(saved.read_text(encoding="utf-8"))
    assert data["system"] == "Be brief."
    assert data["messages"][0] == {"role": "user", "content": messages[1]}


def test_ctrl_d_leaves_cleanly(chat_checkpoint: Path) -> None:
    child = spawn_chat(chat_checkpoint)
    child.sendeof()
    assert expect_exit(child) == 0


def test_piped_input_gives_plain_text(chat_checkpoint: Path) -> None:
    command = [sys.executable, "-m", "scratchlm", "chat", "--checkpoint", str(chat_checkpoint)]
    result = subprocess.run(
        [*command, "--max-new-tokens", "10", "--seed", "0"],
        input="hello\n/help\nquit\n",
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env={**os.environ, "TERM": "xterm-256color"},
    )
    assert result.returncode == 0, result.stderr
    everything = result.stdout + result.stderr
    assert "\x1b" not in everything and "╭" not in everything  # no colors, no panels
    assert re.search(STATS, result.stderr) and "/load FILE" in result.stdout


def test_missing_checkpoint_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scratchlm", "chat", "--checkpoint", str(tmp_path / "nope")],
        input="",
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and result.stderr.count("\n") == 1
