"""Text that is not valid Unicode, at every entry point that is not HTTP (the server has its own
tests): argv, stdin, the chat's lines and /load, data and fine-tuning files. Each is refused in one
line that names where the bad text came from and where in it; nothing reaches the tokenizer's
Rust side, which would raise a TypeError traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scratchlm.errors import ScratchLMError
from scratchlm.finetune.datasets import read_conversations
from scratchlm.tokenizer import Tokenizer, require_unicode, unicode_problem
from tests.chat.conftest import write_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, bpe_tokenizer: Tokenizer) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("text") / "ckpt", bpe_tokenizer, 128)


def run_cli(
    args: list[str | bytes], stdin: bytes = b"", locale: str = "C.UTF-8"
) -> subprocess.CompletedProcess[bytes]:
    # In the C locale Python decodes stdin with surrogateescape; in a UTF-8 locale strictly. Both
    # must end in the same one-line error.
    environment = {**os.environ, "LC_ALL": locale, "LANG": locale, "PYTHONUTF8": "0"}
    return subprocess.run(
        [sys.executable, "-m", "scratchlm", *args],
        input=stdin,
        capture_output=True,
        env=environment,
        timeout=120,
    )


def one_line_error(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 2, result.stderr.decode(errors="replace")
    error = result.stderr.decode("utf-8", errors="replace").strip()
    assert "Traceback" not in error and "\n" not in error, error
    return error


def test_unicode_problem_names_the_byte_or_the_surrogate() -> None:
    assert unicode_problem("plain ascii") is None
    assert unicode_problem("héllo 你好 😀") is None
    assert unicode_problem("ab\udcffc") == "byte 0xff at character 2 is not valid UTF-8"
    assert (
        unicode_problem("a\ud800") == "a lone surrogate U+D800 at character 1 is not valid Unicode"
    )
    with pytest.raises(ScratchLMError, match=r"^--prompt: byte 0xc3 at character 0"):
        require_unicode("\udcc3", "--prompt")


def test_the_tokenizer_never_lets_a_surrogate_become_a_traceback(bpe_tokenizer: Tokenizer) -> None:
    with pytest.raises(ScratchLMError, match="U\\+DFFF at character 3"):
        bpe_tokenizer.encode("abc\udfff")
    with pytest.raises(ScratchLMError, match=r"^text 1: "):
        bpe_tokenizer.encode_batch(["fine", "not \ud800 fine"])
    assert bpe_tokenizer.encode("café") == bpe_tokenizer.encode_batch(["café"])[0]


@pytest.mark.parametrize("locale", ["C.UTF-8", "C"])
def test_invalid_bytes_on_argv_and_stdin(checkpoint: Path, locale: str) -> None:
    prompt = b"Once \xff upon"
    error = one_line_error(
        run_cli(["generate", "--checkpoint", str(checkpoint), "--prompt", prompt], locale=locale)
    )
    assert (
        error
        == "error: --prompt: byte 0xff at character 5 is not valid UTF-8; pass valid UTF-8 text"
    )
    error = one_line_error(
        run_cli(["tokenize", "--tokenizer", str(checkpoint)], stdin=b"ok \xc3( bad", locale=locale)
    )
    assert error.startswith("error: standard input: byte 0xc3 at character 3 is not valid UTF-8")


def test_a_path_with_invalid_bytes_is_still_a_path(tmp_path: Path, checkpoint: Path) -> None:
    # Linux file names may hold any bytes: only text arguments are checked, paths work as ever.
    odd = os.fsencode(tmp_path) + b"/tok-\xff.json"
    with open(odd, "wb") as handle:
        handle.write((checkpoint / "tokenizer.json").read_bytes())
    result = run_cli(["tokenize", "--tokenizer", odd, "--text", "Once upon", "--json"])
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert json.loads(result.stdout)["count"] > 0
    # safetensors (Rust) opens only UTF-8 paths: a checkpoint there is refused with the way out.
    odd_checkpoint = os.fsencode(tmp_path) + b"/ckpt-\xff"
    shutil.copytree(checkpoint, os.fsdecode(odd_checkpoint))
    error = one_line_error(run_cli(["generate", "--checkpoint", odd_checkpoint, "--prompt", "a"]))
    assert "the path holds bytes that are not UTF-8; rename the directory" in error


def test_the_chat_refuses_a_bad_line_and_goes_on(tmp_path: Path, checkpoint: Path) -> None:
    saved = tmp_path / "conversation.json"
    saved.write_text(
        json.dumps({"messages": [{"role": "user", "content": "\ud800 hello"}]}), encoding="utf-8"
    )
    lines = b"hi \xff there\n/system \xfe\n/load " + str(saved).encode() + b"\nhello\n/quit\n"
    result = run_cli(
        [
            "chat",
            "--checkpoint",
            str(checkpoint),
            "--plain",
            "--max-new-tokens",
            "3",
            "--seed",
            "1",
        ],
        stdin=lines,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    output = (result.stdout + result.stderr).decode("utf-8", errors="replace")
    assert "Traceback" not in output
    assert "error: that line: byte 0xff at character 3 is not valid UTF-8" in output
    assert "error: that line: byte 0xfe at character 8 is not valid UTF-8" in output
    assert f"error: {saved}: message 0: a lone surrogate U+D800 at character 0" in output
    assert "system prompt" not in output.split("error: that line: byte 0xfe")[1].split("\n")[1]
    # The good line after the bad ones got a reply (a stats line follows every reply).
    assert output.count("tok/s") == 1


def test_data_and_finetune_files_with_escaped_surrogates(tmp_path: Path, checkpoint: Path) -> None:
    data = tmp_path / "docs.jsonl"
    data.write_text('{"text": "fine"}\n{"text": "bad \\udc00 text"}\n', encoding="utf-8")
    error = one_line_error(
        run_cli(
            [
                *("data", "prepare", "--data", str(data), "--tokenizer", str(checkpoint)),
                *("--out", str(tmp_path / "prepared")),
            ]
        )
    )
    assert f"{data} line 2: a lone surrogate U+DC00 at character 4" in error
    sft = tmp_path / "sft.jsonl"
    sft.write_text(
        '{"instruction": "hi", "output": "ok"}\n{"prompt": "x", "completion": "\\ud83d"}\n',
        encoding="utf-8",
    )
    with pytest.raises(ScratchLMError, match=rf"^{sft}:2: a lone surrogate U\+D83D"):
        read_conversations(sft)
