"""The shipped recipes in configs/: each parses and resolves to a TrainConfig through the code
`scratchlm train --config` runs (`--print-config`), its model builds from the config alone (meta
device: no memory), its header says what it is for, and its sizes are what the header says:
memory estimates under the stated GPU memory, tokens and sequences per step, and the speedrun
recipes' settings equal to benchmarks/speedrun.py's entries."""

from __future__ import annotations

import importlib.util
import io
import re
import sys
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, cast

import pytest
import torch
import yaml

import scratchlm
from scratchlm.cli import main
from scratchlm.config import ModelConfig
from scratchlm.model import GPT
from scratchlm.tokenizer import Tokenizer
from scratchlm.training.memory import GiB, derive_accumulation, estimate_training_bytes
from scratchlm.training.run_config import TrainConfig
from scratchlm.training.setup import build_model_config

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "configs"
# Room left on the GPU beyond the estimate: the CUDA context, fragmentation, evaluation.
GPU_HEADROOM = 0.9


@dataclass(frozen=True)
class GPURecipe:
    gpus: int
    gpu_gib: float  # memory of each GPU, as the header states it
    estimated_gib: float  # the per-GPU estimate the header quotes
    accumulation: int  # micro-batches per optimizer step
    sequences_per_step: int


GPU_RECIPES = {
    "akane-124m-fineweb-edu": GPURecipe(
        gpus=8, gpu_gib=80, estimated_gib=49, accumulation=2, sequences_per_step=512
    ),
    "kia-1.6b-bf16": GPURecipe(
        gpus=2, gpu_gib=24, estimated_gib=18.6, accumulation=64, sequences_per_step=256
    ),
    "antimatter-300m-fp16": GPURecipe(
        gpus=4, gpu_gib=16, estimated_gib=13.4, accumulation=64, sequences_per_step=512
    ),
}
# recipe -> the benchmarks/speedrun.py entry whose settings it ships
SPEEDRUN_RECIPES = {"shakespeare-char": "best-55s", "tinystories-10m": "tiny-10m"}
RECIPES = sorted(path.stem for path in CONFIGS.glob("*.yaml"))


def resolved(arguments: list[str]) -> TrainConfig:
    """The TrainConfig `scratchlm train ARGUMENTS` would run, read from its --print-config."""
    output = io.StringIO()
    with redirect_stdout(output):
        assert main(["train", *arguments, "--print-config"]) in (0, None)
    return TrainConfig(**yaml.safe_load(output.getvalue()))


def header(name: str) -> str:
    """The recipe's leading comment, as one line of words."""
    lines = (CONFIGS / f"{name}.yaml").read_text(encoding="utf-8").splitlines()
    comments = []
    for line in lines:
        if not line.startswith("#"):
            break
        comments.append(line.lstrip("# "))
    return " ".join(" ".join(comments).split())


def model_config(config: TrainConfig, vocab_size: int) -> ModelConfig:
    """The model the trainer builds for `config`, with a tokenizer of `vocab_size` tokens (a BPE
    tokenizer has --vocab-size; only its size is read)."""
    return build_model_config(config, cast(Tokenizer, SimpleNamespace(vocab_size=vocab_size)))


def test_the_recipes_are_the_documented_ones() -> None:
    assert set(RECIPES) == set(GPU_RECIPES) | set(SPEEDRUN_RECIPES)
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    training = (REPO_ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    for name in RECIPES:
        assert f"configs/{name}.yaml" in readme, f"README's Recipes lacks {name}"
        assert f"configs/{name}.yaml" in training, f"docs/training.md lacks {name}"


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_resolves_and_its_model_builds(name: str) -> None:
    path = CONFIGS / f"{name}.yaml"
    config = resolved(["--config", str(path)])
    config.validate()
    # the Python API reads the file to the same settings
    assert scratchlm.train_config(config=path).to_dict() == {
        **config.to_dict(),
        "config": str(path),
    }
    text = header(name)
    assert text.startswith(f"{name}: "), "the header starts with the recipe's name and purpose"
    assert f"scratchlm train --config configs/{name}.yaml" in text, "the command to run it"
    for part in ("Hardware:", "Data:", "Expect:"):
        assert part in text, f"{name}'s header lacks {part!r}"
    assert config.out == f"runs/{name}"
    vocab = config.vocab_size if config.tokenizer == "bpe" else 67
    model = model_config(config, vocab)
    with torch.device("meta"):
        built = GPT(model)
    assert sum(parameter.numel() for parameter in built.parameters()) == model.n_params


@pytest.mark.parametrize("name", sorted(GPU_RECIPES))
def test_gpu_recipe_fits_the_stated_hardware(name: str) -> None:
    recipe = GPU_RECIPES[name]
    config = resolved(["--config", str(CONFIGS / f"{name}.yaml")])
    text = header(name)
    launch = f"--nproc_per_node={recipe.gpus} -m scratchlm train --config configs/{name}.yaml"
    assert launch in text
    assert f"{recipe.gpus} GPUs with {recipe.gpu_gib:g} GB" in text
    assert config.micro_batch is not None and config.micro_batch.isdigit()
    micro_batch = int(config.micro_batch)
    model = model_config(config, config.vocab_size)
    estimate = estimate_training_bytes(
        model,
        micro_batch,
        precision=config.precision,
        activation_checkpointing=config.activation_checkpointing,
        device_type="cuda",
        shards=recipe.gpus if config.fsdp else 1,
    )["total"]
    assert estimate <= GPU_HEADROOM * recipe.gpu_gib * GiB
    assert abs(estimate / GiB - recipe.estimated_gib) < 0.5
    assert re.search(rf"estimated {recipe.estimated_gib:g} GiB", text)
    # tokens per step as documented
    context = model.context_length
    accumulation = derive_accumulation(config.tokens_per_step, micro_batch, context, recipe.gpus)
    assert accumulation == recipe.accumulation
    assert config.tokens_per_step == recipe.gpus * micro_batch * context * accumulation
    assert recipe.gpus * micro_batch * accumulation == recipe.sequences_per_step
    assert f"{config.tokens_per_step:,} tokens per step" in text


def test_kia_does_not_fit_one_24_gb_gpu_as_its_header_says() -> None:
    config = resolved(["--config", str(CONFIGS / "kia-1.6b-bf16.yaml")])
    model = model_config(config, config.vocab_size)
    alone = estimate_training_bytes(
        model, 1, precision="bf16", activation_checkpointing=True, device_type="cuda"
    )
    assert alone["parameters"] + alone["gradients"] + alone["optimizer"] > 24 * 10**9
    assert alone["total"] > 24 * GiB
    assert round(alone["total"] / GiB, 1) == 35.4
    assert "estimated 35.4 GiB" in header("kia-1.6b-bf16")


def speedrun_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "_speedrun_entries", REPO_ROOT / "benchmarks" / "speedrun.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


@pytest.mark.parametrize("name", sorted(SPEEDRUN_RECIPES))
def test_speedrun_recipe_ships_the_entry_settings(name: str) -> None:
    speedrun = speedrun_module()
    track_name, flags = speedrun.ENTRIES[SPEEDRUN_RECIPES[name]]
    track = speedrun.TRACKS[track_name]
    # the flags speedrun.py gives every run (run_once), less its own bookkeeping
    fixed = ["--eval-tokens", "100000000", "--sample-tokens", "0", "--save-every", "1000000"]
    entry = resolved(["--data", "synthetic", *track.tokenizer, *flags, *fixed])
    recipe = resolved(["--config", str(CONFIGS / f"{name}.yaml")])
    # where the text comes from and where the run goes are the recipe's own
    differ = {"data", "val_data", "out", "val_fraction"}
    mine: dict[str, Any] = {k: v for k, v in recipe.to_dict().items() if k not in differ}
    theirs: dict[str, Any] = {k: v for k, v in entry.to_dict().items() if k not in differ}
    assert mine == theirs
    assert recipe.val_fraction == 0.1  # the shakespeare track's split; tinystories has its own
    assert f"--entries {SPEEDRUN_RECIPES[name]}" in header(name)
