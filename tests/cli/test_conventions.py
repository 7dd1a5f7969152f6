"""The CLI's conventions, checked over every command: each default shown once and true, flags
named in messages exist, one name per concept (old spellings kept as hidden aliases), short flags,
and `--print-config`."""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest
import yaml

from scratchlm.cli import COMMANDS, build_parser, main
from scratchlm.cli.options import SAMPLING_DEFAULTS

SOURCE = Path(__file__).resolve().parents[2] / "src" / "scratchlm"
# Flags of other programs that our messages and docstrings mention.
# torchrun, kill, lm-evaluation-harness's own CLI (the bridge runs under it), llama.cpp's servers.
FOREIGN_FLAGS = {
    "--nproc_per_node",
    "--signal",
    "--model_args",
    "--include_path",
    "--metadata",
    "--jinja",
}
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_]*(?:-[a-z0-9_]+)*")


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every leaf command's parser by its name ("export hf")."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                inner = subparsers(sub)
                found.update({f"{name} {k}": v for k, v in inner.items()} if inner else {name: sub})
    return found


PARSERS = subparsers(build_parser())


def test_the_table_holds_every_command() -> None:
    assert set(PARSERS) == set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_default_is_shown_once(name: str) -> None:
    text = " ".join(PARSERS[name].format_help().split())
    assert not re.search(r"\(default: [^()]*(\([^()]*\))?[^()]*\) \(default:", text), text
    assert "(default: None)" not in text


def test_train_max_steps_says_what_happens_without_a_budget() -> None:
    from scratchlm.cli.train import TRAIN_DEFAULT_MAX_STEPS
    from scratchlm.training.setup import DEFAULT_MAX_STEPS

    assert TRAIN_DEFAULT_MAX_STEPS == DEFAULT_MAX_STEPS
    text = " ".join(PARSERS["train"].format_help().split())
    assert f"(default: {DEFAULT_MAX_STEPS} when no --max-tokens or --max-time is given)" in text
    text = " ".join(PARSERS["finetune"].format_help().split())
    assert "(default: 300 when no --max-tokens or --max-time is given)" in text


def known_flags() -> set[str]:
    flags: set[str] = set()
    for parser in [build_parser(), *PARSERS.values()]:
        for action in parser._actions:
            flags.update(action.option_strings)
    return flags


def test_flags_named_in_the_source_exist() -> None:
    """Every --flag written in a string of the package (messages, help texts, docstrings) is a
    flag of some command, or another program's."""
    known = known_flags() | FOREIGN_FLAGS
    unknown = []
    for path in sorted(SOURCE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                unknown += [
                    f"{path.relative_to(SOURCE)}:{node.lineno}: {flag}"
                    for flag in FLAG.findall(node.value)
                    if flag not in known
                ]
    assert not unknown, "\n".join(unknown)


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_short_flags() -> None:
    args = parse("generate", "-m", "ckpt", "-p", "Once", "-n", "7")
    assert (args.checkpoint, args.prompt, args.max_new_tokens) == ("ckpt", "Once", 7)
    for command in ("chat", "serve", "eval", "bench", "info", "merge-lora", "finetune"):
        assert "-m" in PARSERS[command]._option_string_actions, command
    for command in ("export hf", "export gguf", "export ollama", "import hf", "report"):
        assert "-m" in PARSERS[command]._option_string_actions, command


def test_every_model_input_is_checkpoint() -> None:
    for name, parser in PARSERS.items():
        flags = parser._option_string_actions
        if any(flag in flags for flag in ("--model", "--system", "--workers")):
            # An old spelling: accepted, not shown.
            shown = parser.format_help()
            for flag in ("--model ", "--system ", "--workers "):
                assert flag not in shown, (name, flag)


def test_old_spellings_still_work(tmp_path: Path) -> None:
    assert (
        parse(
            "data", "prepare", "--data", "d", "--tokenizer", "t", "--out", "o", "--workers", "3"
        ).data_workers
        == 3
    )
    assert (
        parse("data", "prepare", "--data", "d", "--tokenizer", "t", "--out", "o").data_workers
        is None
    )
    assert (
        parse("export", "ollama", "-m", "c", "--out", "o", "--system", "Hi").system_prompt == "Hi"
    )
    assert parse("import", "hf", "--model", "hf", "--out", "o").checkpoint == "hf"
    args = parse("report", str(tmp_path))
    assert args.run_dir == str(tmp_path) and args.checkpoint is None


def test_report_needs_a_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report"]) == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_one_set_of_sampling_defaults() -> None:
    from scratchlm.inference.settings import SamplingSettings

    engine = SamplingSettings()
    for name in ("temperature", "top_k", "top_p", "min_p", "repetition_penalty"):
        assert SAMPLING_DEFAULTS[name] == getattr(engine, name), name
    generate = parse("generate", "-m", "c")
    assert generate.temperature == 0.8 and generate.max_new_tokens == 200
    chat = parse("chat", "-m", "c")
    assert (chat.temperature, chat.repetition_penalty, chat.max_new_tokens) == (0.7, 1.1, 256)
    assert chat.top_k == SAMPLING_DEFAULTS["top_k"]


def test_train_print_config_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--lr", "3e-4", "--max-steps", "5", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["lr"] == 3e-4 and printed["max_steps"] == 5 and printed["preset"] == "tiny"
    assert "config" not in printed
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(printed), encoding="utf-8")
    assert main(["train", "--config", str(tmp_path / "run.yaml"), "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == printed


def test_finetune_print_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["finetune", "-m", "base", "--data", "chat.jsonl", "--lora-rank", "8", "--print-config"]
    assert main(argv) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["lora_rank"] == 8 and printed["max_steps"] == 300
    assert printed["warmup_steps"] == 20 and "preset" not in printed
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(printed), encoding="utf-8")
    assert (
        main(["finetune", "-m", "base", "--config", str(tmp_path / "ft.yaml"), "--print-config"])
        == 0
    )
    assert yaml.safe_load(capsys.readouterr().out) == printed
    assert main(["train", "--lr", "-1", "--print-config"]) == 2
