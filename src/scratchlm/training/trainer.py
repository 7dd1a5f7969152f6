"""The training loop: data -> model -> AdamW with a schedule -> evaluations, samples, checkpoints.

`train(TrainConfig)` runs one run directory from start to finish (or resumes it). Everything that
can be restored is saved in each step checkpoint's trainer_state.pt (optimizer, scaler, RNG, data
position, step, tokens, elapsed time), so a resumed run continues exactly where it stopped: on CPU,
N steps + resume + N steps gives bit-identical weights to 2N steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from scratchlm.config import ModelConfig, preset_config
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
from scratchlm.errors import ScratchLMError
from scratchlm.evaluation.perplexity import evaluate_batches
from scratchlm.inference.engine import Engine
from scratchlm.inference.sampling import SamplingSettings
from scratchlm.io_utils import atomic_write_json
from scratchlm.model import GPT, build_model, count_parameters
from scratchlm.tokenizer import END_OF_TURN_TOKEN, Tokenizer, train_bpe, train_char
from scratchlm.training.checkpoint import (
    latest_checkpoint,
    load_model_state,
    load_trainer_state,
    prune_checkpoints,
    save_checkpoint,
    set_latest,
)
from scratchlm.training.metrics import MetricsLogger, plot_loss_curve
from scratchlm.training.optim import build_optimizer, learning_rate_at
from scratchlm.training.run_config import TrainConfig, parse_duration, parse_model_overrides

DEFAULT_MAX_STEPS = 2000
RUN_CONFIG_FILE = "run_config.json"


# --- device and precision -------------------------------------------------------------------------


def select_device(name: str) -> torch.device:
    """auto: CUDA > MPS > CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ScratchLMError(
            f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ScratchLMError(
            "--device cuda was asked for but no CUDA GPU is visible; use --device cpu"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ScratchLMError(
            "--device mps was asked for but MPS is not available; use --device cpu"
        )
    return device


def select_precision(name: str, device: torch.device) -> str:
    """auto: bf16 autocast where the GPU supports it, fp16 (with a GradScaler) on older GPUs, fp32
    on CPU (CPU autocast is slower than fp32 for small models)."""
    if name != "auto":
        if name == "fp16" and device.type == "cpu":
            raise ScratchLMError(
                "fp16 training is not supported on CPU; use --precision bf16 or fp32"
            )
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "mps":
        return "fp16"
    return "fp32"


def autocast_context(
    precision: str, device: torch.device
) -> contextlib.AbstractContextManager[Any]:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def default_learning_rate(n_params: int) -> float:
    """Smaller models tolerate larger steps (GPT-3 paper table; nanoGPT's 1e-3 for tiny models)."""
    if n_params < 50_000_000:
        return 1e-3
    if n_params < 400_000_000:
        return 6e-4
    return 3e-4


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


@dataclass
class RunState:
    step: int = 0
    tokens: int = 0
    elapsed: float = 0.0
    best_val_loss: float = math.inf
    finished: bool = False


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
        self.log = log if not config.quiet else (lambda message: None)
        self.run_dir = Path(config.out or f"runs/{config.preset}")
        self.device = select_device(config.device)
        self.precision = select_precision(config.precision, self.device)
        if config.threads:
            torch.set_num_threads(config.threads)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        resume_from = self._check_run_directory()
        self.tokenizer = self.load_tokenizer(resume_from)
        self.model_config = self.make_model_config()
        self.setup_data()
        torch.manual_seed(config.seed)
        self.model: GPT = self.make_model()
        self.n_params = count_parameters(self.model)
        self.learning_rate = config.lr or default_learning_rate(self.n_params)
        self.optimizer = build_optimizer(
            self.model,
            learning_rate=self.learning_rate,
            weight_decay=config.weight_decay,
            betas=(config.beta1, config.beta2),
            device=self.device,
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.autocast = autocast_context(self.precision, self.device)
        tokens_per_micro_batch = config.batch_size * self.model_config.context_length
        self.accumulation = (
            max(1, math.ceil(config.tokens_per_step / tokens_per_micro_batch))
            if config.tokens_per_step
            else 1
        )
        self.tokens_per_step = tokens_per_micro_batch * self.accumulation
        self.max_steps = config.max_steps
        if config.max_steps is None and config.max_tokens is None and config.max_time is None:
            self.max_steps = DEFAULT_MAX_STEPS
            self.log(
                f"no --max-steps/--max-tokens/--max-time given: training {DEFAULT_MAX_STEPS} steps"
            )
        self.max_time = parse_duration(config.max_time) if config.max_time is not None else None
        self.state = RunState()
        self.forward: Callable[[torch.Tensor], torch.Tensor] = self.model
        if config.compile:
            self.forward = torch.compile(self.model)
        if resume_from is not None:
            self._restore(resume_from)

    # --- the parts a specialized trainer (fine-tuning) overrides ------------------------------
    def load_tokenizer(self, resume_from: Path | None) -> Tokenizer:
        if resume_from is not None:
            return Tokenizer.load(self.run_dir / "tokenizer.json")
        return obtain_tokenizer(self.config, self.log)

    def make_model_config(self) -> ModelConfig:
        return build_model_config(self.config, self.tokenizer)

    def setup_data(self) -> None:
        """Sets `self.loader` (next_batch / state_dict / load_state_dict) and the validation data."""
        data_dir = prepare_data(self.config, self.tokenizer, self.log)
        self.train_shards = TokenShards.open(data_dir, "train")
        self.val_shards = TokenShards.open(data_dir, "val")
        self.loader: Any = TokenWindowLoader(
            self.train_shards,
            context_length=self.model_config.context_length,
            batch_size=self.config.batch_size,
            seed=self.config.seed,
        )
        self.data_summary = (
            f"train {self.train_shards.num_tokens:,} tokens, val {self.val_shards.num_tokens:,}"
        )

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

    def restore_model(self, checkpoint_dir: Path) -> None:
        from safetensors.torch import load_file

        load_model_state(
            self.model,
            load_file(str(checkpoint_dir / "model.safetensors"), device=str(self.device)),
            source=checkpoint_dir,
        )

    def weights_for_saving(self) -> dict[str, torch.Tensor] | None:
        """None: the model's own state dict."""
        return None

    def extra_checkpoint_files(self) -> dict[str, bytes]:
        return {}

    def checkpoint_metadata(self) -> dict[str, Any]:
        return {}

    # --- run directory ------------------------------------------------------------------------
    def _check_run_directory(self) -> Path | None:
        existing = latest_checkpoint(self.run_dir) if self.run_dir.is_dir() else None
        if self.config.resume:
            if existing is None:
                raise ScratchLMError(
                    f"--resume: {self.run_dir} has no checkpoint to resume from; drop --resume to "
                    "start a new run there, or pass the --out of an earlier run"
                )
            saved_path = self.run_dir / RUN_CONFIG_FILE
            if saved_path.is_file():
                saved = json.loads(saved_path.read_text(encoding="utf-8"))
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
            return existing
        if existing is not None:
            raise ScratchLMError(
                f"{self.run_dir} already holds a training run; pass --resume to continue it, or "
                "choose a new --out"
            )
        return None

    def _restore(self, checkpoint_dir: Path) -> None:
        self.restore_model(checkpoint_dir)
        saved_config = json.loads((checkpoint_dir / "config.json").read_text(encoding="utf-8"))[
            "model"
        ]
        if ModelConfig.from_dict(saved_config) != self.model_config:
            raise ScratchLMError(
                f"--resume: the model flags describe a different model than {checkpoint_dir}; "
                "resume with the original --preset/--set/--context-length"
            )
        state = load_trainer_state(checkpoint_dir, self.device)
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.loader.load_state_dict(state["loader"])
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if self.device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), self.device)
        self.state = RunState(
            step=int(state["step"]),
            tokens=int(state["tokens"]),
            elapsed=float(state["elapsed"]),
            best_val_loss=float(state["best_val_loss"]),
            finished=bool(state.get("finished", False)),
        )
        self.log(f"resuming {self.run_dir} from {checkpoint_dir.name} (step {self.state.step})")

    def _trainer_state(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "step": self.state.step,
            "tokens": self.state.tokens,
            "elapsed": self.state.elapsed,
            "best_val_loss": self.state.best_val_loss,
            "finished": self.state.finished,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "loader": self.loader.state_dict(),
            "rng": rng,
        }

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
            **(extra or {}),
        }

    def save(self) -> Path:
        target = self.run_dir / "checkpoints" / f"step_{self.state.step:06d}"
        save_checkpoint(
            target,
            self.model,
            self.tokenizer,
            training=self._training_summary(),
            trainer_state=self._trainer_state(),
            replace=True,
            weights=self.weights_for_saving(),
            extra_files=self.extra_checkpoint_files(),
            extra_metadata=self.checkpoint_metadata(),
        )
        set_latest(self.run_dir, target)
        prune_checkpoints(self.run_dir, self.config.keep_checkpoints)
        return target

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
        ids = list(
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
        self.model.train(was_training)
        return prompt + self.tokenizer.decode(ids, skip_special=True)

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

    def train_step(self, learning_rate: float) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        total_loss = torch.zeros((), device=self.device)
        for _ in range(self.accumulation):
            inputs, targets = self.loader.next_batch()
            inputs = inputs.to(self.device, non_blocking=True)
            targets = targets.to(self.device, non_blocking=True)
            with self.autocast:
                logits = self.forward(inputs)  # (B, T, padded_vocab)
                # ignore_index: fine-tuning masks prompt and padding positions with -100
                loss = F.cross_entropy(
                    logits.float().view(-1, logits.shape[-1]), targets.view(-1), ignore_index=-100
                )
            self.scaler.scale(loss / self.accumulation).backward()
            total_loss += loss.detach()
        if self.config.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return float(total_loss) / self.accumulation

    def run(self) -> TrainingResult:
        config = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(self.run_dir / "tokenizer.json")
        atomic_write_json(
            self.run_dir / RUN_CONFIG_FILE,
            {
                **config.to_dict(),
                "resolved": {
                    "model": self.model_config.to_dict(),
                    "learning_rate": self.learning_rate,
                    "accumulation": self.accumulation,
                    "tokens_per_step": self.tokens_per_step,
                    "max_steps": self.max_steps,
                    "device": str(self.device),
                    "precision": self.precision,
                    "n_params": self.n_params,
                },
            },
        )
        if self.state.finished and self.progress() >= 1.0:
            self.log(
                f"{self.run_dir} already finished at step {self.state.step}; nothing to do "
                "(raise --max-steps/--max-tokens/--max-time to train further)"
            )
            finished_checkpoint = latest_checkpoint(self.run_dir)
            assert finished_checkpoint is not None
            return self._result(finished_checkpoint, float("nan"), 0.0)
        self.state.finished = False
        metrics = MetricsLogger(
            self.run_dir, wandb_project=config.wandb, run_config=config.to_dict()
        )
        self.log(
            f"model {self.model_config.name}: {self.n_params:,} parameters, context "
            f"{self.model_config.context_length}, vocab {self.tokenizer.vocab_size} "
            f"({self.tokenizer.kind}) | device {self.device}, {self.precision} | "
            f"{self.tokens_per_step:,} tokens/step ({self.config.batch_size} x "
            f"{self.model_config.context_length} x {self.accumulation}) | lr {self.learning_rate:g} | "
            f"{self.data_summary}"
        )
        interactive = sys.stderr.isatty() and not config.quiet
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
        try:
            while self.progress() < 1.0:
                learning_rate = learning_rate_at(
                    self.state.step,
                    self.progress(),
                    peak=self.learning_rate,
                    warmup_steps=config.warmup_steps,
                    schedule=config.schedule,
                    min_ratio=config.min_lr_ratio,
                    decay_fraction=config.decay_fraction,
                )
                loss = self.train_step(learning_rate)
                if not math.isfinite(loss):
                    raise ScratchLMError(
                        f"training diverged: the loss is {loss} at step {self.state.step + 1}; "
                        "lower --lr, raise --warmup-steps, or use --precision fp32"
                    )
                self.state.step += 1
                self.state.tokens += self.tokens_per_step
                self.state.elapsed = time.perf_counter() - started
                window_tokens += self.tokens_per_step
                step = self.state.step
                if step % config.log_every == 0 or step == 1:
                    now = time.perf_counter()
                    tokens_per_s = window_tokens / max(now - window_start, 1e-9)
                    window_tokens, window_start = 0, now
                    metrics.log(
                        {
                            "kind": "train",
                            "step": step,
                            "tokens": self.state.tokens,
                            "loss": loss,
                            "lr": learning_rate,
                            "tokens_per_s": tokens_per_s,
                            "elapsed_s": self.state.elapsed,
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
                done = self.progress() >= 1.0
                paused = config.stop_after_steps is not None and step >= config.stop_after_steps
                if step % config.eval_every == 0 or done or paused:
                    self._evaluate_and_sample(metrics, bar, step)
                if done:
                    self.state.finished = True
                if step % config.save_every == 0 or done or paused:
                    checkpoint = self.save()
                if paused and not done:
                    self.log(f"paused after step {step}; continue with --resume")
                    break
        except KeyboardInterrupt:
            bar.close()
            self.state.elapsed = time.perf_counter() - started
            checkpoint = self.save()
            self.log(f"interrupted: saved {checkpoint}; continue with --resume")
            metrics.close()
            raise
        finally:
            bar.close()
        metrics.close()
        plot_loss_curve(self.run_dir)
        if checkpoint is None:
            checkpoint = self.save()
        return self._result(checkpoint, loss, tokens_per_s)

    def _evaluate_and_sample(self, metrics: MetricsLogger, bar: tqdm, step: int) -> None:
        evaluation = self.evaluate()
        sample = self.sample()
        improved = evaluation["val_loss"] < self.state.best_val_loss
        if improved:
            self.state.best_val_loss = evaluation["val_loss"]
            save_checkpoint(
                self.run_dir / "best",
                self.model,
                self.tokenizer,
                training=self._training_summary({"val": evaluation}),
                replace=True,
                weights=self.weights_for_saving(),
                extra_metadata=self.checkpoint_metadata(),
            )
        metrics.log(
            {
                "kind": "eval",
                "step": step,
                "tokens": self.state.tokens,
                **evaluation,
                "sample": sample,
                "elapsed_s": self.state.elapsed,
            }
        )
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


def train(config: TrainConfig, *, log: Callable[[str], None] = print) -> TrainingResult:
    return Trainer(config, log=log).run()


def iter_config_fields() -> Iterator[dataclasses.Field[Any]]:
    yield from dataclasses.fields(TrainConfig)
