"""Checkpoints are checked before they are trusted: the config against limits, the weights' header
against the config, the files against their checksums, on every load (inference included)."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import scratchlm.checkpoint as checkpoint_module
from scratchlm.checkpoint import (
    expected_shapes,
    load_checkpoint,
    save_checkpoint,
    set_latest,
)
from scratchlm.cli import main
from scratchlm.config import PRESETS
from scratchlm.errors import ScratchLMError
from scratchlm.model import GPT, build_model
from scratchlm.tokenizer import Tokenizer
from tests.conftest import tiny_config


def make_checkpoint(directory: Path, tokenizer: Tokenizer) -> Path:
    torch.manual_seed(0)
    config = tiny_config("tiny", vocab_size=tokenizer.vocab_size, context_length=16)
    return save_checkpoint(directory, build_model(config), tokenizer, training={"step": 1})


@pytest.fixture
def checkpoint(tmp_path: Path, bpe_tokenizer: Tokenizer) -> Path:
    return make_checkpoint(tmp_path / "ckpt", bpe_tokenizer)


def edit_config(directory: Path, **model_fields: Any) -> None:
    path = directory / "config.json"
    metadata = json.loads(path.read_text())
    metadata["model"].update(model_fields)
    path.write_text(json.dumps(metadata))


def drop_checksums(directory: Path) -> None:
    """What a checkpoint written before checksums existed looks like."""
    path = directory / "config.json"
    metadata = json.loads(path.read_text())
    del metadata["checksums"]
    path.write_text(json.dumps(metadata))


def header_length(path: Path) -> int:
    return int(struct.unpack("<Q", path.read_bytes()[:8])[0])


def flip_data_byte(directory: Path) -> None:
    """Flip the lowest bit of the first tensor byte: the least significant mantissa bit of one
    float32, so the weights still compute (a damage that would load silently)."""
    path = directory / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8 + header_length(path)] ^= 0x01
    path.write_bytes(bytes(data))


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


# --- the config against limits, before anything is allocated -----------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_layer", 100_000),
        ("d_model", 10**9),
        ("context_length", 10**9),
        ("vocab_size", 10**12),
        ("n_head", "many"),
        ("rope_theta", float("inf")),
    ],
)
def test_absurd_config_is_one_line_naming_file_and_field(
    checkpoint: Path, field: str, value: Any
) -> None:
    edit_config(checkpoint, **{field: value})
    with pytest.raises(ScratchLMError) as error:
        load_checkpoint(checkpoint)
    message = str(error.value)
    assert "\n" not in message
    assert str(checkpoint / "config.json") in message and field in message
    assert "damaged or not a scratchlm checkpoint" in message


def test_hundred_thousand_layers_fail_through_the_cli(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before the limits this built 100,000 layers (minutes and gigabytes); now nothing is
    # allocated: the config check runs before any size is derived from it.
    edit_config(checkpoint, n_layer=100_000)
    assert main(["generate", "--checkpoint", str(checkpoint)]) == 2
    assert "n_layer must be in [1, 1024] (got 100000)" in one_line_error(capsys)


def test_config_json_that_no_parser_should_trust(checkpoint: Path) -> None:
    path = checkpoint / "config.json"
    metadata = json.loads(path.read_text())
    text = json.dumps(metadata).replace('"n_layer": 2', '"n_layer": ' + "9" * 5000)
    path.write_text(text)  # an integer longer than Python will parse
    with pytest.raises(ScratchLMError, match="is not valid JSON"):
        load_checkpoint(checkpoint)
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ScratchLMError, match="nested too deeply"):
        load_checkpoint(checkpoint)
    metadata["model"] = [1, 2]
    path.write_text(json.dumps(metadata))
    with pytest.raises(ScratchLMError, match="must be a JSON object"):
        load_checkpoint(checkpoint)


# --- the weights' header against the config, before tensors are read ---------------------------


@pytest.fixture
def no_tensor_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the weights are read or the model is built: the header check must come
    first."""

    def forbidden(*args: object, **kwargs: object) -> Any:
        raise AssertionError("tensors were read or the model was built before the header check")

    monkeypatch.setattr(checkpoint_module, "load_file", forbidden)
    monkeypatch.setattr(checkpoint_module, "build_model", forbidden)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"n_layer": 3}, r"missing \['blocks\.2\."),
        ({"n_layer": 1}, r"unexpected \['blocks\.1\."),
        ({"ffn_hidden": 48}, r"tensor blocks\.0\.mlp\.\w+\.weight has shape"),
        ({"d_model": 64, "head_dim": None}, r"has shape .* but config\.json implies"),
    ],
)
def test_config_disagreeing_with_header_fails_before_tensors_are_read(
    checkpoint: Path, no_tensor_reads: None, change: dict[str, Any], expected: str
) -> None:
    edit_config(checkpoint, **change)
    with pytest.raises(ScratchLMError, match=expected) as error:
        load_checkpoint(checkpoint)
    assert str(checkpoint / "model.safetensors") in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("not_json", "its header is not valid JSON"),
        ("huge_header", "more than the 100,000,000 a safetensors header may have"),
        ("header_past_end", "the header alone needs"),
        ("truncated_data", "shorter than its header claims"),
        ("tiny_file", "too short for a safetensors header"),
        ("bad_entry", "header entry of tensor 'token_embedding.weight' is malformed"),
    ],
)
def test_damaged_header_is_one_line_naming_the_file(
    checkpoint: Path, no_tensor_reads: None, damage: str, expected: str
) -> None:
    drop_checksums(checkpoint)  # the header checks hold for old checkpoints too
    path = checkpoint / "model.safetensors"
    data = path.read_bytes()
    length = header_length(path)
    header = json.loads(data[8 : 8 + length])
    if damage == "not_json":
        data = data[:8] + b"\xff" * length + data[8 + length :]
    elif damage == "huge_header":
        data = struct.pack("<Q", 2**40) + data[8:]
    elif damage == "header_past_end":
        data = struct.pack("<Q", len(data)) + data[8:]
    elif damage == "truncated_data":
        data = data[: len(data) - 4]
    elif damage == "tiny_file":
        data = data[:5]
    elif damage == "bad_entry":
        header["token_embedding.weight"]["shape"] = ["a", 1]
        raw = json.dumps(header).encode()
        data = struct.pack("<Q", len(raw)) + raw + data[8 + length :]
    path.write_bytes(data)
    with pytest.raises(ScratchLMError, match=expected) as error:
        load_checkpoint(checkpoint)
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_expected_shapes_equal_a_fully_built_model(preset: str) -> None:
    config = tiny_config(preset, n_layer=3)
    with torch.device("meta"):
        model = GPT(config)
    built = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    if config.tie_embeddings:
        built.pop("lm_head.weight")
    assert expected_shapes(config) == built


# --- checksums on every load --------------------------------------------------------------------


def test_flipped_byte_fails_generate_and_the_skip_flag_loads_it(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flip_data_byte(checkpoint)
    argv = ["generate", "--checkpoint", str(checkpoint), "--prompt", "Once"]
    argv += ["--max-new-tokens", "3", "--temperature", "0"]
    # The real process: exit code 2 and one line on stderr, no traceback.
    result = subprocess.run(
        [sys.executable, "-m", "scratchlm", *argv], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"{checkpoint / 'model.safetensors'} does not match the checksum" in result.stderr
    assert "--skip-checksums" in result.stderr
    assert main([*argv, "--skip-checksums"]) == 0
    assert capsys.readouterr().out.startswith("Once")


@pytest.mark.parametrize(
    "command",
    [
        ["chat"],
        ["serve", "--port", "0"],
        ["eval", "--data", "DATA"],
        ["eval", "--prompts", "DATA"],
        ["bench", "--num-runs", "1", "--new-tokens", "2", "--prompt-tokens", "2"],
        ["export", "hf", "--out", "OUT"],
        ["export", "gguf", "--out", "OUT.gguf"],
        ["export", "ollama", "--out", "OUT"],
    ],
    ids=" ".join,
)
def test_every_loading_command_verifies_checksums(
    checkpoint: Path, tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    flip_data_byte(checkpoint)
    (tmp_path / "data.txt").write_text("Tom loved to play with his ball.\n")
    parts = [
        part.replace("DATA", str(tmp_path / "data.txt")).replace("OUT", str(tmp_path / "out"))
        for part in command
    ]
    head = 2 if command[0] == "export" else 1
    argv = [*parts[:head], "--checkpoint", str(checkpoint), *parts[head:]]
    assert main(argv) == 2
    assert "model.safetensors does not match the checksum" in one_line_error(capsys)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.gguf").exists()


def test_chat_and_export_load_with_the_skip_flag(
    checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    flip_data_byte(checkpoint)
    monkeypatch.setattr(sys, "stdin", io.StringIO("quit\n"))
    assert main(["chat", "--checkpoint", str(checkpoint), "--plain", "--skip-checksums"]) == 0
    out = tmp_path / "hf"
    assert (
        main(
            ["export", "hf", "--checkpoint", str(checkpoint), "--out", str(out), "--skip-checksums"]
        )
        == 0
    )
    assert (out / "config.json").is_file()


def test_finetune_verifies_its_base_model(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flip_data_byte(checkpoint)
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"prompt": "Hi", "completion": "Hello"}) + "\n")
    argv = ["finetune", "--checkpoint", str(checkpoint), "--data", str(data)]
    argv += ["--out", str(tmp_path / "run"), "--max-steps", "1", "--quiet"]
    assert main(argv) == 2
    assert "model.safetensors does not match the checksum" in one_line_error(capsys)


def test_old_checkpoint_without_checksums_loads(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = load_checkpoint(checkpoint).model.state_dict()
    drop_checksums(checkpoint)
    loaded = load_checkpoint(checkpoint)
    for name, tensor in loaded.model.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], atol=0, rtol=0)
    argv = ["generate", "--checkpoint", str(checkpoint), "--prompt", "Once"]
    assert main([*argv, "--max-new-tokens", "2", "--temperature", "0"]) == 0


def test_each_file_is_hashed_once_per_load(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed: list[str] = []
    real = checkpoint_module.file_sha256

    def counting(path: Path) -> str:
        hashed.append(path.name)
        return real(path)

    monkeypatch.setattr(checkpoint_module, "file_sha256", counting)
    load_checkpoint(checkpoint)
    assert sorted(hashed) == ["model.safetensors", "tokenizer.json"]
    hashed.clear()
    load_checkpoint(checkpoint, verify=False)
    assert hashed == []


def test_damaged_best_of_a_run_is_named_with_the_other_checkpoints(
    tmp_path: Path, bpe_tokenizer: Tokenizer
) -> None:
    run = tmp_path / "run"
    for step in (10, 20):
        make_checkpoint(run / "checkpoints" / f"step_{step:06d}", bpe_tokenizer)
    set_latest(run, run / "checkpoints" / "step_000020")
    make_checkpoint(run / "best", bpe_tokenizer)
    flip_data_byte(run / "best")
    with pytest.raises(ScratchLMError) as error:
        load_checkpoint(run)  # no silent fall-back to an older checkpoint for inference
    message = str(error.value)
    assert message.startswith(f"{run / 'best' / 'model.safetensors'} does not match the checksum")
    assert "checkpoints/step_000020, " in message and "checkpoints/step_000010" in message
    assert message.index("step_000020") < message.index("step_000010")  # newest first


def test_import_hf_refuses_an_absurd_config(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hf = tmp_path / "hf"
    assert main(["export", "hf", "--checkpoint", str(checkpoint), "--out", str(hf)]) == 0
    config = json.loads((hf / "config.json").read_text())
    config["num_hidden_layers"] = 100_000
    (hf / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert main(["import", "hf", "--model", str(hf), "--out", str(tmp_path / "imported")]) == 2
    assert "n_layer must be in [1, 1024] (got 100000)" in one_line_error(capsys)
