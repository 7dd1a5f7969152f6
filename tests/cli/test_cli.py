"""The CLI: help with defaults, JSON outputs, and every bad input as a one-line error with exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from scratchlm.checkpoint import save_checkpoint
from scratchlm.cli import main
from scratchlm.data.stories.corpus import generate_stories
from scratchlm.model import build_model
from scratchlm.tokenizer import Tokenizer
from tests.cli.test_conventions import PARSERS
from tests.conftest import tiny_config

COMMANDS = [
    ["presets"],
    ["info"],
    ["tokenizer", "train"],
    ["tokenize"],
    ["data", "prepare"],
    ["train"],
    ["eval"],
    ["generate"],
    ["quickstart"],
    ["bench"],
    ["finetune"],
    ["merge-lora"],
    ["chat"],
    ["serve"],
    ["export", "hf"],
    ["export", "gguf"],
    ["export", "ollama"],
    ["import", "hf"],
    ["report"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_defaults(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "usage: scratchlm" in text
    if command not in (["info"], ["presets"], ["tokenize"]):
        assert "default" in text


def test_python_dash_m_and_presets_json() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scratchlm", "presets", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    presets = json.loads(result.stdout)
    names = {preset["name"] for preset in presets}
    assert {
        "tiny",
        "small",
        "kia-1.6b",
        "antimatter-300m",
        "akane-124m",
        "aksis-small",
        "ai4india",
    } <= names
    assert all(isinstance(preset["n_params"], int) for preset in presets)


def test_info_json_uses_config_field_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--preset", "kia-1.6b", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["d_model"] == 2048 and info["n_layer"] == 32 and info["n_head"] == 32
    assert 1.55e9 < info["n_params"] < 1.8e9


@pytest.fixture
def checkpoint(tmp_path: Path, bpe_tokenizer: Tokenizer) -> Path:
    model = build_model(tiny_config("tiny", vocab_size=bpe_tokenizer.vocab_size, context_length=16))
    return save_checkpoint(tmp_path / "ckpt", model, bpe_tokenizer)


def test_generate_eval_tokenize(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "generate",
                "--checkpoint",
                str(checkpoint),
                "--prompt",
                "Once",
                "--max-new-tokens",
                "5",
                "--seed",
                "1",
                "--temperature",
                "0",
            ]
        )
        == 0
    )
    first = capsys.readouterr().out
    assert first.startswith("Once")
    assert (
        main(
            [
                "generate",
                "--checkpoint",
                str(checkpoint),
                "--prompt",
                "Once",
                "--max-new-tokens",
                "5",
                "--seed",
                "1",
                "--temperature",
                "0",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out == first
    # an fp16 KV cache: the same greedy text here (keys and values rounded once, when written)
    fp16 = ["generate", "--checkpoint", str(checkpoint), "--prompt", "Once", "--temperature", "0"]
    assert main([*fp16, "--max-new-tokens", "5", "--seed", "1", "--kv-cache", "fp16"]) == 0
    assert capsys.readouterr().out == first
    text = tmp_path / "eval.txt"
    text.write_text("Tom loved to play with his ball.\n" * 5)
    assert main(["eval", "--checkpoint", str(checkpoint), "--data", str(text), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= {"loss", "perplexity", "bits_per_byte", "tokens"}
    assert result["perplexity"] == pytest.approx(2.718281828 ** result["loss"], rel=1e-6)
    assert (
        main(["tokenize", "--tokenizer", str(checkpoint), "--text", "hi <|user|>", "--json"]) == 0
    )
    tokens = json.loads(capsys.readouterr().out)
    assert "".join(tokens["pieces"]) == "hi <|user|>"


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


BAD_INPUTS = {
    "missing data file": lambda tmp, ckpt: [
        "train",
        "--data",
        str(tmp / "nope.txt"),
        "--out",
        str(tmp / "run"),
    ],
    "empty data file": lambda tmp, ckpt: [
        "train",
        "--data",
        str(write(tmp / "empty.txt", b"")),
        "--out",
        str(tmp / "run"),
    ],
    "non-utf8 data file": lambda tmp, ckpt: [
        "train",
        "--data",
        str(write(tmp / "latin.txt", "café olé\n".encode("latin-1") * 50)),
        "--tokenizer",
        "char",
        "--out",
        str(tmp / "run"),
    ],
    "unknown preset": lambda tmp, ckpt: [
        "train",
        "--preset",
        "gpt-9",
        "--data",
        str(write(tmp / "a.txt", b"hello world\n" * 100)),
        "--tokenizer",
        "char",
        "--out",
        str(tmp / "run"),
    ],
    "checkpoint missing files": lambda tmp, ckpt: [
        "generate",
        "--checkpoint",
        str(tmp),
        "--prompt",
        "x",
    ],
    "prompt longer than context": lambda tmp, ckpt: [
        "generate",
        "--checkpoint",
        str(ckpt),
        "--prompt",
        "Tom " * 40,
    ],
    "vocab too small": lambda tmp, ckpt: [
        "train",
        "--data",
        str(write(tmp / "a.txt", b"hello world\n" * 100)),
        "--vocab-size",
        "100",
        "--out",
        str(tmp / "run"),
    ],
    "resume without checkpoint": lambda tmp, ckpt: [
        "train",
        "--resume",
        "--data",
        str(write(tmp / "a.txt", b"hello\n" * 100)),
        "--tokenizer",
        "char",
        "--out",
        str(tmp / "run"),
    ],
    "unknown data source": lambda tmp, ckpt: [
        "data",
        "prepare",
        "--data",
        "not-a-thing",
        "--tokenizer",
        str(ckpt),
        "--out",
        str(tmp / "d"),
    ],
    "zero threads": lambda tmp, ckpt: [
        "generate",
        "--checkpoint",
        str(ckpt),
        "--prompt",
        "x",
        "--threads",
        "0",
    ],
    "bad config file": lambda tmp, ckpt: [
        "train",
        "--config",
        str(write(tmp / "c.yaml", b"learning_rate: 3\n")),
        "--out",
        str(tmp / "run"),
    ],
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2(
    case: str, tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    code = main(BAD_INPUTS[case](bad, checkpoint))
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = [
        line
        for line in captured.err.splitlines()
        if line.strip() and "it/s]" not in line and "docs" not in line
    ]
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err
    # nothing half-written: no run or data directory with partial contents
    assert not (bad / "run" / "checkpoints").exists() and not (bad / "d").exists()


def test_threads_flag_sets_torch_threads(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--threads on the inference commands sets PyTorch's process-wide thread count (which the
    kernels and the server's scheduler thread read) before the command's work."""
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    command = ["generate", "--checkpoint", str(checkpoint), "--prompt", "a", "--max-new-tokens"]
    try:
        assert main([*command, "2", "--threads", str(wanted)]) == 0
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(before)
    capsys.readouterr()
    for name in ("generate", "chat", "serve", "bench", "eval"):
        assert "--threads" in PARSERS[name].format_help(), name


def test_bad_input_through_a_real_process(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scratchlm", "train", "--data", str(tmp_path / "missing.txt")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "missing.txt" in result.stderr


@pytest.mark.parametrize("world_size", ["1", "2"])
def test_a_torchrun_rank_exits_without_teardown_and_keeps_its_output(world_size: str) -> None:
    """Under torchrun (WORLD_SIZE > 1) `main` ends the process itself, skipping the teardown
    where FSDP2's leftover gloo threads can abort a finished rank; what it printed arrives and
    its exit code stands. A single process returns as usual (its atexit handlers run)."""
    script = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('teardown ran'))\n"
        "from scratchlm.cli import main\n"
        "code = main(['presets'])\n"
        "sys.exit(main(['info', '--preset', 'no-such-preset']) or code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "WORLD_SIZE": world_size},
    )
    if world_size == "1":
        # the first main() returned; the second's bad preset gives exit 2
        assert result.returncode == 2 and "teardown ran" in result.stdout
    else:
        # the first main() exited the process with 0: buffered stdout (a pipe) arrived whole
        assert result.returncode == 0 and "teardown ran" not in result.stdout
    assert "tiny" in result.stdout and result.stdout.endswith("\n")
    # a flag error (argparse's SystemExit) keeps its exit code either way
    flag_error = script.replace("main(['presets'])", "main(['presets', '--no-such-flag'])")
    result = subprocess.run(
        [sys.executable, "-c", flag_error],
        capture_output=True,
        text=True,
        env={**os.environ, "WORLD_SIZE": world_size},
    )
    assert result.returncode == 2 and "--no-such-flag" in result.stderr
    assert ("teardown ran" in result.stdout) == (world_size == "1")


def test_config_file_and_flags_override(tmp_path: Path) -> None:
    import argparse

    from scratchlm.cli.options import add_train_arguments, resolve_train_config

    config_file = tmp_path / "run.yaml"
    config_file.write_text("batch-size: 4\nlr: 0.002\nmax_steps: 50\n")
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    resolved = resolve_train_config(
        parser.parse_args(["--config", str(config_file), "--lr", "0.01", "--compile"])
    )
    assert (resolved.batch_size, resolved.lr, resolved.max_steps, resolved.compile) == (
        4,
        0.01,
        50,
        True,
    )
    assert resolved.eval_every == 200  # the default where neither file nor flag says
    _ = generate_stories  # the corpus generator is importable from the CLI's package


def resolved_from_file(tmp_path: Path, text: str, *flags: str) -> Any:
    import argparse

    from scratchlm.cli.options import add_train_arguments, resolve_train_config

    config_file = tmp_path / "run.yaml"
    config_file.write_text(text, encoding="utf-8")
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return resolve_train_config(parser.parse_args(["--config", str(config_file), *flags]))


def test_config_file_values_take_their_fields_types(tmp_path: Path) -> None:
    from scratchlm.config import preset_config
    from scratchlm.training.run_config import parse_model_overrides

    # PyYAML reads 3e-4 and 2e6 as strings (YAML 1.1 wants a dot); "yes"/"true" are booleans
    resolved = resolved_from_file(
        tmp_path,
        "lr: 3e-4\nmax_tokens: 2e6\nmax_steps: '1_000'\nwarmup_steps: 10.0\ncompile: 'true'\n"
        "ascii_only: yes\ndropout: none\nearly_stop_patience: null\nmicro_batch: 8\n"
        "max_time: 300\nset: {n_layer: 3, norm_eps: 1e-5, qk_norm: true, n_kv_head: null}\n",
    )
    assert (resolved.lr, resolved.max_tokens, resolved.max_steps) == (3e-4, 2_000_000, 1000)
    assert type(resolved.lr) is float and type(resolved.max_tokens) is int
    assert (resolved.warmup_steps, resolved.compile, resolved.ascii_only) == (10, True, True)
    assert resolved.dropout is None and resolved.early_stop_patience is None
    assert (resolved.micro_batch, resolved.max_time) == ("8", "300")
    overrides = parse_model_overrides(resolved.set)
    assert overrides == {"n_layer": 3, "norm_eps": 1e-5, "qk_norm": True, "n_kv_head": None}
    config = preset_config("tiny", **overrides)
    assert config.norm_eps == 1e-5 and config.n_layer == 3 and config.qk_norm is True
    # --set goes through the same typing: 1e-5 is a float, 30 a float where the field wants one
    assert parse_model_overrides(["norm_eps=1e-5", "logit_softcap=30", "mlp=swiglu"]) == {
        "norm_eps": 1e-5,
        "logit_softcap": 30.0,
        "mlp": "swiglu",
    }
    # JSON files are typed the same way
    json_file = tmp_path / "run.json"
    json_file.write_text('{"lr": "1e-3", "batch-size": "4", "resume": "false"}', encoding="utf-8")
    from scratchlm.training.run_config import read_config_file

    assert read_config_file(str(json_file)) == {"lr": 1e-3, "batch_size": 4, "resume": False}


@pytest.mark.parametrize(
    ("content", "flags", "expected"),
    [
        ("lr: abc\n", [], "run.yaml: lr must be a float or null, got 'abc'"),
        ("batch_size: 4.5\n", [], "run.yaml: batch_size must be an integer, got 4.5"),
        ("compile: maybe\n", [], "run.yaml: compile must be true or false, got 'maybe'"),
        ("seed: [1, 2]\n", [], "run.yaml: seed must be an integer, got [1, 2]"),
        ("lr: .inf\n", [], "run.yaml: lr must be a float or null, got inf"),
        ("learning_rate: 3e-4\n", [], "unknown setting 'learning_rate'; did you mean 'lr'?"),
        ("batchsize: 4\n", [], "unknown setting 'batchsize'; did you mean 'batch_size'?"),
        ("max_steps: 2\n", ["--set", "n_layer=abc"], "n_layer must be an integer, got 'abc'"),
        ("max_steps: 2\n", ["--set", "mlp=gelu2"], "mlp must be one of gelu, gelu_tanh"),
        (
            "max_steps: 2\n",
            ["--set", "n_layers=2"],
            "unknown model field 'n_layers'; did you mean 'n_layer'?",
        ),
        ("set: [qk_norm=perhaps]\n", [], "qk_norm must be true or false, got 'perhaps'"),
        ("max_steps: 2\n", ["--set", "vocab_size=99"], "vocab_size comes from the tokenizer"),
    ],
)
def test_config_values_of_the_wrong_type_are_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    flags: list[str],
    expected: str,
) -> None:
    config_file = tmp_path / "run.yaml"
    config_file.write_text(content, encoding="utf-8")
    data = write(tmp_path / "a.txt", b"hello world\n" * 100)
    arguments = ["train", "--config", str(config_file), "--data", str(data), "--tokenizer", "char"]
    code = main([*arguments, "--out", str(tmp_path / "run"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert expected in err, err
    assert not (tmp_path / "run").exists()


def test_finetune_takes_lora_settings_from_the_config_file(
    tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "sft.jsonl"
    data.write_text(
        "".join(
            json.dumps({"prompt": f"Is the {animal} red?", "completion": "Yes."}) + "\n"
            for animal in ("cat", "dog", "fox", "owl", "bee", "elk")
        ),
        encoding="utf-8",
    )
    recipe = tmp_path / "lora.yaml"
    recipe.write_text(
        f"data: {data}\nlora_rank: '2'\nlora-alpha: 8\nlora_targets: q_proj,v_proj\n"
        "max_steps: 2\nbatch_size: 2\nlr: 1e-3\nsample_tokens: 0\nquiet: true\n",
        encoding="utf-8",
    )
    out = tmp_path / "chat"
    arguments = ["finetune", "--checkpoint", str(checkpoint), "--config", str(recipe)]
    assert main([*arguments, "--lora-alpha", "4", "--out", str(out)]) == 0
    saved = json.loads((out / "best" / "config.json").read_text(encoding="utf-8"))
    # rank and targets from the file, alpha from the flag (flags override the file)
    lora = saved["finetune"]["lora"]
    assert (lora["rank"], lora["alpha"], list(lora["targets"])) == (2, 4.0, ["q_proj", "v_proj"])
    run_config = json.loads((out / "run_config.json").read_text(encoding="utf-8"))
    assert run_config["lr"] == 1e-3 and run_config["max_steps"] == 2
    capsys.readouterr()
    # what finetune does not take is refused, naming the key
    recipe.write_text(f"data: {data}\npreset: small\n", encoding="utf-8")
    assert main([*arguments, "--out", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "preset does not apply to finetune" in err, err
    recipe.write_text(f"data: {data}\nlora_rank: two\n", encoding="utf-8")
    assert main([*arguments, "--out", str(tmp_path / "other")]) == 2
    assert "lora_rank must be an integer, got 'two'" in capsys.readouterr().err


def test_docs_mention_every_train_flag() -> None:
    from scratchlm.training.run_config import TrainConfig

    docs = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text(encoding="utf-8")
    missing = [
        name for name in TrainConfig.field_names() if "--" + name.replace("_", "-") not in docs
    ]
    assert not missing, f"docs/cli.md does not document {missing}"
