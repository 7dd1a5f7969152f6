"""The training loop: data -> model -> optimizer with a schedule -> evaluations, samples, checkpoints.

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

The pieces it wires together: setup.py (tokenizer, data, model config, micro-batch, defaults),
run_dir.py (resume, save, best, run_config.json), metrics.py (metrics.jsonl, loss chart, console).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from scratchlm.checkpoint import (
    latest_valid_checkpoint,
)
from scratchlm.config import ModelConfig, model_flops_per_token
from scratchlm.data import iter_eval_batches
from scratchlm.device import autocast_context, select_device, select_precision
from scratchlm.errors import ScratchLMError
from scratchlm.model import GPT, build_model, count_parameters
from scratchlm.tokenizer import Tokenizer
from scratchlm.training import distributed, run_dir
from scratchlm.training.activation_checkpointing import apply_activation_checkpointing
from scratchlm.training.benchmarks import TrainingBenchmarks
from scratchlm.training.hardware import mfu, peak_flops
from scratchlm.training.memory import derive_accumulation, is_out_of_memory, out_of_memory_message
from scratchlm.training.metrics import MetricsLogger, NoMetrics, Progress, plot_loss_curve
from scratchlm.training.optim import build_optimizer, learning_rate_at
from scratchlm.training.run_config import TrainConfig, parse_duration
from scratchlm.training.run_dir import RunState
from scratchlm.training.setup import (
    build_model_config,
    default_max_steps,
    fit_micro_batch,
    obtain_tokenizer,
    open_token_data,
    resolve_learning_rate,
    resolve_optimizer,
)
from scratchlm.training.signals import StopSignals, signal_name
from scratchlm.training.token_weights import weighted_cross_entropy
from scratchlm.training.validation import generate_sample, validation_metrics


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


class Trainer:
    """One run: `Trainer(config).run()`. The caller's `config` is never changed; `self.config`
    is the resolved copy (the micro-batch --micro-batch auto chose, for one)."""

    # Sequences one batch example puts through the model (a preference pair: chosen + rejected).
    rows_per_example = 1

    def __init__(self, config: TrainConfig, *, log: Callable[[str], None] = print) -> None:
        config.validate()
        self.config = config
        self.distributed, device_name = distributed.init_distributed(config.device)
        self.is_main = self.distributed.is_main
        self.log = log if not config.quiet and self.is_main else (lambda message: None)
        # What --quiet must not hide (it silences progress, not safety): damaged checkpoints
        # skipped, a run stopped by a signal.
        self.warn = log if self.is_main else (lambda message: None)
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

        # --eval-tasks: read once, before any data is tokenized (a missing file fails now).
        with distributed.main_process_first(self.distributed):
            self.benchmarks = (
                TrainingBenchmarks.load(config, self.log) if config.eval_tasks else None
            )
        resume_from, self.saved_run_config = run_dir.find_resume_checkpoint(
            self.run_dir, config, self.warn
        )
        resumed = resume_from is not None
        self.checkpoints = run_dir.Checkpointer(self)
        # Rank 0 trains the tokenizer and tokenizes the data first (both cached on disk); the
        # other ranks wait, then find the caches.
        with distributed.main_process_first(self.distributed):
            self.tokenizer = self.load_tokenizer(resume_from)
            self.model_config = self.make_model_config()
        # Every rank at once, before any of them builds a model: ranks sharing a host's RAM read
        # it together, and they agree on one micro-batch.
        self.config, self.micro_batch_choice = fit_micro_batch(
            config,
            self.model_config,
            make_model=self.make_model,
            device=self.device,
            precision=self.precision,
            dist=self.distributed,
            fsdp=self.fsdp,
            log=self.log,
            rows_per_example=self.rows_per_example,
        )
        config = self.config
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
        # What the run being resumed resolved at its start: defaults may have changed since.
        saved = self.saved_run_config.get("resolved", {}) if resumed else {}
        self.optimizer_kind = resolve_optimizer(
            config,
            started_with=saved.get("optimizer", "adamw") if resumed else None,
            default=self.default_optimizer(),
        )
        self.learning_rate = resolve_learning_rate(
            config,
            saved=saved.get("learning_rate"),
            n_params=self.n_params,
            optimizer=self.optimizer_kind,
        )
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
        self.max_steps = default_max_steps(config)
        if self.max_steps != config.max_steps:
            self.log(
                f"no --max-steps/--max-tokens/--max-time given: training {self.max_steps} steps"
            )
        self.max_time = parse_duration(config.max_time) if config.max_time is not None else None
        self.state = RunState()
        # (step, loss) of the last applied steps, for the spike check's moving average.
        self.recent_losses: deque[tuple[int, float]] = deque(maxlen=config.spike_window)
        self.forward: Callable[[torch.Tensor], torch.Tensor] = self.wrapped
        if config.compile:
            self.forward = torch.compile(self.wrapped)
        self.flops_per_token = model_flops_per_token(self.model_config)
        self.peak_flops, self.peak_flops_source = peak_flops(self.device, self.precision)
        if resume_from is not None:
            self.checkpoints.restore(resume_from, model_restored=True)

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
        data = open_token_data(
            self.config,
            self.tokenizer,
            self.model_config,
            accumulation=self.accumulation,
            context=self.distributed,
            device=self.device,
            log=self.log,
        )
        self.train_shards, self.val_shards = data.train, data.val
        self.loader: Any = data.loader  # fine-tuning's SFTLoader has the same three methods
        self.data_summary, self.token_weights = data.summary, data.token_weights

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

    def compute_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss of one micro-batch: logits (B, T, padded_vocab), targets (B, T)."""
        vocab = self.model_config.padded_vocab_size
        assert vocab is not None
        # ignore_index: fine-tuning masks prompt and padding positions with -100
        return weighted_cross_entropy(
            logits.float().view(-1, vocab), targets.view(-1), self.token_weights
        )

    def batch_loss(self, batch: Any) -> torch.Tensor:
        """The loss of one micro-batch from `self.loader.next_batch()`: here (inputs, targets),
        each (B, T). Preference and RL training override it (their batches carry more)."""
        inputs, targets = batch
        inputs = inputs.to(self.device, non_blocking=True)
        targets = targets.to(self.device, non_blocking=True)
        logits = self.forward(inputs)  # (B, T, padded_vocab)
        return self.compute_loss(logits, targets)

    def train_metrics(self) -> dict[str, float]:
        """Extra fields for the next `train` record of metrics.jsonl (rank 0's values), e.g.
        DPO's reward accuracy since the last record; an override also resets what it averaged."""
        return {}

    def restore_model(self, checkpoint_dir: Path) -> None:
        self.checkpoints.load_weights(checkpoint_dir)

    def weights_for_saving(self) -> dict[str, torch.Tensor] | None:
        """None: the model's own state dict."""
        return None

    def extra_checkpoint_files(self) -> dict[str, bytes]:
        return {}

    def checkpoint_metadata(self) -> dict[str, Any]:
        return {}

    # --- evaluation and samples ---------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        return validation_metrics(
            self.model,
            self.eval_batches(),
            bytes_per_token=self.val_bytes_per_token(),
            device=self.device,
            autocast=self.autocast,
        )

    def score_tasks(self) -> dict[str, Any]:
        """--eval-tasks' metrics.jsonl fields ({} without it); see benchmarks.py."""
        if self.benchmarks is None:
            return {}
        return self.benchmarks.score(
            self.model,
            self.tokenizer,
            batch_size=self.config.batch_size,
            device=self.device,
            autocast=self.autocast,
        )

    def sample(self) -> str:
        if self.config.sample_tokens <= 0:
            return ""
        prompt = self.config.sample_prompt
        if prompt:
            prompt_ids = self.tokenizer.encode(prompt)
        else:
            prompt_ids = self.default_sample_prompt()
            prompt = self.tokenizer.decode(prompt_ids, skip_special=True)
        return prompt + generate_sample(
            self.model,
            self.tokenizer,
            prompt_ids,
            max_new_tokens=self.config.sample_tokens,
            seed=self.config.seed,
            autocast=self.autocast,
        )

    def _evaluate_and_sample(self, metrics: Any, progress: Progress, step: int) -> None:
        # Every rank evaluates and samples (an FSDP forward needs all of them); rank 0 reports.
        evaluation = self.evaluate()
        tasks = self.score_tasks()
        sample = self.sample()
        improved = evaluation["val_loss"] < self.state.best_val_loss
        if improved:
            self.state.best_val_loss = evaluation["val_loss"]
            self.state.best_step = step
            self.state.evals_since_best = 0
            self.checkpoints.save_best(evaluation)
        else:
            self.state.evals_since_best += 1
        metrics.log(
            {
                "kind": "eval",
                "step": step,
                "tokens": self.state.tokens,
                **evaluation,
                **tasks,
                "sample": sample,
                "elapsed_s": self.state.elapsed,
                "time": time.time(),  # wall clock: the speedrun measures from process start
            }
        )
        if self.is_main:
            plot_loss_curve(self.run_dir)
        progress.evaluation(step, evaluation, sample, improved=improved, tasks=tasks)
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

    # --- one step, and what a bad one does ------------------------------------------------------
    def progress(self) -> float:
        """How much of the budget (steps, tokens or time, whichever is furthest) is spent."""
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
        for micro_step in range(self.accumulation):
            batch = self.loader.next_batch()
            last = micro_step == self.accumulation - 1
            # Only the last micro-batch all-reduces gradients; the others accumulate locally.
            with distributed.gradient_sync(self.wrapped, self.fsdp, last):
                with self.autocast:
                    loss = self.batch_loss(batch)
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
            self.recent_losses.append((self.state.step + 1, mean_loss))
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
        average = self._average_loss()
        assert average is not None  # the window holds steps (checked above)
        return "spike" if loss > self.config.spike_factor * average else None

    def _average_loss(self) -> float | None:
        if not self.recent_losses:
            return None
        return sum(loss for _, loss in self.recent_losses) / len(self.recent_losses)

    def _backtrack(self, loss: float, reason: str, metrics: Any) -> None:
        """Reload the last checkpoint, keep the data position (so the offending batches are
        skipped), and lower the learning rate."""
        spiked_at = self.state.step + 1
        average = self._average_loss()
        checkpoint = self.checkpoints.backtrack_target(loss, reason)
        carried = (self.state.backtracks + 1, self.state.lr_scale * self.config.spike_lr_factor)
        self.checkpoints.restore(checkpoint, restore_loader=False)
        self.state.backtracks, self.state.lr_scale = carried
        # The moving average keeps only the losses of steps up to the restored one: later ones
        # describe weights that are gone. Restored to an early step (a fine-tune's step 0), its
        # higher losses were compared with the late average and each looked like a new spike.
        kept = [(step, value) for step, value in self.recent_losses if step <= self.state.step]
        self.recent_losses.clear()
        self.recent_losses.extend(kept)
        metrics.log(
            {
                "kind": "backtrack",
                "step": spiked_at,
                "restored_step": self.state.step,
                "loss": loss if math.isfinite(loss) else str(loss),
                "moving_average": average,
                "reason": reason,
                "lr_scale": self.state.lr_scale,
                "backtracks": self.state.backtracks,
            }
        )
        self.log(
            f"backtrack {self.state.backtracks}/{self.config.max_backtracks}: loss {reason} at "
            f"step {spiked_at} ({loss:.4g}"
            + (f" vs moving average {average:.4g}" if average is not None else "")
            + f"); reloaded {checkpoint.name}, learning rate x{self.state.lr_scale:g}, "
            "skipping the batches since"
        )

    # --- the run ----------------------------------------------------------------------------------
    def run(self, *, max_time_s: float | None = None) -> TrainingResult:
        """Train until the budget is spent. `max_time_s` replaces --max-time (seconds) from now
        on: a caller that spends part of its own time budget on set-up (the quickstart) knows the
        training time only after constructing the trainer. run_config.json records it."""
        if max_time_s is not None:
            self.max_time = max_time_s
            self.config = dataclasses.replace(self.config, max_time=f"{max_time_s:.0f}s")
        try:
            return self._run()
        except OSError as error:
            # A full (or read-only) disk while writing metrics, run_config.json, the loss chart:
            # every checkpoint write is atomic, so what was saved is whole.
            failure = run_dir.run_file_write_failure(error, self.run_dir)
            if failure is None:
                raise
            raise failure from None
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
            self.checkpoints.write_run_config()
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
            MetricsLogger(
                self.run_dir,
                tensorboard=config.tensorboard,
                wandb_project=config.wandb,
                run_config=config.to_dict(),
            )
            if self.is_main
            else NoMetrics()
        )
        self._log_start()
        if config.spike_factor > 0 and self.state.step == 0:
            # A loss spike before the first periodic checkpoint backtracks to this one.
            self.checkpoints.save()
        progress = Progress(
            self.log, enabled=not config.quiet and self.is_main, log_every=config.log_every
        )
        self.model.train()
        started = time.perf_counter() - self.state.elapsed
        window_tokens, window_start = 0, time.perf_counter()
        tokens_per_s, loss = 0.0, float("nan")
        checkpoint: Path | None = None
        stop_signal = 0
        stops = StopSignals(interrupt=self.distributed.enabled).install()
        # The last batch was a loss spike (skipped): a second one in a row backtracks.
        suspected_spike = False
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
                if spike == "spike" and not suspected_spike:
                    # One batch far above the average is dropped (its update was not applied)
                    # and the step retried on the next batch: fine-tuning data that mixes long
                    # and one-word answers has such batches, and they pass. Divergence shows on
                    # the next batch too, which then backtracks.
                    suspected_spike = True
                    metrics.log(
                        {
                            "kind": "skipped_batch",
                            "step": self.state.step + 1,
                            "loss": loss,
                            "moving_average": self._average_loss(),
                        }
                    )
                    continue
                suspected_spike = False
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
                    world_peak = (
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
                            "mfu": mfu(tokens_per_s, self.flops_per_token, world_peak),
                            "elapsed_s": self.state.elapsed,
                            "time": time.time(),
                            **self.train_metrics(),
                        }
                    )
                    progress.train_step(step, loss, learning_rate, tokens_per_s, self.state.elapsed)
                progress.advance(self.progress())
                # every rank must agree on stopping (time budgets differ slightly per rank)
                done = bool(distributed.broadcast_object(self.progress() >= 1.0, self.distributed))
                paused = config.stop_after_steps is not None and step >= config.stop_after_steps
                if step % config.eval_every == 0 or done or paused:
                    self._evaluate_and_sample(metrics, progress, step)
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
                    checkpoint = self.checkpoints.save()
                if time.perf_counter() - now_after_step > 0.05:
                    # evaluation and saving are not training: keep them out of tokens/s
                    window_tokens, window_start = 0, time.perf_counter()
                if stop_signal:
                    progress.clear()
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
            progress.close()
            self.state.elapsed = time.perf_counter() - started
            checkpoint = self.checkpoints.save()
            self.warn(f"interrupted: saved {checkpoint}; continue with --resume")
            metrics.close()
            raise
        finally:
            stops.restore()
            progress.close()
        if checkpoint is None:
            checkpoint = self.checkpoints.save()
        final = checkpoint
        if self.state.stopped_early and (self.run_dir / "best").is_dir():
            final = self.run_dir / "best"
            self.log(
                f"early stop at step {self.state.step}: the validation loss did not improve for "
                f"{config.early_stop_patience} evaluations; the final model is best/ (step "
                f"{self.state.best_step}, val loss {self.state.best_val_loss:.4f})"
            )
        reason = (
            f"stopped by {signal_name(stop_signal)}"
            if stop_signal
            else "early stop"
            if self.state.stopped_early
            else "finished"
            if self.state.finished
            else "paused"
        )
        metrics.log(
            {
                "kind": "end",
                "step": self.state.step,
                "tokens": self.state.tokens,
                "elapsed_s": self.state.elapsed,
                "final_train_loss": loss,
                "best_val_loss": _finite_or_none(self.state.best_val_loss),
                "best_step": self.state.best_step,
                "stopped_early": self.state.stopped_early,
                "backtracks": self.state.backtracks,
                "reason": reason,
            }
        )
        metrics.close()
        if self.is_main:
            plot_loss_curve(self.run_dir)
        result = self._result(final, loss, tokens_per_s)
        result.stop_signal = stop_signal or None
        return result

    def _log_start(self) -> None:
        """One line: the model, the device and the batch arithmetic, the optimizer, the data."""
        world = self.distributed.world_size
        ranks = (
            f" | {world} ranks ({'FSDP' if self.fsdp else 'DDP'}, {self.distributed.backend})"
            if self.distributed.enabled
            else ""
        )
        self.log(
            f"model {self.model_config.name}: {self.n_params:,} parameters, context "
            f"{self.model_config.context_length}, vocab {self.tokenizer.vocab_size} "
            f"({self.tokenizer.kind}) | device {self.device}, {self.precision}{ranks} | "
            f"{self.step_summary()} | {self.optimizer_kind} lr {self.learning_rate:g} | "
            f"{self.data_summary}"
        )

    def step_summary(self) -> str:
        """What one optimizer step trains on, for the start line."""
        world = self.distributed.world_size
        return (
            f"{self.tokens_per_step:,} tokens/step ({self.config.batch_size} x "
            f"{self.model_config.context_length} x {self.accumulation}"
            + (f" x {world} ranks" if self.distributed.enabled else "")
            + ")"
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
            best_val_loss=_finite_or_none(self.state.best_val_loss),
            tokens_per_s=average or tokens_per_s,
        )


def _finite_or_none(value: float) -> float | None:
    """The best validation loss as saved: None (JSON null) before any evaluation."""
    return None if math.isinf(value) else value


def train(config: TrainConfig, *, log: Callable[[str], None] = print) -> TrainingResult:
    return Trainer(config, log=log).run()
