from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from scratchlm.chat_template import CHAT_TEMPLATE_VERSION
from scratchlm.checkpoint import (
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
    set_latest,
)
from scratchlm.errors import ScratchLMError
from scratchlm.model import build_model
from scratchlm.tokenizer import Tokenizer
from tests.conftest import tiny_config


def make_checkpoint(directory: Path, tokenizer: Tokenizer, preset: str = "tiny") -> torch.nn.Module:
    config = tiny_config(preset, vocab_size=tokenizer.vocab_size)
    model = build_model(config)
    save_checkpoint(directory, model, tokenizer, training={"step": 1})
    return model


@pytest.mark.parametrize("preset", ["tiny", "llama-120m", "antimatter-300m"])
def test_save_load_round_trip(tmp_path: Path, bpe_tokenizer: Tokenizer, preset: str) -> None:
    model = make_checkpoint(tmp_path / "ckpt", bpe_tokenizer, preset)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config == model.config
    tokens = torch.randint(0, bpe_tokenizer.vocab_size, (1, 9))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(tokens), model(tokens), atol=0, rtol=0)
    metadata = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert (
        metadata["tokenizer"]["kind"] == "bpe"
        and metadata["chat_template_version"] == CHAT_TEMPLATE_VERSION
    )
    if model.config.tie_embeddings:
        assert (
            loaded.model.lm_head.weight.data_ptr() == loaded.model.token_embedding.weight.data_ptr()
        )


def test_run_directory_resolves_to_best_then_latest(
    tmp_path: Path, bpe_tokenizer: Tokenizer
) -> None:
    run = tmp_path / "run"
    make_checkpoint(run / "checkpoints" / "step_000010", bpe_tokenizer)
    make_checkpoint(run / "checkpoints" / "step_000020", bpe_tokenizer)
    assert resolve_checkpoint(run).name == "step_000020"
    set_latest(run, run / "checkpoints" / "step_000010")
    assert resolve_checkpoint(run).name == "step_000010"
    make_checkpoint(run / "best", bpe_tokenizer)
    assert resolve_checkpoint(run).name == "best"


def test_atomic_save_leaves_previous_checkpoint_whole(
    tmp_path: Path, bpe_tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "best"
    make_checkpoint(target, bpe_tokenizer)
    before = (target / "model.safetensors").read_bytes()
    import scratchlm.checkpoint as checkpoint_module

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module, "save_file", crash)
    with pytest.raises(OSError):
        save_checkpoint(
            target,
            build_model(tiny_config(vocab_size=bpe_tokenizer.vocab_size)),
            bpe_tokenizer,
            replace=True,
        )
    assert (target / "model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["best"]  # no temp directory left behind
    load_checkpoint(target)


@pytest.mark.parametrize(
    "damage", ["no_weights", "no_config", "bad_json", "wrong_shape", "other_tokenizer", "truncated"]
)
def test_damaged_checkpoints_are_one_line_errors(
    tmp_path: Path, bpe_tokenizer: Tokenizer, char_tokenizer: Tokenizer, damage: str
) -> None:
    directory = tmp_path / "ckpt"
    make_checkpoint(directory, bpe_tokenizer)
    if damage == "no_weights":
        (directory / "model.safetensors").unlink()
    elif damage == "no_config":
        (directory / "config.json").unlink()
    elif damage == "bad_json":
        (directory / "config.json").write_text("{")
    elif damage == "wrong_shape":
        metadata = json.loads((directory / "config.json").read_text())
        metadata["model"]["d_model"] = 64
        (directory / "config.json").write_text(json.dumps(metadata))
    elif damage == "other_tokenizer":
        char_tokenizer.save(directory / "tokenizer.json")
    elif damage == "truncated":
        data = (directory / "model.safetensors").read_bytes()
        (directory / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ScratchLMError) as error:
        load_checkpoint(directory)
    assert "\n" not in str(error.value)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ScratchLMError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nope")
    with pytest.raises(ScratchLMError, match="neither a checkpoint"):
        resolve_checkpoint(tmp_path)
