"""The training loop: data -> model -> AdamW with a schedule -> evaluations, samples, checkpoints.

`train(TrainConfig)` runs one run directory from start to finish (or resumes it). Everything that
can be restored is saved in each step checkpoint's trainer_state.pt (optimizer, scaler, RNG, data
position, step, tokens, elapsed time), so a resumed run continues exactly where it stopped: on CPU,
N steps + resume + N steps gives bit-identical weights to 2N steps, and a run killed with SIGKILL
at any moment and resumed ends bit-identical too (it redoes the steps after its last checkpoint).

Under torchrun the same loop runs data parallel (DDP, or FSDP2 with --fsdp; see distributed.py):
every rank reads its own slice of each global batch, only rank 0 logs and writes files, and
checkpoints are world-size independent. Faults are handled in the loop: a loss spike or NaN
backtracks to the last checkpoint with a lower learning rate (`--spike-factor`), a stalled
validation loss stops the run (`--early-stop-patience`), and running out of memory names the flag
to change.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import math
import os
import re
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.distributed.fsdp import FSDPModule
from tqdm import tqdm

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
from scratchlm.config import ModelConfig, model_flops_per_token, preset_config
from scratchlm.data import (
    CleaningOptions,
    TokenShards,
    TokenWindowLoader,
    default_cache_root,
    iter_eval_batches,
    prepare_cached,
    sample_text,
    source_identity,
)
from scratchlm.device import autocast_context, select_device, select_precision
from scratchlm.errors import ScratchLMError
from scratchlm.evaluation.perplexity import evaluate_batches
from scratchlm.inference.engine import Engine
from scratchlm.inference.sampling import SamplingSettings
from scratchlm.io_utils import atomic_write_json
from scratchlm.model import GPT, build_model, count_parameters
from scratchlm.tokenizer import END_OF_TURN_TOKEN, Tokenizer, train_bpe, train_char
from scratchlm.training import distributed
from scratchlm.training.hardware import (
    describe_hardware,
    mfu,
    peak_flops,
)
from scratchlm.training.memory import (
    apply_activation_checkpointing,
    auto_micro_batch,
    derive_accumulation,
    is_out_of_memory,
    out_of_memory_message,
)
from scratchlm.training.metrics import MetricsLogger, plot_loss_curve
from scratchlm.training.optim import build_optimizer, learning_rate_at
from scratchlm.training.run_config import (
    TrainConfig,
    coerce_setting,
    field_types,
    parse_duration,
    parse_model_overrides,
)
from scratchlm.training.signals import StopSignals, signal_name
from scratchlm.training.token_weights import cached_token_weights, weighted_cross_entropy

DEFAULT_MAX_STEPS = 2000
RUN_CONFIG_FILE = "run_config.json"


def default_learning_rate(n_params: int, optimizer: str = "adamw") -> float:
    """The peak learning rate when --lr is not given. Smaller models tolerate larger steps (GPT-3
    paper table; nanoGPT's 1e-3 for tiny models); under 5M parameters 3e-3 trains faster than
    1e-3 with AdamW. Under 50M parameters Muon takes twice AdamW's rate: although its updates
    are scaled to AdamW's RMS, 2x won at equal tokens on `tiny` (both speedrun tracks) and on
    `small` (TinyStories), and 1x lost to AdamW (docs/speedrun.md). Larger models, not measured
    here, keep AdamW's rate with Muon, as Moonshot found at scale."""
    if n_params < 5_000_000:
        adamw = 3e-3
    elif n_params < 50_000_000:
        adamw = 1e-3
    elif n_params < 400_000_000:
        adamw = 6e-4
    else:
        adamw = 3e-4
    return 2 * adamw if optimizer == "muon" and n_params < 50_000_000 else adamw


# --- tokenizer and data ---------------------------------------------------------------------------


def obtain_tokenizer(config: TrainConfig, log: Callable[[str], None]) -> Tokenizer:
    """Load --tokenizer PATH, or train a char/BPE tokenizer on a sample of --data (cached)."""
    if config.tokenizer not in ("char", "bpe"):
        return Tokenizer.load(config.tokenizer)
    if (Path(config.data) / "manifest.json").is_file():
        raise ScratchLMError(
            f"{config.data} is already tokenized; pass --tokenizer with the tokenizer.json it was "
            "prepared with instead of char/bpe"
        )
    key_text = json.dumps(
        [
            source_identity(config.data),
            config.tokenizer,
            config.vocab_size,
            config.tokenizer_sample_chars,
            config.text_field,
            config.ascii_only,
        ],
        sort_keys=True,
    )
    key = hashlib.sha256(key_text.encode()).hexdigest()[:20]
    cached = default_cache_root() / "tokenizers" / f"{config.tokenizer}-{key}.json"
    if cached.is_file():
        log(f"tokenizer: reusing cached {config.tokenizer} tokenizer {cached}")
        return Tokenizer.load(cached)
    log(
        f"tokenizer: training {config.tokenizer} on up to {config.tokenizer_sample_chars:,} chars of {config.data}"
    )
    texts = sample_text(
        config.data,
        max_chars=config.tokenizer_sample_chars,
        text_field=config.text_field,
        cleaning=CleaningOptions(ascii_only=config.ascii_only),
        progress=not config.quiet,
    )
    tokenizer = (
        train_bpe(texts, config.vocab_size) if config.tokenizer == "bpe" else train_char(texts)
    )
    tokenizer.save(cached)
    return tokenizer


def prepare_data(config: TrainConfig, tokenizer: Tokenizer, log: Callable[[str], None]) -> Path:
    log(f"data: preparing {config.data} (cached under {default_cache_root()})")
    data_dir = prepare_cached(
        config.data,
        tokenizer,
        cache_root=default_cache_root(),
        val_source=config.val_data,
        val_fraction=config.val_fraction,
        text_field=config.text_field,
        cleaning=CleaningOptions(ascii_only=config.ascii_only),
        num_workers=config.data_workers,
        progress=not config.quiet,
    )
    manifest = json.loads((data_dir / "manifest.json").read_text(encoding="utf-8"))
    if manifest.get("tokenizer_fingerprint") not in (None, tokenizer.fingerprint()):
        raise ScratchLMError(
            f"{data_dir} was tokenized with a different tokenizer; pass --tokenizer with the "
            "tokenizer.json it was prepared with, or prepare the data again"
        )
    return data_dir


# --- the run --------------------------------------------------------------------------------------


@dataclass
class TrainingResult:
    run_dir: Path
    checkpoint: Path
    steps: int
    tokens: int
    elapsed_s: float
    final_train_loss: float
    best_val_loss: float | None
    tokens_per_s: float
    # The signal (SIGTERM, SIGUSR1) that stopped the run after saving `checkpoint`; None when the
    # run finished, paused or stopped early.
    stop_signal: int | None = None


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


class _NoMetrics:
    """What ranks other than 0 log to: nothing."""

    def log(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def build_model_config(config: TrainConfig, tokenizer: Tokenizer) -> ModelConfig:
    overrides = parse_model_overrides(config.set)
    if config.context_length is not None:
        overrides["context_length"] = config.context_length
    if config.dropout is not None:
        overrides["dropout"] = config.dropout
    overrides["vocab_size"] = tokenizer.vocab_size
    return preset_config(config.preset, **overrides)


class Trainer:
    def __init__(self, config: TrainConfig, *, log: Callable[[str], None] = print) -> None:
        config.validate()
        self.config = config
        self.distributed, device_name = distributed.init_distributed(config.device)
        self.is_main = self.distributed.is_main
        self.log = log if not config.quiet and self.is_main else (lambda message: None)
        # What --quiet must not hide (it silences progress, not safety): damaged checkpoints
        # skipped, a run stopped by a signal.
        self.warn = log if self.is_main else (lambda message: None)
        self.saved_run_config: dict[str, Any] = {}
        self.run_dir = Path(config.out or f"runs/{config.preset}")
        self.device = select_device(device_name)
        self.precision = select_precision(config.precision, self.device)
        if config.threads:
            torch.set_num_threads(config.threads)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if config.fsdp and not self.distributed.enabled:
            self.log("note: --fsdp shards over torchrun's processes; one process trains unsharded")
        self.fsdp = config.fsdp and self.distributed.enabled
        # Test hook: (step, micro-batch loss) -> the loss to use (crash and spike tests).
        self.loss_hook: Callable[[int, torch.Tensor], torch.Tensor] | None = None

        resume_from = self._check_run_directory()
        # Rank 0 trains the tokenizer and tokenizes the data first (both cached on disk); the
        # other ranks wait, then find the caches.
        with distributed.main_process_first(self.distributed):
            self.tokenizer = self.load_tokenizer(resume_from)
            self.model_config = self.make_model_config()
        # Every rank at once, before any of them builds a model: ranks sharing a host's RAM read
        # it together, and they agree on one micro-batch.
        self.micro_batch_choice = self._fit_micro_batch()
        with distributed.main_process_first(self.distributed):
            self.accumulation = derive_accumulation(
                config.tokens_per_step,
                config.batch_size,
                self.model_config.context_length,
                self.distributed.world_size,
            )
            self.token_weights: torch.Tensor | None = None
            self.setup_data()
        self.tokens_per_step = (
            config.batch_size
            * self.model_config.context_length
            * self.accumulation
            * self.distributed.world_size
        )
        torch.manual_seed(config.seed)
        model = self.make_model()  # identical on every rank: same seed
        self.n_params = count_parameters(model)
        self.model: GPT = model
        if resume_from is not None:
            self.restore_model(resume_from)  # before wrapping: a plain module loads plainly
        if config.activation_checkpointing:
            apply_activation_checkpointing(model)
        self.wrapped: Any = model  # what the training forward calls: the model, DDP or FSDP
        if self.fsdp:
            distributed.shard_model(model, self.precision)
        elif self.distributed.enabled:
            self.wrapped = distributed.wrap_data_parallel(model, self.distributed, self.device)
        if self.distributed.rank > 0:
            # Dropout masks must differ between ranks; rank 0 keeps the single-process stream.
            torch.manual_seed(config.seed + 1_000_003 * self.distributed.rank)
        self.optimizer_kind = self._resolve_optimizer(resumed=resume_from is not None)
        self.learning_rate = self._resolve_learning_rate(resumed=resume_from is not None)
        self.optimizer = build_optimizer(
            self.model,
            learning_rate=self.learning_rate,
            weight_decay=config.weight_decay,
            betas=(config.beta1, config.beta2),
            device=self.device,
            kind=self.optimizer_kind,
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.autocast = autocast_context(self.precision, self.device)
        self.max_steps = config.max_steps
        if config.max_steps is None and config.max_tokens is None and config.max_time is None:
            self.max_steps = DEFAULT_MAX_STEPS
            self.log(
                f"no --max-steps/--max-tokens/--max-time given: training {DEFAULT_MAX_STEPS} steps"
            )
        self.max_time = parse_duration(config.max_time) if config.max_time is not None else None
        self.state = RunState()
        self.recent_losses: deque[float] = deque(maxlen=config.spike_window)
        self.forward: Callable[[torch.Tensor], torch.Tensor] = self.wrapped
        if config.compile:
            self.forward = torch.compile(self.wrapped)
        self.flops_per_token = model_flops_per_token(self.model_config)
        self.peak_flops, self.peak_flops_source = peak_flops(self.device, self.precision)
        if resume_from is not None:
            self._restore(resume_from, model_restored=True)

    def _saved_resolution(self) -> dict[str, Any]:
        """What the run being resumed resolved at its start (run_config.json's "resolved")."""
        return dict(self.saved_run_config.get("resolved", {}))

    def _read_saved_run_config(self) -> dict[str, Any]:
        """The run being resumed's run_config.json with its values checked ({} if it has none);
        a damaged one is a one-line error (it decides how the resumed run trains)."""
        path = self.run_dir / RUN_CONFIG_FILE
        if not path.is_file():
            return {}
        fix = (
            "restore it, or delete it (--resume then reads the settings saved in the latest "
            "checkpoint)"
        )
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ScratchLMError(f"{path} is damaged (not valid JSON: {error}); {fix}") from None
        return checked_run_config(saved, str(path), f"the file is damaged: {fix}")

    def _run_config_of(self, checkpoint: Path) -> dict[str, Any]:
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

    def _check_out_path(self) -> None:
        """--out must be a directory or a path where one can be created."""
        for path in (self.run_dir, *self.run_dir.parents):
            if path.is_dir():
                return
            if path.exists():
                where = "" if path == self.run_dir else f" ({path} is a file)"
                raise ScratchLMError(
                    f"--out {self.run_dir} is not a directory{where}; pass a directory for "
                    "--out (it is created if missing) or move the file away"
                )

    def _resolve_learning_rate(self, *, resumed: bool) -> float:
        """--lr, else the run's saved rate when resuming (defaults may have changed since it
        started), else `default_learning_rate` for the model's size and optimizer."""
        if self.config.lr:
            return float(self.config.lr)
        saved = self._saved_resolution().get("learning_rate") if resumed else None
        if saved:
            return float(saved)
        return default_learning_rate(self.n_params, self.optimizer_kind)

    def _resolve_optimizer(self, *, resumed: bool) -> str:
        """--optimizer auto picks `default_optimizer()`; a resumed run keeps the optimizer it
        was started with (runs from before the choice existed used AdamW)."""
        chosen = self.config.optimizer
        if resumed:
            started_with = self._saved_resolution().get("optimizer", "adamw")
            if chosen not in ("auto", started_with):
                raise ScratchLMError(
                    f"--resume with --optimizer {chosen}, but the run was started with "
                    f"{started_with}; resume with --optimizer {started_with} or start a new run"
                )
            return str(started_with)
        return self.default_optimizer() if chosen == "auto" else chosen

    def _fit_micro_batch(self) -> str | None:
        """Resolve --micro-batch (a number, or auto: the largest that fits) into batch_size;
        returns how auto chose (None for a number). Runs on every rank together."""
        config = self.config
        if config.micro_batch is None:
            return None
        if str(config.micro_batch) != "auto":
            config.batch_size = int(config.micro_batch)
            return None
        context = self.model_config.context_length
        per_step = config.tokens_per_step or config.batch_size * context
        ceiling = max(1, per_step // (context * self.distributed.world_size))
        probe = self._memory_probe if self.device.type == "cuda" else None
        chosen, explanation = auto_micro_batch(
            self.model_config,
            self.device,
            precision=self.precision,
            activation_checkpointing=config.activation_checkpointing,
            max_micro_batch=ceiling,
            probe=probe,
            shards=self.distributed.world_size if self.fsdp else 1,
            ranks_per_host=distributed.local_world_size(self.distributed),
        )
        # Every rank must train the same micro-batch (the loader's windows and the gradient
        # average assume it): the smallest any rank can hold.
        choices = distributed.gather_objects((chosen, explanation), self.distributed)
        chosen, explanation = min(choices, key=lambda choice: choice[0])
        if len({choice[0] for choice in choices}) > 1:
            explanation += f" (the smallest of the ranks' {[choice[0] for choice in choices]})"
        config.batch_size = chosen
        if config.tokens_per_step is None:
            # auto picks the micro-batch; the step keeps the tokens --batch-size asked for
            config.tokens_per_step = per_step
        self.log(f"micro-batch auto: {explanation}")
        return explanation

    def _memory_probe(self, batch_size: int) -> None:
        """One forward and backward at `batch_size` on the GPU (raises torch.OutOfMemoryError)."""
        model = self.make_model()
        if self.config.activation_checkpointing:
            apply_activation_checkpointing(model)
        context = self.model_config.context_length
        inputs = torch.zeros((batch_size, context), dtype=torch.long, device=self.device)
        # AdamW's two fp32 moments per parameter are allocated at the first step: hold their
        # bytes too, or a model that passes the probe runs out of memory at its first update.
        # DDP adds its gradient buckets, one more fp32 copy of the gradients.
        states = 8 + (4 if self.distributed.enabled else 0)
        reserved = torch.empty(
            states * count_parameters(model), dtype=torch.uint8, device=self.device
        )
        try:
            for _ in range(2):  # the second pass runs with the first's gradients alive
                with autocast_context(self.precision, self.device):
                    logits = model(inputs)
                    loss = F.cross_entropy(logits.float().flatten(0, 1), inputs.flatten())
                loss.backward()
        finally:
            del reserved
            del model
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    # --- the parts a specialized trainer (fine-tuning) overrides ------------------------------
    def load_tokenizer(self, resume_from: Path | None) -> Tokenizer:
        if resume_from is not None:
            return Tokenizer.load(self.run_dir / "tokenizer.json")
        return obtain_tokenizer(self.config, self.log)

    def make_model_config(self) -> ModelConfig:
        return build_model_config(self.config, self.tokenizer)

    def setup_data(self) -> None:
        """Sets `self.loader` (next_batch / state_dict / load_state_dict), the validation data,
        and `self.token_weights` (None unless --token-weighting)."""
        data_dir = prepare_data(self.config, self.tokenizer, self.log)
        self.train_shards = TokenShards.open(data_dir, "train")
        self.val_shards = TokenShards.open(data_dir, "val")
        self.loader: Any = TokenWindowLoader(
            self.train_shards,
            context_length=self.model_config.context_length,
            batch_size=self.config.batch_size,
            seed=self.config.seed,
            rank=self.distributed.rank,
            world_size=self.distributed.world_size,
            accumulation=self.accumulation,
        )
        self.data_summary = (
            f"train {self.train_shards.num_tokens:,} tokens, val {self.val_shards.num_tokens:,}"
        )
        if self.config.token_weighting == "inverse-freq" and self.config.token_weighting_power > 0:
            assert self.model_config.padded_vocab_size is not None
            self.token_weights = cached_token_weights(
                data_dir,
                self.train_shards,
                self.model_config.padded_vocab_size,
                self.config.token_weighting_power,
            ).to(self.device)

    def eval_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter_eval_batches(
            self.val_shards,
            context_length=self.model_config.context_length,
            batch_size=self.config.batch_size,
            max_tokens=self.config.eval_tokens,
        )

    def val_bytes_per_token(self) -> float | None:
        if self.val_shards.bytes and self.val_shards.num_tokens:
            return float(self.val_shards.bytes / self.val_shards.num_tokens)
        return None

    def default_sample_prompt(self) -> list[int]:
        """The start of the validation text: a real context, whatever the corpus looks like (a
        lone EOS would make a one-document corpus predict EOS again)."""
        length = min(16, self.model_config.context_length // 4, self.val_shards.num_tokens)
        return [int(token) for token in self.val_shards.read(0, length)] or [self.tokenizer.eos_id]

    def make_model(self) -> GPT:
        return build_model(self.model_config, self.device)

    def default_optimizer(self) -> str:
        """--optimizer auto: Muon (fewer tokens to the same loss, docs/speedrun.md), except
        under FSDP, which shards the matrices Muon must see whole."""
        return "adamw" if self.fsdp else "muon"

    def restore_model(self, checkpoint_dir: Path) -> None:
        from safetensors.torch import load_file

        device = "cpu" if self.fsdp else str(self.device)
        state = load_file(str(checkpoint_dir / "model.safetensors"), device=device)
        if self.fsdp and isinstance(self.model, FSDPModule):
            # every rank reads the full weights and keeps its own shard
            if self.model_config.tie_embeddings:
                state["lm_head.weight"] = state["token_embedding.weight"]
            distributed.load_full_model_state(self.model, state)
            return
        load_model_state(self.model, state, source=checkpoint_dir)

    def weights_for_saving(self) -> dict[str, torch.Tensor] | None:
        """None: the model's own state dict."""
        return None

    def extra_checkpoint_files(self) -> dict[str, bytes]:
        return {}

    def checkpoint_metadata(self) -> dict[str, Any]:
        return {}

    # --- run directory ------------------------------------------------------------------------
    def _check_run_directory(self) -> Path | None:
        """The checkpoint to resume from (None: start at step 0), after refusing mismatches."""
        self._check_out_path()
        has_run = self.run_dir.is_dir() and (
            (self.run_dir / RUN_CONFIG_FILE).is_file() or (self.run_dir / "checkpoints").is_dir()
        )
        if not self.config.resume:
            if has_run:
                raise ScratchLMError(
                    f"{self.run_dir} already holds a training run; pass --resume to continue it, "
                    "or choose a new --out"
                )
            return None
        if not has_run:
            raise ScratchLMError(
                f"--resume: {self.run_dir} has no checkpoint to resume from; drop --resume to "
                "start a new run there, or pass the --out of an earlier run"
            )
        saved = self._read_saved_run_config()
        checkpoint = latest_valid_checkpoint(
            self.run_dir, require=TRAINER_STATE_FILE, log=self.warn
        )
        if not saved and checkpoint is not None:
            saved = self._run_config_of(checkpoint)
        self.saved_run_config = saved
        if saved:
            for name in ("preset", "set", "context_length", "tokenizer", "vocab_size", "seed"):
                ours = getattr(self.config, name)
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
            self.warn(
                f"--resume: {self.run_dir} has no complete checkpoint yet; starting at step 0"
            )
        return checkpoint

    def _restore(
        self, checkpoint_dir: Path, *, model_restored: bool = False, restore_loader: bool = True
    ) -> None:
        if not model_restored:
            self.restore_model(checkpoint_dir)
        saved_config = json.loads((checkpoint_dir / "config.json").read_text(encoding="utf-8"))[
            "model"
        ]
        if ModelConfig.from_dict(saved_config) != self.model_config:
            raise ScratchLMError(
                f"--resume: the model flags describe a different model than {checkpoint_dir}; "
                "resume with the original --preset/--set/--context-length"
            )
        state = load_trainer_state(checkpoint_dir, "cpu")

        def unusable(problem: str) -> ScratchLMError:
            # Its checksum matched: written whole, but not by a trainer whose state this is.
            return ScratchLMError(
                f"cannot resume from {checkpoint_dir}: its {TRAINER_STATE_FILE} {problem}; it "
                "was written by another scratchlm version or program. Move that checkpoint out "
                f"of {checkpoint_dir.parent} to resume from the one before it, or start a new "
                "run with another --out"
            )

        problem = trainer_state_problem(state)
        if problem is not None:
            raise unusable(problem)
        try:
            distributed.load_full_optimizer_state(self.model, self.optimizer, state["optimizer"])
            if state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            if restore_loader:
                self.loader.load_state_dict(state["loader"])
            self._restore_rng(state["rng"], step=int(state["step"]))
            self.state = RunState.from_dict(state.get("run") or {})
            # checkpoints from before RunState was saved whole
            self.state.step = int(state["step"])
            self.state.tokens = int(state["tokens"])
            self.state.elapsed = float(state["elapsed"])
            self.state.best_val_loss = float(state["best_val_loss"])
            self.state.finished = bool(state.get("finished", False))
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as error:
            detail = str(error).splitlines()[0][:200] if str(error) else ""
            raise unusable(
                f"does not fit this run ({type(error).__name__}"
                + (f": {detail}" if detail else "")
                + ")"
            ) from None
        self.log(f"resuming {self.run_dir} from {checkpoint_dir.name} (step {self.state.step})")

    def _restore_rng(self, saved: dict[str, Any], *, step: int) -> None:
        """Each rank gets back its own generator state when the world size is unchanged; with a
        different world size rank 0 takes the saved single stream and the others reseed."""
        rank, world_size = self.distributed.rank, self.distributed.world_size
        per_rank = saved.get("per_rank")
        if per_rank is not None and len(per_rank) == world_size:
            torch.set_rng_state(per_rank[rank].cpu())
        elif rank == 0:
            torch.set_rng_state(saved["torch"].cpu())
        else:
            torch.manual_seed(self.config.seed + 1_000_003 * rank + step)
        if self.device.type == "cuda" and "cuda" in saved and rank == 0:
            torch.cuda.set_rng_state(saved["cuda"].cpu(), self.device)

    def _trainer_state(self) -> dict[str, Any]:
        """Everything but the weights; every rank must call it (FSDP gathers the optimizer)."""
        rng: dict[str, Any] = {"torch": torch.get_rng_state()}
        if self.distributed.enabled:
            rng["per_rank"] = distributed.gather_objects(torch.get_rng_state(), self.distributed)
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "step": self.state.step,
            "tokens": self.state.tokens,
            "elapsed": self.state.elapsed,
            "best_val_loss": self.state.best_val_loss,
            "finished": self.state.finished,
            "run": self.state.to_dict(),
            "optimizer": distributed.full_optimizer_state(self.model, self.optimizer),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "loader": self.loader.state_dict(),
            "rng": rng,
            "world_size": self.distributed.world_size,
        }

    def _weights(self) -> dict[str, torch.Tensor] | None:
        """The weights to save (every rank must call it: FSDP gathers its shards; ranks other
        than 0 get an empty dict)."""
        if self.fsdp:
            state = distributed.full_model_state(self.model)
            if self.model_config.tie_embeddings:
                state.pop("lm_head.weight", None)
            return {name: tensor.contiguous() for name, tensor in state.items()}
        custom = self.weights_for_saving()
        return custom if custom is not None else model_state_for_saving(self.model)

    def _training_summary(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "step": self.state.step,
            "tokens": self.state.tokens,
            "elapsed_s": round(self.state.elapsed, 3),
            "best_val_loss": None
            if math.isinf(self.state.best_val_loss)
            else self.state.best_val_loss,
            "precision": self.precision,
            "run_config": self.config.to_dict(),
            # what --resume must keep although defaults may change (run_config.json has it too)
            "resolved": {"learning_rate": self.learning_rate, "optimizer": self.optimizer_kind},
            **(extra or {}),
        }

    def save(self) -> Path:
        """A step checkpoint (collective: every rank calls it; rank 0 writes). A failed write
        (a full disk) is a ScratchLMError on every rank; the checkpoints before stay intact."""
        target = self.run_dir / "checkpoints" / f"step_{self.state.step:06d}"
        weights = self._weights()
        trainer_state = self._trainer_state()
        problem: str | None = None
        if self.is_main:
            previous = latest_checkpoint(self.run_dir)
            try:
                save_checkpoint(
                    target,
                    self.model,
                    self.tokenizer,
                    training=self._training_summary(),
                    trainer_state=trainer_state,
                    replace=True,
                    weights=weights,
                    extra_files=self.extra_checkpoint_files(),
                    extra_metadata=self.checkpoint_metadata(),
                )
                set_latest(self.run_dir, target)
            except Exception as error:
                problem = save_failure(target, previous, error, [weights, trainer_state])
                if problem is None:
                    raise
            else:
                prune_checkpoints(self.run_dir, self.config.keep_checkpoints)
        # Also the barrier: nobody reads a checkpoint before it is complete.
        problem = distributed.broadcast_object(problem, self.distributed)
        if problem is not None:
            raise ScratchLMError(problem)
        return target

    def save_best(self, evaluation: dict[str, float]) -> None:
        weights = self._weights()
        problem: str | None = None
        if self.is_main:
            target = self.run_dir / "best"
            previous = target if (target / "config.json").is_file() else None
            try:
                save_checkpoint(
                    target,
                    self.model,
                    self.tokenizer,
                    training=self._training_summary({"val": evaluation}),
                    replace=True,
                    weights=weights,
                    extra_metadata=self.checkpoint_metadata(),
                )
            except Exception as error:
                problem = save_failure(target, previous, error, [weights])
                if problem is None:
                    raise
        problem = distributed.broadcast_object(problem, self.distributed)
        if problem is not None:
            raise ScratchLMError(problem)

    # --- evaluation and samples ---------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        batches = self.eval_batches()
        result = evaluate_batches(self.model, batches, device=self.device, autocast=self.autocast)
        metrics = {"val_loss": result.loss, "val_perplexity": result.perplexity}
        bytes_per_token = self.val_bytes_per_token()
        if bytes_per_token:
            # bytes per token of the whole split, applied to the evaluated part
            bytes_evaluated = result.tokens * bytes_per_token
            metrics["val_bits_per_byte"] = (
                result.loss * result.tokens / (math.log(2) * bytes_evaluated)
            )
        return metrics

    def sample(self) -> str:
        if self.config.sample_tokens <= 0:
            return ""
        prompt = self.config.sample_prompt
        if prompt:
            prompt_ids = self.tokenizer.encode(prompt)
        else:
            prompt_ids = self.default_sample_prompt()
            prompt = self.tokenizer.decode(prompt_ids, skip_special=True)
        was_training = self.model.training
        self.model.eval()
        engine = Engine(self.model)
        with self.autocast:
            ids = self._generate_sample(engine, prompt_ids)
        self.model.train(was_training)
        return prompt + self.tokenizer.decode(ids, skip_special=True)

    def _generate_sample(self, engine: Engine, prompt_ids: list[int]) -> list[int]:
        return list(
            engine.generate(
                prompt_ids,
                max_new_tokens=min(
                    self.config.sample_tokens, self.model_config.context_length - len(prompt_ids)
                ),
                sampling=SamplingSettings(temperature=0.8, top_k=50),
                seed=self.config.seed,
                stop_ids=frozenset(
                    {self.tokenizer.eos_id, self.tokenizer.special_id(END_OF_TURN_TOKEN)}
                ),
                truncate=True,
            )
        )

    # --- the loop -----------------------------------------------------------------------------
    def progress(self) -> float:
        fractions = [0.0]
        if self.max_steps:
            fractions.append(self.state.step / self.max_steps)
        if self.config.max_tokens:
            fractions.append(self.state.tokens / self.config.max_tokens)
        if self.max_time:
            fractions.append(self.state.elapsed / self.max_time)
        return max(fractions)

    def train_step(self, learning_rate: float) -> tuple[float, float, str | None]:
        """One optimizer step over `accumulation` micro-batches on every rank.

        Returns (mean loss over ranks and micro-batches, gradient norm, spike reason). When the
        loss or gradient is a spike ("spike", "nan") the step is not applied: the gradients are
        dropped and the caller backtracks."""
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        total_loss = torch.zeros((), device=self.device)
        vocab = self.model_config.padded_vocab_size
        assert vocab is not None
        for micro_step in range(self.accumulation):
            inputs, targets = self.loader.next_batch()
            inputs = inputs.to(self.device, non_blocking=True)
            targets = targets.to(self.device, non_blocking=True)
            last = micro_step == self.accumulation - 1
            # Only the last micro-batch all-reduces gradients; the others accumulate locally.
            with distributed.gradient_sync(self.wrapped, self.fsdp, last):
                with self.autocast:
                    logits = self.forward(inputs)  # (B, T, padded_vocab)
                    # ignore_index: fine-tuning masks prompt and padding positions with -100
                    loss = weighted_cross_entropy(
                        logits.float().view(-1, vocab), targets.view(-1), self.token_weights
                    )
                if self.loss_hook is not None:
                    loss = self.loss_hook(self.state.step + 1, loss)
                self.scaler.scale(loss / self.accumulation).backward()
            total_loss += loss.detach()
        mean_loss = float(distributed.all_reduce_mean(total_loss, self.distributed))
        mean_loss /= self.accumulation
        reason = self._spike_reason(mean_loss)
        grad_norm = float("nan")
        if reason is None:
            self.scaler.unscale_(self.optimizer)
            clip = self.config.grad_clip if self.config.grad_clip > 0 else math.inf
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            full_norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
            grad_norm = float(full_norm)
            if not math.isfinite(grad_norm) and not self.scaler.is_enabled():
                reason = "nan"  # a finite loss with a NaN gradient would poison the weights
        if reason is None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.recent_losses.append(mean_loss)
        self.optimizer.zero_grad(set_to_none=True)
        return mean_loss, grad_norm, reason

    def _spike_reason(self, loss: float) -> str | None:
        """ "nan" for a NaN/inf loss, "spike" for one above --spike-factor x its moving average
        (once the average holds a few steps), else None."""
        if not math.isfinite(loss):
            return "nan"
        if self.config.spike_factor <= 0 or len(self.recent_losses) < min(
            10, self.config.spike_window
        ):
            return None
        average = sum(self.recent_losses) / len(self.recent_losses)
        return "spike" if loss > self.config.spike_factor * average else None

    def _backtrack(self, loss: float, reason: str, metrics: Any) -> None:
        """Reload the last checkpoint, keep the data position (so the offending batches are
        skipped), and lower the learning rate."""
        spiked_at = self.state.step + 1
        average = sum(self.recent_losses) / len(self.recent_losses) if self.recent_losses else None
        if self.config.spike_factor <= 0:
            raise ScratchLMError(
                f"training diverged: the loss is {loss} at step {spiked_at}; lower --lr, raise "
                "--warmup-steps, use --precision fp32, or turn backtracking on with --spike-factor 3"
            )
        if self.state.backtracks >= self.config.max_backtracks:
            raise ScratchLMError(
                f"training diverged: a loss {reason} at step {spiked_at} (loss {loss:.4g}) after "
                f"{self.state.backtracks} backtracks; lower --lr, raise --warmup-steps, or allow "
                "more with --max-backtracks"
            )
        checkpoint = latest_valid_checkpoint(
            self.run_dir, require=TRAINER_STATE_FILE, log=self.warn
        )
        if checkpoint is None:
            raise ScratchLMError(
                f"a loss {reason} at step {spiked_at} but no checkpoint to backtrack to in "
                f"{self.run_dir}; lower --lr or raise --warmup-steps"
            )
        carried = (self.state.backtracks + 1, self.state.lr_scale * self.config.spike_lr_factor)
        self._restore(checkpoint, restore_loader=False)
        self.state.backtracks, self.state.lr_scale = carried
        event = {
            "kind": "backtrack",
            "step": spiked_at,
            "restored_step": self.state.step,
            "loss": loss if math.isfinite(loss) else str(loss),
            "moving_average": average,
            "reason": reason,
            "lr_scale": self.state.lr_scale,
            "backtracks": self.state.backtracks,
        }
        metrics.log(event)
        self.log(
            f"backtrack {self.state.backtracks}/{self.config.max_backtracks}: loss {reason} at "
            f"step {spiked_at} ({loss:.4g}"
            + (f" vs moving average {average:.4g}" if average is not None else "")
            + f"); reloaded {checkpoint.name}, learning rate x{self.state.lr_scale:g}, "
            "skipping the batches since"
        )

    def _write_run_config(self) -> None:
        atomic_write_json(
            self.run_dir / RUN_CONFIG_FILE,
            {
                **self.config.to_dict(),
                "resolved": {
                    "model": self.model_config.to_dict(),
                    "learning_rate": self.learning_rate,
                    "optimizer": self.optimizer_kind,
                    "batch_size": self.config.batch_size,
                    "micro_batch_choice": self.micro_batch_choice,
                    "accumulation": self.accumulation,
                    "tokens_per_step": self.tokens_per_step,
                    "max_steps": self.max_steps,
                    "device": str(self.device),
                    "precision": self.precision,
                    "n_params": self.n_params,
                    "world_size": self.distributed.world_size,
                    "parallelism": "fsdp"
                    if self.fsdp
                    else "ddp"
                    if self.distributed.enabled
                    else "none",
                    "hardware": describe_hardware(self.device),
                    "peak_flops": self.peak_flops,
                    "peak_flops_source": self.peak_flops_source,
                    "flops_per_token": self.flops_per_token,
                },
            },
        )

    def run(self) -> TrainingResult:
        try:
            return self._run()
        except OSError as error:
            # A full (or read-only) disk while writing metrics, run_config.json, the loss chart:
            # every checkpoint write is atomic, so what was saved is whole.
            if error.errno not in WRITE_FAILURES:
                raise
            raise ScratchLMError(
                f"could not write {error.filename or self.run_dir}: {error.strerror}; "
                f"{write_failure_advice(error.errno)}; the checkpoints saved so far are intact"
            ) from None
        except Exception as error:
            if is_out_of_memory(error):
                raise ScratchLMError(
                    out_of_memory_message(
                        self.config.batch_size,
                        self.accumulation,
                        activation_checkpointing=self.config.activation_checkpointing,
                        fsdp=self.fsdp,
                        device=self.device,
                        precision=self.precision,
                        micro_batch_auto=str(self.config.micro_batch) == "auto",
                    )
                ) from None
            raise
        finally:
            distributed.shutdown(self.distributed)

    def _run(self) -> TrainingResult:
        config = self.config
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.tokenizer.save(self.run_dir / "tokenizer.json")
            self._write_run_config()
        if self.state.finished and (self.progress() >= 1.0 or self.state.stopped_early):
            how = " (stopped early)" if self.state.stopped_early else ""
            self.log(
                f"{self.run_dir} already finished at step {self.state.step}{how}; nothing to do "
                "(raise --max-steps/--max-tokens/--max-time to train further)"
            )
            finished_checkpoint = latest_valid_checkpoint(self.run_dir, log=self.warn)
            assert finished_checkpoint is not None
            return self._result(finished_checkpoint, float("nan"), 0.0)
        self.state.finished = False
        metrics: Any = (
            MetricsLogger(self.run_dir, wandb_project=config.wandb, run_config=config.to_dict())
            if self.is_main
            else _NoMetrics()
        )
        ranks = (
            f" | {self.distributed.world_size} ranks ({'FSDP' if self.fsdp else 'DDP'}, "
            f"{self.distributed.backend})"
            if self.distributed.enabled
            else ""
        )
        self.log(
            f"model {self.model_config.name}: {self.n_params:,} parameters, context "
            f"{self.model_config.context_length}, vocab {self.tokenizer.vocab_size} "
            f"({self.tokenizer.kind}) | device {self.device}, {self.precision}{ranks} | "
            f"{self.tokens_per_step:,} tokens/step ({self.config.batch_size} x "
            f"{self.model_config.context_length} x {self.accumulation}"
            + (f" x {self.distributed.world_size} ranks" if self.distributed.enabled else "")
            + f") | {self.optimizer_kind} lr {self.learning_rate:g} | {self.data_summary}"
        )
        if self.config.spike_factor > 0 and self.state.step == 0:
            # A loss spike before the first periodic checkpoint backtracks to this one.
            self.save()
        interactive = sys.stderr.isatty() and not config.quiet and self.is_main
        bar = tqdm(
            total=1000,
            disable=not interactive,
            leave=True,
            dynamic_ncols=True,
            bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}",
        )
        self.model.train()
        started = time.perf_counter() - self.state.elapsed
        window_tokens, window_start = 0, time.perf_counter()
        tokens_per_s, loss = 0.0, float("nan")
        checkpoint: Path | None = None
        stop_signal = 0
        stops = StopSignals().install()
        try:
            while self.progress() < 1.0:
                learning_rate = self.state.lr_scale * learning_rate_at(
                    self.state.step,
                    self.progress(),
                    peak=self.learning_rate,
                    warmup_steps=config.warmup_steps,
                    schedule=config.schedule,
                    min_ratio=config.min_lr_ratio,
                    decay_fraction=config.decay_fraction,
                )
                loss, grad_norm, spike = self.train_step(learning_rate)
                if spike is not None:
                    self._backtrack(loss, spike, metrics)
                    started = time.perf_counter() - self.state.elapsed
                    continue
                self.state.step += 1
                self.state.tokens += self.tokens_per_step
                self.state.elapsed = time.perf_counter() - started
                window_tokens += self.tokens_per_step
                step = self.state.step
                now_after_step = time.perf_counter()
                if step % config.log_every == 0 or step == 1:
                    now = time.perf_counter()
                    tokens_per_s = window_tokens / max(now - window_start, 1e-9)
                    window_tokens, window_start = 0, now
                    peak = (
                        self.peak_flops * self.distributed.world_size if self.peak_flops else None
                    )
                    metrics.log(
                        {
                            "kind": "train",
                            "step": step,
                            "tokens": self.state.tokens,
                            "loss": loss,
                            "lr": learning_rate,
                            "grad_norm": grad_norm,
                            "tokens_per_s": tokens_per_s,
                            "mfu": mfu(tokens_per_s, self.flops_per_token, peak),
                            "elapsed_s": self.state.elapsed,
                            "time": time.time(),
                        }
                    )
                    bar.set_postfix_str(
                        f"step {step} loss {loss:.4f} lr {learning_rate:.2e} {tokens_per_s:,.0f} tok/s",
                        refresh=False,
                    )
                    if not interactive and step % (config.log_every * 10) == 0:
                        self.log(
                            f"step {step:>6} | loss {loss:.4f} | lr {learning_rate:.2e} | "
                            f"{tokens_per_s:,.0f} tok/s | {self.state.elapsed:.0f}s"
                        )
                bar.n = min(1000, int(self.progress() * 1000))
                bar.refresh()
                # every rank must agree on stopping (time budgets differ slightly per rank)
                done = bool(distributed.broadcast_object(self.progress() >= 1.0, self.distributed))
                paused = config.stop_after_steps is not None and step >= config.stop_after_steps
                if step % config.eval_every == 0 or done or paused:
                    self._evaluate_and_sample(metrics, bar, step)
                    done = done or self.state.stopped_early
                if done:
                    self.state.finished = True
                else:
                    # A SIGTERM/SIGUSR1 on any rank stops every rank after this same step, so
                    # that none is left waiting in a collective (finishing wins over stopping).
                    stop_signal = distributed.max_over_ranks(
                        stops.received, self.distributed, self.device
                    )
                if step % config.save_every == 0 or done or paused or stop_signal:
                    checkpoint = self.save()
                if time.perf_counter() - now_after_step > 0.05:
                    # evaluation and saving are not training: keep them out of tokens/s
                    window_tokens, window_start = 0, time.perf_counter()
                if stop_signal:
                    bar.clear()
                    self.warn(
                        f"stopped by {signal_name(stop_signal)} at step {step}: saved "
                        f"{checkpoint}; continue with --resume"
                    )
                    break
                if paused and not done:
                    self.log(f"paused after step {step}; continue with --resume")
                    break
                if done:
                    break
        except KeyboardInterrupt:
            bar.close()
            self.state.elapsed = time.perf_counter() - started
            checkpoint = self.save()
            self.warn(f"interrupted: saved {checkpoint}; continue with --resume")
            metrics.close()
            raise
        finally:
            stops.restore()
            bar.close()
        if checkpoint is None:
            checkpoint = self.save()
        final = checkpoint
        if self.state.stopped_early and (self.run_dir / "best").is_dir():
            final = self.run_dir / "best"
            self.log(
                f"early stop at step {self.state.step}: the validation loss did not improve for "
                f"{config.early_stop_patience} evaluations; the final model is best/ (step "
                f"{self.state.best_step}, val loss {self.state.best_val_loss:.4f})"
            )
        metrics.log(
            {
                "kind": "end",
                "step": self.state.step,
                "tokens": self.state.tokens,
                "elapsed_s": self.state.elapsed,
                "final_train_loss": loss,
                "best_val_loss": None
                if math.isinf(self.state.best_val_loss)
                else self.state.best_val_loss,
                "best_step": self.state.best_step,
                "stopped_early": self.state.stopped_early,
                "backtracks": self.state.backtracks,
                "reason": f"stopped by {signal_name(stop_signal)}"
                if stop_signal
                else "early stop"
                if self.state.stopped_early
                else "finished"
                if self.state.finished
                else "paused",
            }
        )
        metrics.close()
        if self.is_main:
            plot_loss_curve(self.run_dir)
        result = self._result(final, loss, tokens_per_s)
        result.stop_signal = stop_signal or None
        return result

    def _evaluate_and_sample(self, metrics: Any, bar: tqdm, step: int) -> None:
        # Every rank evaluates and samples (an FSDP forward needs all of them); rank 0 reports.
        evaluation = self.evaluate()
        sample = self.sample()
        improved = evaluation["val_loss"] < self.state.best_val_loss
        if improved:
            self.state.best_val_loss = evaluation["val_loss"]
            self.state.best_step = step
            self.state.evals_since_best = 0
            self.save_best(evaluation)
        else:
            self.state.evals_since_best += 1
        metrics.log(
            {
                "kind": "eval",
                "step": step,
                "tokens": self.state.tokens,
                **evaluation,
                "sample": sample,
                "elapsed_s": self.state.elapsed,
                "time": time.time(),  # wall clock: the speedrun measures from process start
            }
        )
        if self.is_main:
            plot_loss_curve(self.run_dir)
        line = (
            f"eval step {step}: val loss {evaluation['val_loss']:.4f} "
            f"(ppl {evaluation['val_perplexity']:.2f}"
            + (
                f", {evaluation['val_bits_per_byte']:.3f} bits/byte"
                if "val_bits_per_byte" in evaluation
                else ""
            )
            + ")"
            + (" *best*" if improved else "")
        )
        bar.clear()
        self.log(line)
        if sample:
            self.log("  sample: " + sample.strip().replace("\n", "\n          ")[:600])
        bar.refresh()
        patience = self.config.early_stop_patience
        if patience is not None and self.state.evals_since_best >= patience:
            self.state.stopped_early = True
            metrics.log(
                {
                    "kind": "early_stop",
                    "step": step,
                    "best_step": self.state.best_step,
                    "best_val_loss": self.state.best_val_loss,
                    "patience": patience,
                }
            )

    def _result(self, checkpoint: Path, loss: float, tokens_per_s: float) -> TrainingResult:
        average = self.state.tokens / self.state.elapsed if self.state.elapsed > 0 else 0.0
        return TrainingResult(
            run_dir=self.run_dir,
            checkpoint=checkpoint,
            steps=self.state.step,
            tokens=self.state.tokens,
            elapsed_s=self.state.elapsed,
            final_train_loss=loss,
            best_val_loss=None
            if math.isinf(self.state.best_val_loss)
            else self.state.best_val_loss,
            tokens_per_s=average or tokens_per_s,
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


# --- faults -----------------------------------------------------------------------------------------

# errno values that mean "this disk cannot take the write": the fix is space or another --out.
WRITE_FAILURES = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def write_failure_advice(number: int | None) -> str:
    if number in (errno.ENOSPC, errno.EDQUOT):
        return "free space or point --out elsewhere"
    return "point --out at a writable directory"


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
    number: int | None = None
    reason: str | None = None
    if isinstance(error, OSError):
        number, reason = error.errno, error.strerror or str(error)
    elif type(error).__name__ == "SafetensorError" and (
        match := re.search(r"os error (\d+)", str(error))
    ):
        number = int(match.group(1))
        reason = os.strerror(number)
    else:
        existing = next(path for path in (target, *target.parents) if path.exists())
        if shutil.disk_usage(existing).free < tensor_bytes(contents):
            number, reason = errno.ENOSPC, os.strerror(errno.ENOSPC)
    if reason is None:
        return None
    kept = (
        f"the previous checkpoint {previous} is intact"
        if previous is not None
        else "no checkpoint had been saved before"
    )
    return (
        f"could not save the checkpoint to {target}: {reason}; "
        f"{write_failure_advice(number)}; {kept}"
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


def train(config: TrainConfig, *, log: Callable[[str], None] = print) -> TrainingResult:
    return Trainer(config, log=log).run()


def iter_config_fields() -> Iterator[dataclasses.Field[Any]]:
    yield from dataclasses.fields(TrainConfig)
