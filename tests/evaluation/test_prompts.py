from __future__ import annotations

import json
from pathlib import Path

import pytest

from scratchlm.checkpoint import save_checkpoint
from scratchlm.cli import main
from scratchlm.model import build_model
from scratchlm.tokenizer import Tokenizer
from tests.conftest import tiny_config


@pytest.fixture
def two_checkpoints(tmp_path: Path, bpe_tokenizer: Tokenizer) -> tuple[Path, Path]:
    paths = []
    for name in ("a", "b"):
        model = build_model(
            tiny_config("tiny", vocab_size=bpe_tokenizer.vocab_size, context_length=32)
        )
        paths.append(save_checkpoint(tmp_path / name, model, bpe_tokenizer))
    return paths[0], paths[1]


def test_prompt_suite_writes_markdown_and_jsonl(
    tmp_path: Path, two_checkpoints: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = two_checkpoints
    prompts = tmp_path / "puzzles.txt"
    prompts.write_text(
        "# logic puzzles\nIf all cats are animals, then\n\nWrite a poem about the sea.\n"
    )
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(first),
                "--prompts",
                str(prompts),
                "--compare",
                str(second),
                "--max-new-tokens",
                "8",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    records = [
        json.loads(line) for line in (first / "prompts-puzzles.jsonl").read_text().splitlines()
    ]
    assert len(records) == 4 and {r["checkpoint"] for r in records} == {str(first), str(second)}
    markdown = (first / "prompts-puzzles.md").read_text()
    assert "If all cats are animals" in markdown and str(second) in markdown
    # fixed settings and seed: the same suite gives the same replies
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(first),
                "--prompts",
                str(prompts),
                "--max-new-tokens",
                "8",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    again = [
        json.loads(line) for line in (first / "prompts-puzzles.jsonl").read_text().splitlines()
    ]
    assert [r["reply"] for r in again] == [r["reply"] for r in records[:2]]


def test_prompt_file_errors(
    tmp_path: Path, two_checkpoints: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no prompt field"}\n')
    assert main(["eval", "--checkpoint", str(two_checkpoints[0]), "--prompts", str(bad)]) == 2
    assert "prompt" in capsys.readouterr().err
