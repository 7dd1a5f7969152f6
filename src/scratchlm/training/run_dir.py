"""The run directory's protocol: what a run writes next to its checkpoints and how it comes back.

- starting: --out must be a directory (or creatable) without a run in it, unless --resume;
- resuming: the run's settings (run_config.json, else the copy in its latest checkpoint) must match
  the flags that decide the model and data; the latest checkpoint that verifies is restored;
- saving: step checkpoints and best/ are written by rank 0 while every rank waits, and a write that
  fails for lack of space is one line on every rank, with the previous checkpoint intact;
- backtracking: a loss spike goes back to the latest checkpoint that verifies, within limits;
- run_config.json: the settings and what they resolved to (learning rate, optimizer, batch, ...).

The trainer (trainer.py) decides when each of these happens; this module (its `Checkpointer`)
holds how.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file
from torch.distributed.fsdp import FSDPModule

from scratchlm.checkpoint import (
    TRAINER_STATE_FILE,
    latest_checkpoint,
    latest_valid_checkpoint,
    load_model_state,
    load_trainer_state,
    model_state_for_saving,
    prune_checkpoints,
    save_checkpoint,
    set_latest,
)
from scratchlm.config import ModelConfig
from scratchlm.errors import ScratchLMError
from scratchlm.io_utils import atomic_write_json, write_error
from scratchlm.model import GPT
from scratchlm.tokenizer import Tokenizer
from scratchlm.training import distributed
from scratchlm.training.hardware import describe_hardware
from scratchlm.training.run_config import TrainConfig, coerce_setting, field_types

RUN_CONFIG_FILE = "run_config.json"


@dataclass
class RunState:
    """Everything about the run's progress that a checkpoint restores (besides model, optimizer,
    loader and RNG)."""

    step: int = 0
    tokens: int = 0
    elapsed: float = 0.0
    best_val_loss: float = math.inf
    finished: bool = False
    best_step: int = 0
    evals_since_best: int = 0  # for --early-stop-patience
    stopped_early: bool = False
    lr_scale: float = 1.0  # multiplied by --spike-lr-factor at each backtrack
    backtracks: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunState:
        known = {item.name for item in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})


# --- starting or resuming -------------------------------------------------------------------------


def check_out_path(run_dir: Path) -> None:
    """--out must be a directory or a path where one can be created."""
    for path in (run_dir, *run_dir.parents):
        if path.is_dir():
            return
        if path.exists():
            where = "" if path == run_dir else f" ({path} is a file)"
            raise ScratchLMError(
                f"--out {run_dir} is not a directory{where}; pass a directory for "
                "--out (it is created if missing) or move the file away"
            )


def find_resume_checkpoint(
    run_dir: Path, config: TrainConfig, warn: Callable[[str], None]
) -> tuple[Path | None, dict[str, Any]]:
    """The checkpoint to resume from (None: start at step 0) and the run config the run saved
    ({} for a new run), after refusing mismatches between the run and the flags."""
    check_out_path(run_dir)
    has_run = run_dir.is_dir() and (
        (run_dir / RUN_CONFIG_FILE).is_file() or (run_dir / "checkpoints").is_dir()
    )
    if not config.resume:
        if has_run:
            raise ScratchLMError(
                f"{run_dir} already holds a training run; pass --resume to continue it, "
                "or choose a new --out"
            )
        return None, {}
    if not has_run:
        raise ScratchLMError(
            f"--resume: {run_dir} has no checkpoint to resume from; drop --resume to "
            "start a new run there, or pass the --out of an earlier run"
        )
    saved = read_saved_run_config(run_dir)
    checkpoint = latest_valid_checkpoint(run_dir, require=TRAINER_STATE_FILE, log=warn)
    if not saved and checkpoint is not None:
        saved = run_config_of(checkpoint)
    for name in ("preset", "set", "context_length", "tokenizer", "vocab_size", "seed"):
        ours = getattr(config, name)
        if (
            name in saved
            and saved[name] != ours
            and not (name == "tokenizer" and Path(str(ours)).name == "tokenizer.json")
        ):
            raise ScratchLMError(
                f"--resume with a different --{name.replace('_', '-')} ({ours!r}) than "
                f"the run was started with ({saved[name]!r}); resume with the original "
                "settings or start a new run with another --out"
            )
    if checkpoint is None:
        # Killed before its first checkpoint was complete: nothing is lost by starting over.
        warn(f"--resume: {run_dir} has no complete checkpoint yet; starting at step 0")
    return checkpoint, saved


def read_saved_run_config(run_dir: Path) -> dict[str, Any]:
    """The run being resumed's run_config.json with its values checked ({} if it has none);
    a damaged one is a one-line error (it decides how the resumed run trains)."""
    path = run_dir / RUN_CONFIG_FILE
    if not path.is_file():
        return {}
    fix = (
        "restore it, or delete it (--resume then reads the settings saved in the latest checkpoint)"
    )
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ScratchLMError(f"{path} is damaged (not valid JSON: {error}); {fix}") from None
    return checked_run_config(saved, str(path), f"the file is damaged: {fix}")


def run_config_of(checkpoint: Path) -> dict[str, Any]:
    """The run config a checkpoint saved (config.json's training.run_config and .resolved):
    what --resume uses when run_config.json is gone."""
    metadata = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    training = metadata.get("training") if isinstance(metadata, dict) else None
    if not isinstance(training, dict) or not isinstance(training.get("run_config"), dict):
        return {}
    saved = {**training["run_config"], "resolved": training.get("resolved") or {}}
    return checked_run_config(
        saved,
        f"{checkpoint / 'config.json'} (training.run_config)",
        "the checkpoint is damaged: restore run_config.json, or start a new run",
    )


def checked_run_config(saved: Any, source: str, fix: str) -> dict[str, Any]:
    """A saved run config (run_config.json, or a checkpoint's copy) with its values coerced to
    their types; anything else is a one-line error ending in `fix`."""
    if not isinstance(saved, dict) or not isinstance(saved.get("resolved", {}), dict):
        raise ScratchLMError(f"{source} is damaged (not a JSON object of settings); {fix}")
    kinds = field_types(TrainConfig)
    resolved = saved.get("resolved", {})
    try:
        for name, value in saved.items():
            if name in kinds:
                saved[name] = coerce_setting(value, kinds[name], key=name, source=source)
        for name, kind in (("learning_rate", float), ("optimizer", str)):
            if name in resolved:
                resolved[name] = coerce_setting(
                    resolved[name], kind, key=f"resolved.{name}", source=source
                )
    except ScratchLMError as error:
        raise ScratchLMError(f"{error}; {fix}") from None
    return saved


def load_resume_state(checkpoint_dir: Path, model_config: ModelConfig) -> dict[str, Any]:
    """A checkpoint's trainer_state, after checking that it describes this model and holds what
    a resume reads."""
    saved_config = json.loads((checkpoint_dir / "config.json").read_text(encoding="utf-8"))
    if ModelConfig.from_dict(saved_config["model"]) != model_config:
        raise ScratchLMError(
            f"--resume: the model flags describe a different model than {checkpoint_dir}; "
            "resume with the original --preset/--set/--context-length"
        )
    state = load_trainer_state(checkpoint_dir, "cpu")
    problem = trainer_state_problem(state)
    if problem is not None:
        raise unusable_state(checkpoint_dir, problem)
    return state


def unusable_state(checkpoint_dir: Path, problem: str) -> ScratchLMError:
    # Its checksum matched: written whole, but not by a trainer whose state this is.
    return ScratchLMError(
        f"cannot resume from {checkpoint_dir}: its {TRAINER_STATE_FILE} {problem}; it "
        "was written by another scratchlm version or program. Move that checkpoint out "
        f"of {checkpoint_dir.parent} to resume from the one before it, or start a new "
        "run with another --out"
    )


def trainer_state_problem(state: Any) -> str | None:
    """What makes a loaded trainer_state unusable for resuming (None: it has what we read)."""
    if not isinstance(state, dict):
        return f"holds a {type(state).__name__}, not the trainer's state"
    required = ("step", "tokens", "elapsed", "best_val_loss", "optimizer", "loader", "rng")
    missing = [key for key in required if key not in state]
    if missing:
        return f"lacks {', '.join(missing)}"
    for key in ("step", "tokens", "elapsed", "best_val_loss"):
        if isinstance(state[key], bool) or not isinstance(state[key], (int, float)):
            return f"holds a {type(state[key]).__name__} as {key}, not a number"
    for key in ("optimizer", "loader", "rng"):
        if not isinstance(state[key], dict):
            return f"holds a {type(state[key]).__name__} as {key}, not a mapping"
    if not isinstance(state["rng"].get("torch"), torch.Tensor):
        return "has no random generator state (rng.torch)"
    if not isinstance(state.get("run") or {}, dict):
        return "holds run progress (run) that is not a mapping"
    return None


# --- random generators ------------------------------------------------------------------------------


def rng_state(context: distributed.DistributedContext, device: torch.device) -> dict[str, Any]:
    """The generator states a checkpoint keeps (every rank must call it: it gathers)."""
    rng: dict[str, Any] = {"torch": torch.get_rng_state()}
    if context.enabled:
        rng["per_rank"] = distributed.gather_objects(torch.get_rng_state(), context)
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return rng


def restore_rng(
    saved: dict[str, Any],
    context: distributed.DistributedContext,
    device: torch.device,
    *,
    seed: int,
    step: int,
) -> None:
    """Each rank gets back its own generator state when the world size is unchanged; with a
    different world size rank 0 takes the saved single stream and the others reseed."""
    rank, world_size = context.rank, context.world_size
    per_rank = saved.get("per_rank")
    if per_rank is not None and len(per_rank) == world_size:
        torch.set_rng_state(per_rank[rank].cpu())
    elif rank == 0:
        torch.set_rng_state(saved["torch"].cpu())
    else:
        torch.manual_seed(seed + 1_000_003 * rank + step)
    if device.type == "cuda" and "cuda" in saved and rank == 0:
        torch.cuda.set_rng_state(saved["cuda"].cpu(), device)


# --- the checkpoints of one trainer -------------------------------------------------------------


class TrainerParts(Protocol):
    """What the checkpointer reads from (and restores into) a trainer: training.trainer.Trainer
    (named by its parts here, so that the trainer's module is the only one importing the other)."""

    config: TrainConfig
    state: RunState
    run_dir: Path
    model: GPT
    model_config: ModelConfig
    tokenizer: Tokenizer
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loader: Any
    distributed: distributed.DistributedContext
    device: torch.device
    precision: str
    fsdp: bool
    is_main: bool
    log: Callable[[str], None]
    warn: Callable[[str], None]
    # what run_config.json records as resolved
    learning_rate: float
    optimizer_kind: str
    micro_batch_choice: str | None
    accumulation: int
    tokens_per_step: int
    max_steps: int | None
    n_params: int
    peak_flops: float | None
    peak_flops_source: str
    flops_per_token: int

    def restore_model(self, checkpoint_dir: Path) -> None: ...
    def weights_for_saving(self) -> dict[str, torch.Tensor] | None: ...
    def extra_checkpoint_files(self) -> dict[str, bytes]: ...
    def checkpoint_metadata(self) -> dict[str, Any]: ...


class Checkpointer:
    """Saves a trainer's step checkpoints, best/ and run_config.json, and restores it from a
    checkpoint. The trainer's hooks decide what a checkpoint holds beyond the plain weights
    (`weights_for_saving`, `extra_checkpoint_files`, `checkpoint_metadata`, `restore_model`:
    fine-tuning's LoRA adapters)."""

    def __init__(self, trainer: TrainerParts) -> None:
        self.trainer = trainer

    def load_weights(self, checkpoint_dir: Path) -> None:
        """A checkpoint's weights into the trainer's model (the plain layout: Trainer.restore_model)."""
        trainer = self.trainer
        device = "cpu" if trainer.fsdp else str(trainer.device)
        state = load_file(str(checkpoint_dir / "model.safetensors"), device=device)
        if trainer.fsdp and isinstance(trainer.model, FSDPModule):
            # every rank reads the full weights and keeps its own shard
            if trainer.model_config.tie_embeddings:
                state["lm_head.weight"] = state["token_embedding.weight"]
            distributed.load_full_model_state(trainer.model, state)
            return
        load_model_state(trainer.model, state, source=checkpoint_dir)

    def backtrack_target(self, loss: float, reason: str) -> Path:
        """The checkpoint a loss spike or NaN goes back to, or the one-line error that ends the
        run (backtracking off, its limit reached, or nothing saved yet)."""
        trainer = self.trainer
        config, state = trainer.config, trainer.state
        spiked_at = state.step + 1
        if config.spike_factor <= 0:
            raise ScratchLMError(
                f"training diverged: the loss is {loss} at step {spiked_at}; lower --lr, raise "
                "--warmup-steps, use --precision fp32, or turn backtracking on with --spike-factor 3"
            )
        if state.backtracks >= config.max_backtracks:
            raise ScratchLMError(
                f"training diverged: a loss {reason} at step {spiked_at} (loss {loss:.4g}) after "
                f"{state.backtracks} backtracks; lower --lr, raise --warmup-steps, or allow "
                "more with --max-backtracks"
            )
        checkpoint = latest_valid_checkpoint(
            trainer.run_dir, require=TRAINER_STATE_FILE, log=trainer.warn
        )
        if checkpoint is None:
            raise ScratchLMError(
                f"a loss {reason} at step {spiked_at} but no checkpoint to backtrack to in "
                f"{trainer.run_dir}; lower --lr or raise --warmup-steps"
            )
        return checkpoint

    def restore(
        self, checkpoint_dir: Path, *, model_restored: bool = False, restore_loader: bool = True
    ) -> None:
        """Load a checkpoint's model (unless `model_restored`), optimizer, scaler, data position
        (unless not `restore_loader`: a backtrack skips the batches since), RNG and progress."""
        trainer = self.trainer
        if not model_restored:
            trainer.restore_model(checkpoint_dir)
        state = load_resume_state(checkpoint_dir, trainer.model_config)
        try:
            distributed.load_full_optimizer_state(
                trainer.model, trainer.optimizer, state["optimizer"]
            )
            if state.get("scaler"):
                trainer.scaler.load_state_dict(state["scaler"])
            if restore_loader:
                trainer.loader.load_state_dict(state["loader"])
            restore_rng(
                state["rng"],
                trainer.distributed,
                trainer.device,
                seed=trainer.config.seed,
                step=int(state["step"]),
            )
            trainer.state = RunState.from_dict(state.get("run") or {})
            # checkpoints from before RunState was saved whole
            trainer.state.step = int(state["step"])
            trainer.state.tokens = int(state["tokens"])
            trainer.state.elapsed = float(state["elapsed"])
            trainer.state.best_val_loss = float(state["best_val_loss"])
            trainer.state.finished = bool(state.get("finished", False))
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as error:
            detail = str(error).splitlines()[0][:200] if str(error) else ""
            raise unusable_state(
                checkpoint_dir,
                f"does not fit this run ({type(error).__name__}"
                + (f": {detail}" if detail else "")
                + ")",
            ) from None
        trainer.log(
            f"resuming {trainer.run_dir} from {checkpoint_dir.name} (step {trainer.state.step})"
        )

    def trainer_state(self) -> dict[str, Any]:
        """Everything but the weights; every rank must call it (FSDP gathers the optimizer)."""
        trainer = self.trainer
        rng = rng_state(trainer.distributed, trainer.device)
        return {
            "step": trainer.state.step,
            "tokens": trainer.state.tokens,
            "elapsed": trainer.state.elapsed,
            "best_val_loss": trainer.state.best_val_loss,
            "finished": trainer.state.finished,
            "run": trainer.state.to_dict(),
            "optimizer": distributed.full_optimizer_state(trainer.model, trainer.optimizer),
            "scaler": trainer.scaler.state_dict() if trainer.scaler.is_enabled() else {},
            "loader": trainer.loader.state_dict(),
            "rng": rng,
            "world_size": trainer.distributed.world_size,
        }

    def weights(self) -> dict[str, torch.Tensor] | None:
        """The weights to save (every rank must call it: FSDP gathers its shards; ranks other
        than 0 get an empty dict)."""
        trainer = self.trainer
        if trainer.fsdp:
            state = distributed.full_model_state(trainer.model)
            if trainer.model_config.tie_embeddings:
                state.pop("lm_head.weight", None)
            return {name: tensor.contiguous() for name, tensor in state.items()}
        custom = trainer.weights_for_saving()
        return custom if custom is not None else model_state_for_saving(trainer.model)

    def training_summary(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """What a checkpoint's config.json says about the training (the run config included:
        --resume reads it when run_config.json is gone)."""
        trainer = self.trainer
        return {
            "step": trainer.state.step,
            "tokens": trainer.state.tokens,
            "elapsed_s": round(trainer.state.elapsed, 3),
            "best_val_loss": _finite_or_none(trainer.state.best_val_loss),
            "precision": trainer.precision,
            "run_config": trainer.config.to_dict(),
            # what --resume must keep although defaults may change (run_config.json has it too)
            "resolved": {
                "learning_rate": trainer.learning_rate,
                "optimizer": trainer.optimizer_kind,
            },
            **(extra or {}),
        }

    def save(self) -> Path:
        """A step checkpoint (collective: every rank calls it; rank 0 writes). A failed write
        (a full disk) is a ScratchLMError on every rank; the checkpoints before stay intact."""
        trainer = self.trainer
        target = trainer.run_dir / "checkpoints" / f"step_{trainer.state.step:06d}"
        weights = self.weights()
        trainer_state = self.trainer_state()
        previous = latest_checkpoint(trainer.run_dir) if trainer.is_main else None

        def write() -> None:
            save_checkpoint(
                target,
                trainer.model,
                trainer.tokenizer,
                training=self.training_summary(),
                trainer_state=trainer_state,
                replace=True,
                weights=weights,
                extra_files=trainer.extra_checkpoint_files(),
                extra_metadata=trainer.checkpoint_metadata(),
            )
            set_latest(trainer.run_dir, target)
            prune_checkpoints(trainer.run_dir, trainer.config.keep_checkpoints)

        save_on_main(target, previous, write, [weights, trainer_state], trainer.distributed)
        return target

    def save_best(self, evaluation: dict[str, float]) -> None:
        trainer = self.trainer
        target = trainer.run_dir / "best"
        weights = self.weights()
        previous = target if (target / "config.json").is_file() else None

        def write() -> None:
            save_checkpoint(
                target,
                trainer.model,
                trainer.tokenizer,
                training=self.training_summary({"val": evaluation}),
                replace=True,
                weights=weights,
                extra_metadata=trainer.checkpoint_metadata(),
            )

        save_on_main(target, previous, write, [weights], trainer.distributed)

    def write_run_config(self) -> None:
        """run_config.json: the settings and what they resolved to."""
        trainer = self.trainer
        parallelism = "fsdp" if trainer.fsdp else "ddp" if trainer.distributed.enabled else "none"
        resolved = {
            "model": trainer.model_config.to_dict(),
            "learning_rate": trainer.learning_rate,
            "optimizer": trainer.optimizer_kind,
            "batch_size": trainer.config.batch_size,
            "micro_batch_choice": trainer.micro_batch_choice,
            "accumulation": trainer.accumulation,
            "tokens_per_step": trainer.tokens_per_step,
            "max_steps": trainer.max_steps,
            "device": str(trainer.device),
            "precision": trainer.precision,
            "n_params": trainer.n_params,
            "world_size": trainer.distributed.world_size,
            "parallelism": parallelism,
            "hardware": describe_hardware(trainer.device),
            "peak_flops": trainer.peak_flops,
            "peak_flops_source": trainer.peak_flops_source,
            "flops_per_token": trainer.flops_per_token,
        }
        atomic_write_json(
            trainer.run_dir / RUN_CONFIG_FILE, {**trainer.config.to_dict(), "resolved": resolved}
        )


def _finite_or_none(value: float) -> float | None:
    """The best validation loss as saved: None (JSON null) before any evaluation."""
    return None if math.isinf(value) else value


# --- saving, and what a full disk looks like ----------------------------------------------------------


def save_on_main(
    target: Path,
    previous: Path | None,
    write: Callable[[], None],
    contents: list[Any],
    context: distributed.DistributedContext,
) -> None:
    """Rank 0 runs `write` (a checkpoint to `target`) while the others wait. A failed write (a
    full disk) is a ScratchLMError on every rank; `previous` stays intact."""
    problem: str | None = None
    if context.is_main:
        try:
            write()
        except Exception as error:
            problem = save_failure(target, previous, error, contents)
            if problem is None:
                raise
    # Also the barrier: nobody reads a checkpoint before it is complete.
    problem = distributed.broadcast_object(problem, context)
    if problem is not None:
        raise ScratchLMError(problem)


# errno values that mean "this disk cannot take the write": the fix is space or another --out.
WRITE_FAILURES = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def write_failure_advice(number: int | None) -> str:
    if number in (errno.ENOSPC, errno.EDQUOT):
        return "free space or point --out elsewhere"
    return "point --out at a writable directory"


def run_file_write_failure(error: OSError, run_dir: Path) -> ScratchLMError | None:
    """The one-line error for a failed write of a run file (metrics, run_config.json, the loss
    chart), or None when `error` is not the disk refusing a write."""
    if error.errno not in WRITE_FAILURES:
        return None
    return ScratchLMError(
        f"could not write {error.filename or run_dir}: {error.strerror}; "
        f"{write_failure_advice(error.errno)}; the checkpoints saved so far are intact"
    )


def tensor_bytes(value: Any) -> int:
    """The bytes of every tensor inside nested dicts/lists (what a checkpoint write needs)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(item) for item in value)
    return 0


def save_failure(
    target: Path, previous: Path | None, error: BaseException, contents: list[Any]
) -> str | None:
    """The one-line message for a checkpoint write that failed with `error`, or None when the
    error is not one of writing (a bug: let it raise).

    The writers report a full disk differently: Python as OSError(ENOSPC), safetensors as
    SafetensorError('... I/O error: ... (os error 28)'), torch.save as a RuntimeError that says
    only 'unexpected pos'; for the last the free space decides."""
    problem = write_error(error)
    if problem is None and not isinstance(error, OSError):
        # torch.save says only 'unexpected pos': the free space decides.
        existing = next(path for path in (target, *target.parents) if path.exists())
        if shutil.disk_usage(existing).free < tensor_bytes(contents):
            problem = errno.ENOSPC, os.strerror(errno.ENOSPC)
    if problem is None:
        return None
    number, reason = problem
    kept = (
        f"the previous checkpoint {previous} is intact"
        if previous is not None
        else "no checkpoint had been saved before"
    )
    return (
        f"could not save the checkpoint to {target}: {reason}; "
        f"{write_failure_advice(number)}; {kept}"
    )
