"""Shared fixtures: tiny tokenizers trained in-process, tiny model configs, the shared corpora."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from scratchlm.config import ModelConfig, preset_config
from scratchlm.tokenizer import Tokenizer, train_bpe, train_char

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

SAMPLE_TEXT = (
    "Once upon a time, there was a little cat named Tom. Tom loved to play with his red ball.\n"
    "One day, the ball rolled into the garden. Tom was sad. His friend Lily helped him find it.\n"
    "They were happy and played all day. The end.\n"
)


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepared data and trained tokenizers are cached under $SCRATCHLM_CACHE: keep tests hermetic.
    monkeypatch.setenv("SCRATCHLM_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def bpe_tokenizer() -> Tokenizer:
    return train_bpe([SAMPLE_TEXT * 20, "你好世界 😀 café naïve\t  tabs  and  spaces\n"], 400)


@pytest.fixture(scope="session")
def char_tokenizer() -> Tokenizer:
    return train_char([SAMPLE_TEXT])


def tiny_config(preset: str = "tiny", **overrides: object) -> ModelConfig:
    """A few-thousand-parameter version of a preset that keeps its architecture options."""
    base = preset_config(preset)
    assert base.n_kv_head is not None
    kv_ratio = base.n_head // base.n_kv_head
    n_head = 4
    values: dict[str, object] = {
        "n_layer": 2,
        "d_model": 32,
        "n_head": n_head,
        "n_kv_head": max(1, n_head // kv_ratio),
        "head_dim": None,
        "ffn_hidden": 64,
        "context_length": 32,
        "vocab_size": 97,
    }
    values.update(overrides)
    return base.replace(**values)


def skip_without_shared_data(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} is not available (the shared corpora sit beside the repository)")
    return path


def seeded(seed: int = 0) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def save_perturbed_checkpoint(directory: Path, config: ModelConfig, tokenizer: Tokenizer) -> Path:
    """A random checkpoint of `config` whose every weight (norms and biases included) is perturbed,
    so that a misplaced, misnamed or ignored tensor changes the logits and greedy output varies."""
    from scratchlm.checkpoint import save_checkpoint
    from scratchlm.model import build_model

    torch.manual_seed(0)
    model = build_model(config)
    generator = seeded(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return save_checkpoint(directory, model, tokenizer)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount a real tmpfs of the given size ("64k", "8m"): writes past it fail with ENOSPC, as on
    a full disk. Needs root (CI has it); skipped where mounting is not allowed."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        mount_point = tmp_path / f"disk-{len(mounted)}"
        mount_point.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()})")
        mounted.append(mount_point)
        return mount_point

    yield mount
    for mount_point in mounted:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)
