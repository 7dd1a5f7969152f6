"""What a run needs before its first step: the tokenizer (loaded, or trained on --data and cached),
the token data (prepared and cached), the model config, the micro-batch (--micro-batch auto), the
optimizer and learning rate when not given, and the step budget when none is given."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from scratchlm.config import ModelConfig, preset_config
from scratchlm.data import (
    CleaningOptions,
    TokenShards,
    TokenWindowLoader,
    default_cache_root,
    prepare_cached,
    sample_text,
    source_identity,
)
from scratchlm.device import autocast_context
from scratchlm.errors import ScratchLMError
from scratchlm.model import GPT, count_parameters
from scratchlm.tokenizer import Tokenizer, train_bpe, train_char
from scratchlm.training import distributed
from scratchlm.training.activation_checkpointing import apply_activation_checkpointing
from scratchlm.training.memory import auto_micro_batch
from scratchlm.training.run_config import TrainConfig, parse_model_overrides
from scratchlm.training.token_weights import cached_token_weights

# The budget when none of --max-steps/--max-tokens/--max-time is given.
DEFAULT_MAX_STEPS = 2000


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


def resolve_optimizer(config: TrainConfig, *, started_with: str | None, default: str) -> str:
    """--optimizer auto picks `default`; a resumed run (`started_with`: the optimizer it saved;
    runs from before the choice existed used AdamW) keeps the optimizer it was started with."""
    chosen = config.optimizer
    if started_with is not None:
        if chosen not in ("auto", started_with):
            raise ScratchLMError(
                f"--resume with --optimizer {chosen}, but the run was started with "
                f"{started_with}; resume with --optimizer {started_with} or start a new run"
            )
        return started_with
    return default if chosen == "auto" else chosen


def resolve_learning_rate(
    config: TrainConfig, *, saved: float | None, n_params: int, optimizer: str
) -> float:
    """--lr, else the run's saved rate when resuming (defaults may have changed since it
    started), else `default_learning_rate` for the model's size and optimizer."""
    if config.lr:
        return float(config.lr)
    if saved:
        return float(saved)
    return default_learning_rate(n_params, optimizer)


def default_max_steps(config: TrainConfig) -> int | None:
    """--max-steps, or DEFAULT_MAX_STEPS when no budget at all is given."""
    if config.max_steps is None and config.max_tokens is None and config.max_time is None:
        return DEFAULT_MAX_STEPS
    return config.max_steps


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
    """The prepared token shards of --data (and --val-data) for `tokenizer`, cached on disk."""
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


@dataclass
class TokenData:
    """Prepared token shards and the training loader over them."""

    train: TokenShards
    val: TokenShards
    loader: TokenWindowLoader
    summary: str  # for the start-up line
    token_weights: torch.Tensor | None  # --token-weighting inverse-freq, on the device


def open_token_data(
    config: TrainConfig,
    tokenizer: Tokenizer,
    model_config: ModelConfig,
    *,
    accumulation: int,
    context: distributed.DistributedContext,
    device: torch.device,
    log: Callable[[str], None],
) -> TokenData:
    """The prepared data of --data, a loader of this rank's windows, and the token weights."""
    data_dir = prepare_data(config, tokenizer, log)
    train = TokenShards.open(data_dir, "train")
    val = TokenShards.open(data_dir, "val")
    loader = TokenWindowLoader(
        train,
        context_length=model_config.context_length,
        batch_size=config.batch_size,
        seed=config.seed,
        rank=context.rank,
        world_size=context.world_size,
        accumulation=accumulation,
        windows=config.windows,
    )
    token_weights = None
    if config.token_weighting == "inverse-freq" and config.token_weighting_power > 0:
        assert model_config.padded_vocab_size is not None
        token_weights = cached_token_weights(
            data_dir, train, model_config.padded_vocab_size, config.token_weighting_power
        ).to(device)
    summary = f"train {train.num_tokens:,} tokens, val {val.num_tokens:,}"
    return TokenData(train, val, loader, summary, token_weights)


def build_model_config(config: TrainConfig, tokenizer: Tokenizer) -> ModelConfig:
    """--preset with --set, --context-length and --dropout applied, sized to the tokenizer."""
    overrides = parse_model_overrides(config.set)
    if config.context_length is not None:
        overrides["context_length"] = config.context_length
    if config.dropout is not None:
        overrides["dropout"] = config.dropout
    overrides["vocab_size"] = tokenizer.vocab_size
    return preset_config(config.preset, **overrides)


# --- the micro-batch --------------------------------------------------------------------------------


def fit_micro_batch(
    config: TrainConfig,
    model_config: ModelConfig,
    *,
    make_model: Callable[[], GPT],
    device: torch.device,
    precision: str,
    dist: distributed.DistributedContext,
    fsdp: bool,
    log: Callable[[str], None],
    rows_per_example: int = 1,
) -> tuple[TrainConfig, str | None]:
    """A copy of `config` with --micro-batch (a number, or auto: the largest that fits) resolved
    into batch_size (and tokens_per_step, which auto keeps at what --batch-size asked for), and
    how auto chose (None for a number). Runs on every rank together. `rows_per_example`: the
    sequences one example puts through the model (a preference pair: 2), so that auto sizes
    the forward that really runs."""
    if config.micro_batch is None:
        return config, None
    if str(config.micro_batch) != "auto":
        return dataclasses.replace(config, batch_size=int(config.micro_batch)), None
    context = model_config.context_length
    per_step = config.tokens_per_step or config.batch_size * context
    ceiling = max(1, per_step // (context * dist.world_size)) * rows_per_example

    def probe(batch_size: int) -> None:
        memory_probe(
            make_model(),
            batch_size,
            device=device,
            precision=precision,
            activation_checkpointing=config.activation_checkpointing,
            data_parallel=dist.enabled,
        )

    chosen, explanation = auto_micro_batch(
        model_config,
        device,
        precision=precision,
        activation_checkpointing=config.activation_checkpointing,
        max_micro_batch=ceiling,
        probe=probe if device.type == "cuda" else None,
        shards=dist.world_size if fsdp else 1,
        ranks_per_host=distributed.local_world_size(dist),
    )
    # Every rank must train the same micro-batch (the loader's windows and the gradient
    # average assume it): the smallest any rank can hold.
    choices = distributed.gather_objects((chosen, explanation), dist)
    chosen, explanation = min(choices, key=lambda choice: choice[0])
    if len({choice[0] for choice in choices}) > 1:
        explanation += f" (the smallest of the ranks' {[choice[0] for choice in choices]})"
    if rows_per_example > 1:
        chosen = max(1, chosen // rows_per_example)
        explanation += f"; {chosen} examples of {rows_per_example} sequences each"
    log(f"micro-batch auto: {explanation}")
    # auto picks the micro-batch; the step keeps the tokens --batch-size asked for
    tokens_per_step = per_step if config.tokens_per_step is None else config.tokens_per_step
    return dataclasses.replace(
        config, batch_size=chosen, tokens_per_step=tokens_per_step
    ), explanation


def memory_probe(
    model: GPT,
    batch_size: int,
    *,
    device: torch.device,
    precision: str,
    activation_checkpointing: bool,
    data_parallel: bool,
) -> None:
    """One forward and backward at `batch_size` on the GPU (raises torch.OutOfMemoryError)."""
    if activation_checkpointing:
        apply_activation_checkpointing(model)
    context = model.config.context_length
    inputs = torch.zeros((batch_size, context), dtype=torch.long, device=device)
    # AdamW's two fp32 moments per parameter are allocated at the first step: hold their
    # bytes too, or a model that passes the probe runs out of memory at its first update.
    # DDP adds its gradient buckets, one more fp32 copy of the gradients.
    states = 8 + (4 if data_parallel else 0)
    reserved = torch.empty(states * count_parameters(model), dtype=torch.uint8, device=device)
    try:
        for _ in range(2):  # the second pass runs with the first's gradients alive
            with autocast_context(precision, device):
                logits = model(inputs)
                loss = F.cross_entropy(logits.float().flatten(0, 1), inputs.flatten())
            loss.backward()
    finally:
        del reserved
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
