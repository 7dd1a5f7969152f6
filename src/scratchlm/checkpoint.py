"""Checkpoint directories: save and load atomically, and find the right one from a run directory.

A checkpoint directory holds `config.json` (model config, tokenizer kind, chat template version,
training summary), `model.safetensors`, `tokenizer.json`, and for resuming `trainer_state.pt`
(optimizer, scaler, RNG states, data position; loaded with `weights_only=True`, never unpickling
arbitrary objects). A run directory holds `checkpoints/step_NNNNNN/`, `best/` and a `latest` pointer.

Loading trusts nothing it has not checked: the config against `ModelConfig`'s limits, then the
files against the checksums in config.json (first, so that a damaged file is diagnosed as damaged),
then the safetensors header against the shapes the config implies; only then are tensors read and
the model built.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from scratchlm import __version__
from scratchlm.chat_template import CHAT_TEMPLATE_VERSION, check_version, template_version
from scratchlm.config import ModelConfig
from scratchlm.errors import ScratchLMError
from scratchlm.io_utils import atomic_directory, atomic_write_json, atomic_write_text
from scratchlm.model import GPT, build_model
from scratchlm.tokenizer import Tokenizer, unicode_problem

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
TRAINER_STATE_FILE = "trainer_state.pt"
CHECKPOINT_PATTERN = re.compile(r"^step_(\d{6,})$")
# A checkpoint's config.json is a few KB; anything near this is not one of ours.
MAX_CONFIG_BYTES = 16 * 2**20
# The safetensors library's own limit on the JSON header (ours are ~100 bytes per tensor).
MAX_SAFETENSORS_HEADER_BYTES = 100_000_000
SAFETENSORS_DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
# The flag of every command that reads a checkpoint to load a damaged one anyway.
SKIP_CHECKSUMS_FLAG = "--skip-checksums"


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
    state = {name: _plain(tensor) for name, tensor in model.state_dict().items()}
    if model.config.tie_embeddings:
        state.pop("lm_head.weight", None)
    return state


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` as a plain contiguous tensor. A tensor subclass without storage of its own (a
    quantized model's packed weight) is saved as the values it stands for: its clone."""
    tensor = tensor.detach()
    if type(tensor) is not torch.Tensor:
        values = tensor.clone()
        if type(values) is torch.Tensor:
            tensor = values
    return tensor.contiguous()


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
        "chat_template_version": template_version(tokenizer),
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
        # config.json last: a directory with a config.json was written completely.
        (temp_dir / CONFIG_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return target


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


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
        size = config_path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ScratchLMError(
                f"{config_path} is {size:,} bytes, far more than a checkpoint's config "
                f"(at most {MAX_CONFIG_BYTES:,}); the checkpoint is damaged or not a scratchlm one"
            )
        metadata = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScratchLMError(
            f"{checkpoint_dir} has no {CONFIG_FILE}; it is not a complete checkpoint "
            "(pass the run directory to pick its latest complete one)"
        ) from None
    except (ValueError, RecursionError) as error:
        # ValueError: not JSON, not UTF-8, or an integer too long to parse; RecursionError:
        # nesting deeper than the parser allows. None of them is a config that we wrote.
        if isinstance(error, ScratchLMError):
            raise
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)[:200]
        raise ScratchLMError(
            f"{config_path} is not valid JSON ({reason}); the checkpoint is damaged, use an "
            "earlier one"
        ) from None
    if not isinstance(metadata, dict) or "model" not in metadata:
        raise ScratchLMError(
            f"{config_path} has no 'model' section; it is not a scratchlm checkpoint"
        )
    format_version = metadata.get("format_version", 0)
    if not isinstance(format_version, int) or isinstance(format_version, bool):
        raise ScratchLMError(
            f"{config_path}: format_version is not an integer; the checkpoint is damaged or not "
            "a scratchlm one"
        )
    if format_version > FORMAT_VERSION:
        raise ScratchLMError(
            f"{checkpoint_dir} was written by a newer scratchlm (format "
            f"{metadata['format_version']}); upgrade scratchlm to read it"
        )
    return metadata


def checkpoint_config(checkpoint_dir: Path, metadata: dict[str, Any]) -> ModelConfig:
    """The checkpoint's model config, checked against the limits of `ModelConfig` before anything
    is derived from it or allocated; a bad one is a ScratchLMError naming the file."""
    try:
        return ModelConfig.from_dict(metadata["model"])
    except ScratchLMError as error:
        raise ScratchLMError(
            f"{checkpoint_dir / CONFIG_FILE}: {error}; the checkpoint is damaged or not a "
            "scratchlm checkpoint"
        ) from None


def chat_template_version(checkpoint_dir: Path, metadata: dict[str, Any]) -> int:
    """The chat template the checkpoint's model renders conversations with.

    A fine-tuned model (a `finetune` section, merged LoRA adapters, or a model imported from a
    Hugging Face export that carried its template) keeps the version it was trained with, so a v1
    chat model still gets v1. A pretrained model learned no template: it gets
    the current one, since config.json recorded v1 for every checkpoint before v2 existed."""
    training = metadata.get("training")
    # Merged adapters and an imported model (whose export carried its template) keep theirs too.
    kept = isinstance(training, dict) and ("merged_from" in training or "imported_from" in training)
    fine_tuned = bool(metadata.get("finetune")) or kept
    recorded = metadata.get("chat_template_version")
    if not fine_tuned or recorded is None:
        return CHAT_TEMPLATE_VERSION
    return check_version(recorded, str(checkpoint_dir / CONFIG_FILE))


def read_config(checkpoint_dir: Path) -> ModelConfig:
    return checkpoint_config(checkpoint_dir, read_metadata(checkpoint_dir))


def other_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """The other checkpoints of the run a checkpoint belongs to (best/ and step checkpoints,
    newest first); empty for a checkpoint outside a run directory."""
    checkpoint_dir = checkpoint_dir.absolute()
    if checkpoint_dir.name in ("best", "best.old"):
        run_dir = checkpoint_dir.parent
    elif (
        CHECKPOINT_PATTERN.match(checkpoint_dir.name)
        and checkpoint_dir.parent.name == "checkpoints"
    ):
        run_dir = checkpoint_dir.parent.parent
    else:
        return []
    found = [path for path in (run_dir / "best", run_dir / "best.old") if is_checkpoint_dir(path)]
    found += reversed(list_checkpoints(run_dir))
    return [path for path in found if path != checkpoint_dir]


def restore_advice(checkpoint_dir: Path) -> str:
    """What to do about a damaged checkpoint: use or restore another checkpoint of its run, else
    write it again."""
    others = other_checkpoints(checkpoint_dir)
    if others:
        named = ", ".join(_display(path) for path in others[:3])
        return f"pass another checkpoint of the run as --checkpoint ({named}) or restore this one from a copy"
    return "restore it from a copy, or export or train it again"


def _display(path: Path) -> str:
    """A path relative to the working directory when it is below it (as users type them)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def verify_checksums(
    checkpoint_dir: Path, metadata: dict[str, Any], names: tuple[str, ...]
) -> None:
    """Check the files `names` against the SHA-256 that config.json records (each file is hashed
    once); a mismatch is a ScratchLMError naming the file and what to do. Checkpoints written
    before checksums existed have none, and pass."""
    checksums = metadata.get("checksums")
    if checksums is None:
        return
    config_path = checkpoint_dir / CONFIG_FILE
    if not isinstance(checksums, dict):
        raise ScratchLMError(
            f"{config_path}: 'checksums' is not a mapping of file names to SHA-256 digests; the "
            f"checkpoint is damaged: {restore_advice(checkpoint_dir)}, or pass "
            f"{SKIP_CHECKSUMS_FLAG} to load it anyway"
        )
    for name in names:
        if name not in checksums:
            continue
        path = checkpoint_dir / name
        if not path.is_file():
            raise ScratchLMError(
                f"{path} is missing; the checkpoint is incomplete: {restore_advice(checkpoint_dir)}"
            )
        if file_sha256(path) != checksums[name]:
            raise ScratchLMError(
                f"{path} does not match the checksum in its {CONFIG_FILE} (the file is truncated "
                f"or corrupted): {restore_advice(checkpoint_dir)}, or pass {SKIP_CHECKSUMS_FLAG} to "
                "load it anyway"
            )


def read_safetensors_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Tensor name -> (dtype, shape) from a safetensors file's header, without reading the
    tensors; every inconsistency of the header with itself or with the file's size is a
    ScratchLMError naming the file.

    The format: an 8-byte little-endian header length N, N bytes of JSON
    {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}, then the data."""

    def damaged(what: str) -> ScratchLMError:
        return ScratchLMError(
            f"{path}: {what}; the file is damaged or not a safetensors file: "
            f"{restore_advice(path.parent)}"
        )

    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise damaged(f"it is {size} bytes, too short for a safetensors header")
            (header_bytes,) = struct.unpack("<Q", prefix)
            if header_bytes > MAX_SAFETENSORS_HEADER_BYTES:
                raise damaged(
                    f"its header claims {header_bytes:,} bytes, more than the "
                    f"{MAX_SAFETENSORS_HEADER_BYTES:,} a safetensors header may have"
                )
            if 8 + header_bytes > size:
                raise damaged(
                    f"the file is shorter than its header claims ({size:,} bytes, the header "
                    f"alone needs {8 + header_bytes:,})"
                )
            raw = handle.read(header_bytes)
    except FileNotFoundError:
        raise ScratchLMError(
            f"{path} is missing; the checkpoint is incomplete: {restore_advice(path.parent)}"
        ) from None
    except OSError as error:
        raise ScratchLMError(f"cannot read {path} ({error.strerror or error})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        raise damaged("its header is not valid JSON") from None
    if not isinstance(header, dict):
        raise damaged("its header is not a JSON object")
    data_bytes = size - 8 - header_bytes
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            valid = (
                dtype in SAFETENSORS_DTYPE_BYTES
                and isinstance(shape, list)
                and len(shape) <= 8  # ours are 1-D or 2-D; the bound keeps the product cheap
                and all(type(dim) is int and 0 <= dim < 2**63 for dim in shape)
                and all(type(offset) is int and offset >= 0 for offset in (begin, end))
            )
        except (KeyError, TypeError, ValueError):
            valid = False
        if not valid:
            raise damaged(f"the header entry of tensor {_short(name)} is malformed")
        if end - begin != math.prod(shape) * SAFETENSORS_DTYPE_BYTES[dtype]:
            raise damaged(f"tensor {_short(name)} of shape {tuple(shape)} does not fit its offsets")
        if end > data_bytes:
            raise damaged(
                f"the file is shorter than its header claims ({size:,} bytes, tensor "
                f"{_short(name)} ends at byte {8 + header_bytes + end:,})"
            )
        tensors[name] = (dtype, tuple(shape))
    return tensors


def _clip(name: str) -> str:
    """A tensor name from a stranger's header, cut to a readable length."""
    return name if len(name) <= 80 else name[:77] + "..."


def _short(name: str) -> str:
    return repr(_clip(name))


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of the weights `config` implies, as saved (a tied head once), from a
    model on the meta device. The blocks are identical in shape, so one block is built and its
    names repeated: the cost stays the same for any depth."""
    with torch.device("meta"):
        model = GPT(dataclasses.replace(config, n_layer=1))
    shapes: dict[str, tuple[int, ...]] = {}
    for name, tensor in model.state_dict().items():
        if name.startswith("blocks.0."):
            rest = name.removeprefix("blocks.0.")
            for layer in range(config.n_layer):
                shapes[f"blocks.{layer}.{rest}"] = tuple(tensor.shape)
        else:
            shapes[name] = tuple(tensor.shape)
    if config.tie_embeddings:
        shapes.pop("lm_head.weight", None)
    return shapes


def check_weights_file(path: Path, config: ModelConfig) -> None:
    """The tensors a safetensors header announces against those `config` implies: names and
    shapes, before any tensor is read or the model is built."""
    found = {name: entry[1] for name, entry in read_safetensors_header(path).items()}
    check_tensor_shapes(path, expected_shapes(config), found, tied=config.tie_embeddings)


def check_tensor_shapes(
    source: Path,
    expected: dict[str, tuple[int, ...]],
    found: dict[str, tuple[int, ...]],
    *,
    tied: bool,
) -> None:
    """Tensor names and shapes found in a file against those the config implies (a tied head may
    be stored or not); a mismatch means the weights and the config come from different models."""
    if tied:
        expected = {name: shape for name, shape in expected.items() if name != "lm_head.weight"}
        found = {name: shape for name, shape in found.items() if name != "lm_head.weight"}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise ScratchLMError(
            f"{source} does not match its {CONFIG_FILE} (missing {missing[:3]}, unexpected "
            f"{[_clip(name) for name in unexpected[:3]]}); the weights and config come from "
            "different models"
        )
    for name, shape in expected.items():
        if found[name] != shape:
            raise ScratchLMError(
                f"{source}: tensor {name} has shape {found[name]} but {CONFIG_FILE} implies "
                f"{shape}; the weights and config come from different models"
            )


def read_weights(
    checkpoint_dir: Path,
    config: ModelConfig,
    device: torch.device | str = "cpu",
    *,
    verify: bool = True,
    metadata: dict[str, Any] | None = None,
) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors, read only after the checks that make them safe to read: the
    checksums of model.safetensors and tokenizer.json (unless `verify` is False), then the
    safetensors header against the shapes `config` implies."""
    weights_path = checkpoint_dir / WEIGHTS_FILE
    if verify:
        if metadata is None:
            metadata = read_metadata(checkpoint_dir)
        verify_checksums(checkpoint_dir, metadata, (WEIGHTS_FILE, TOKENIZER_FILE))
    check_weights_file(weights_path, config)
    if unicode_problem(str(weights_path)) is not None:
        # Linux paths may hold any bytes; safetensors (Rust) opens only UTF-8 ones.
        raise ScratchLMError(
            f"safetensors cannot open {weights_path}: the path holds bytes that are not UTF-8; "
            "rename the directory (or copy the checkpoint to a UTF-8 path)"
        )
    try:
        return load_file(str(weights_path), device=str(device))
    except (SafetensorError, OSError) as error:
        raise ScratchLMError(
            f"cannot read {weights_path} ({error}); the file is damaged or incomplete: "
            f"{restore_advice(checkpoint_dir)}"
        ) from None


def load_checkpoint(
    path: str | os.PathLike[str],
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    *,
    verify: bool = True,
) -> Checkpoint:
    """Load a model, its config and its tokenizer; every mismatch is a one-line ScratchLMError.

    Nothing is trusted before it is checked: the config against `ModelConfig`'s limits, the files
    against the checksums in config.json (`verify=False` skips only this, for speed or to load a
    damaged checkpoint anyway), and the weights' header against the config's shapes. A run
    directory resolves to its best/ (else latest) checkpoint; if that one is damaged the error
    names it and the run's other checkpoints, and no older one is loaded silently."""
    checkpoint_dir = resolve_checkpoint(path)
    metadata = read_metadata(checkpoint_dir)
    config = checkpoint_config(checkpoint_dir, metadata)
    if verify:
        verify_checksums(checkpoint_dir, metadata, (WEIGHTS_FILE, TOKENIZER_FILE))
    tokenizer = Tokenizer.load(checkpoint_dir / TOKENIZER_FILE)
    tokenizer.chat_template_version = chat_template_version(checkpoint_dir, metadata)
    if tokenizer.vocab_size != config.vocab_size:
        raise ScratchLMError(
            f"{checkpoint_dir}: tokenizer.json has {tokenizer.vocab_size} tokens but the model "
            f"expects {config.vocab_size}; the files come from different runs, restore the "
            "checkpoint's own tokenizer.json"
        )
    weights_path = checkpoint_dir / WEIGHTS_FILE
    state = read_weights(checkpoint_dir, config, device, verify=False)  # verified above
    model = build_model(config, device, initialize=False)
    load_model_state(model, state, source=weights_path)
    if dtype is not None:
        model.to(dtype)
    model.eval()
    return Checkpoint(model, config, tokenizer, metadata, checkpoint_dir)


def load_model_state(model: GPT, state: dict[str, torch.Tensor], *, source: Path) -> None:
    tied = model.config.tie_embeddings
    if tied:
        state.pop("lm_head.weight", None)
    check_tensor_shapes(
        source,
        {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()},
        {name: tuple(tensor.shape) for name, tensor in state.items()},
        tied=tied,
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
