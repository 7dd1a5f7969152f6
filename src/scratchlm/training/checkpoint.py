"""Checkpoint directories: save and load atomically, and find the right one from a run directory.

A checkpoint directory holds `config.json` (model config, tokenizer kind, chat template version,
training summary), `model.safetensors`, `tokenizer.json`, and for resuming `trainer_state.pt`
(optimizer, scaler, RNG states, data position; loaded with `weights_only=True`, never unpickling
arbitrary objects). A run directory holds `checkpoints/step_NNNNNN/`, `best/` and a `latest` pointer.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from scratchlm import __version__
from scratchlm.config import ModelConfig
from scratchlm.errors import ScratchLMError
from scratchlm.io_utils import atomic_directory, atomic_write_json, atomic_write_text
from scratchlm.model import GPT, build_model
from scratchlm.tokenizer import Tokenizer

FORMAT_VERSION = 1
CHAT_TEMPLATE_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
TRAINER_STATE_FILE = "trainer_state.pt"
CHECKPOINT_PATTERN = re.compile(r"^step_(\d{6,})$")


@dataclass
class Checkpoint:
    model: GPT
    config: ModelConfig
    tokenizer: Tokenizer
    metadata: dict[str, Any]
    path: Path


def model_state_for_saving(model: GPT) -> dict[str, torch.Tensor]:
    """The model's tensors, contiguous, with a tied output head stored once (safetensors refuses
    shared memory)."""
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    if model.config.tie_embeddings:
        state.pop("lm_head.weight", None)
    return state


def save_checkpoint(
    directory: str | os.PathLike[str],
    model: GPT,
    tokenizer: Tokenizer,
    *,
    training: dict[str, Any] | None = None,
    trainer_state: dict[str, Any] | None = None,
    replace: bool = False,
    weights: dict[str, torch.Tensor] | None = None,
    extra_files: dict[str, bytes] | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> Path:
    """Write a complete checkpoint directory atomically (built beside it, renamed into place).

    `weights` replaces the model's own state dict (LoRA saves merged weights in the plain layout);
    `extra_files` are written beside them (e.g. adapter.safetensors); `extra_metadata` joins
    config.json."""
    target = Path(directory)
    metadata = {
        "format_version": FORMAT_VERSION,
        "scratchlm_version": __version__,
        "model": model.config.to_dict(),
        "tokenizer": {
            "kind": tokenizer.kind,
            "vocab_size": tokenizer.vocab_size,
            "fingerprint": tokenizer.fingerprint(),
        },
        "chat_template_version": CHAT_TEMPLATE_VERSION,
        "training": training or {},
        **(extra_metadata or {}),
    }
    with atomic_directory(target, replace=replace) as temp_dir:
        state = weights if weights is not None else model_state_for_saving(model)
        save_file(state, str(temp_dir / WEIGHTS_FILE), metadata={"format": "pt"})
        for name, content in (extra_files or {}).items():
            (temp_dir / name).write_bytes(content)
        (temp_dir / TOKENIZER_FILE).write_text(tokenizer.to_json(), encoding="utf-8")
        if trainer_state is not None:
            torch.save(trainer_state, temp_dir / TRAINER_STATE_FILE)
        # Checksums catch what atomic renames cannot: a file truncated or corrupted later (a full
        # disk, a bad copy, a storage fault). `verify_checkpoint` recomputes them.
        metadata["checksums"] = {
            child.name: file_sha256(child) for child in sorted(temp_dir.iterdir())
        }
        _test_pause("SCRATCHLM_TEST_PAUSE_IN_SAVE")
        # config.json last: a directory with a config.json was written completely.
        (temp_dir / CONFIG_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return target


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _test_pause(variable: str) -> None:
    """Test hook: sleep here for $variable seconds, so a crash test can kill a process in the
    middle of a checkpoint write. Unset in normal use."""
    seconds = os.environ.get(variable)
    if seconds:
        time.sleep(float(seconds))


def verify_checkpoint(checkpoint_dir: Path) -> str | None:
    """None if the checkpoint is complete and every file matches the checksum in its
    config.json; otherwise what is wrong, in a few words. Checkpoints written before checksums
    existed are accepted as long as their config.json parses."""
    try:
        metadata = json.loads((checkpoint_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"{CONFIG_FILE} is missing"
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"{CONFIG_FILE} is not valid JSON"
    for name, expected in (metadata.get("checksums") or {}).items():
        path = checkpoint_dir / name
        if not path.is_file():
            return f"{name} is missing"
        if file_sha256(path) != expected:
            return f"{name} does not match its checksum (truncated or corrupted)"
    return None


def latest_valid_checkpoint(
    run_dir: Path, *, require: str | None = None, log: Callable[[str], None] = print
) -> Path | None:
    """The newest checkpoint of a run that passes `verify_checkpoint` (and holds the file
    `require`, if given): the `latest` pointer's target first, then step checkpoints newest
    first. Each damaged one is reported in one line and skipped."""
    candidates: list[Path] = []
    pointed = latest_checkpoint(run_dir)
    if pointed is not None:
        candidates.append(pointed)
    candidates += [path for path in reversed(list_checkpoints(run_dir)) if path not in candidates]
    for index, candidate in enumerate(candidates):
        problem = verify_checkpoint(candidate)
        if problem is None and require is not None and not (candidate / require).is_file():
            problem = f"{require} is missing"
        if problem is None:
            return candidate
        following = candidates[index + 1].name if index + 1 < len(candidates) else None
        log(
            f"checkpoint {candidate} is damaged ({problem}); "
            + (f"using the previous one, {following}" if following else "no earlier one is left")
        )
    return None


def is_checkpoint_dir(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Step checkpoints of a run, oldest first."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    found = [
        child
        for child in folder.iterdir()
        if CHECKPOINT_PATTERN.match(child.name) and is_checkpoint_dir(child)
    ]
    return sorted(found, key=lambda child: int(child.name.split("_")[1]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint the `latest` pointer names, else the newest complete step checkpoint."""
    pointer = run_dir / "latest"
    if pointer.is_file():
        candidate = run_dir / pointer.read_text(encoding="utf-8").strip()
        if is_checkpoint_dir(candidate):
            return candidate
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def set_latest(run_dir: Path, checkpoint: Path) -> None:
    atomic_write_text(run_dir / "latest", str(checkpoint.relative_to(run_dir)) + "\n")


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Remove all but the newest `keep` step checkpoints (the latest one is always kept), and
    the half-built `.step_*.tmp` directories a killed process left behind (called right after a
    save completes, when no other write is in flight)."""
    checkpoints = list_checkpoints(run_dir)
    for old in checkpoints[: max(0, len(checkpoints) - max(1, keep))]:
        shutil.rmtree(old, ignore_errors=True)
    folder = run_dir / "checkpoints"
    for leftover in folder.glob(".step_*.tmp") if folder.is_dir() else []:
        shutil.rmtree(leftover, ignore_errors=True)


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint directory as given, or for a run directory its `best/`, else its latest."""
    candidate = Path(path)
    if not candidate.exists():
        raise ScratchLMError(
            f"checkpoint path {candidate} does not exist; pass a checkpoint directory or the "
            "--out directory of a `scratchlm train` run"
        )
    if is_checkpoint_dir(candidate):
        return candidate
    for best in (candidate / "best", candidate / "best.old"):
        if is_checkpoint_dir(best):
            return best
    latest = latest_checkpoint(candidate)
    if latest is not None:
        return latest
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (candidate / name).is_file()]
    raise ScratchLMError(
        f"{candidate} is neither a checkpoint directory (missing {', '.join(missing)}) nor a run "
        "directory with checkpoints; pass a directory written by `scratchlm train`"
    )


def read_metadata(checkpoint_dir: Path) -> dict[str, Any]:
    config_path = checkpoint_dir / CONFIG_FILE
    try:
        metadata = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScratchLMError(
            f"{checkpoint_dir} has no {CONFIG_FILE}; it is not a complete checkpoint "
            "(pass the run directory to pick its latest complete one)"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ScratchLMError(
            f"{config_path} is not valid JSON ({error}); the checkpoint is damaged, use an earlier one"
        ) from None
    if not isinstance(metadata, dict) or "model" not in metadata:
        raise ScratchLMError(
            f"{config_path} has no 'model' section; it is not a scratchlm checkpoint"
        )
    if metadata.get("format_version", 0) > FORMAT_VERSION:
        raise ScratchLMError(
            f"{checkpoint_dir} was written by a newer scratchlm (format "
            f"{metadata['format_version']}); upgrade scratchlm to read it"
        )
    return metadata


def load_checkpoint(
    path: str | os.PathLike[str],
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> Checkpoint:
    """Load a model, its config and its tokenizer; every mismatch is a one-line ScratchLMError."""
    checkpoint_dir = resolve_checkpoint(path)
    metadata = read_metadata(checkpoint_dir)
    config = ModelConfig.from_dict(metadata["model"])
    tokenizer = Tokenizer.load(checkpoint_dir / TOKENIZER_FILE)
    if tokenizer.vocab_size != config.vocab_size:
        raise ScratchLMError(
            f"{checkpoint_dir}: tokenizer.json has {tokenizer.vocab_size} tokens but the model "
            f"expects {config.vocab_size}; the files come from different runs, restore the "
            "checkpoint's own tokenizer.json"
        )
    weights_path = checkpoint_dir / WEIGHTS_FILE
    try:
        state = load_file(str(weights_path), device=str(device))
    except (SafetensorError, OSError) as error:
        raise ScratchLMError(
            f"cannot read {weights_path} ({error}); the file is damaged or incomplete, use an "
            "earlier checkpoint"
        ) from None
    model = build_model(config, device, initialize=False)
    load_model_state(model, state, source=weights_path)
    if dtype is not None:
        model.to(dtype)
    model.eval()
    return Checkpoint(model, config, tokenizer, metadata, checkpoint_dir)


def load_model_state(model: GPT, state: dict[str, torch.Tensor], *, source: Path) -> None:
    expected = model.state_dict()
    if model.config.tie_embeddings:
        expected.pop("lm_head.weight", None)
        state.pop("lm_head.weight", None)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ScratchLMError(
            f"{source} does not match its config.json (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}); the weights and config come from different models"
        )
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise ScratchLMError(
                f"{source}: tensor {name} has shape {tuple(tensor.shape)} but config.json implies "
                f"{tuple(expected[name].shape)}; the weights and config come from different models"
            )
    model.load_state_dict(state, strict=False)
    if model.config.tie_embeddings:
        model.lm_head.weight = model.token_embedding.weight
    model.reset_buffers()


def load_trainer_state(checkpoint_dir: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    path = checkpoint_dir / TRAINER_STATE_FILE
    if not path.is_file():
        raise ScratchLMError(
            f"{checkpoint_dir} has no {TRAINER_STATE_FILE}, so training cannot resume from it; "
            "resume from a step checkpoint of the run (checkpoints/step_*)"
        )
    try:
        state: dict[str, Any] = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:
        raise ScratchLMError(
            f"cannot read {path} ({type(error).__name__}); the file is damaged, resume from an "
            "earlier checkpoint"
        ) from None
    return state


def write_run_file(run_dir: Path, name: str, content: dict[str, Any]) -> None:
    atomic_write_json(run_dir / name, content)
