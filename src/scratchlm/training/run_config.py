"""`TrainConfig`: every setting of a training run, the single source of the CLI's train flags.

Defaults live here; a YAML/JSON file given with --config overrides them, and flags given on the
command line override the file. The resolved config is saved as run_config.json in the run
directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scratchlm.errors import ScratchLMError


def option(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field with the help text its CLI flag shows."""
    metadata = {"help": help, **extra}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    # what to train
    preset: str = option("tiny", "model preset (see `scratchlm presets`)")
    set: list[str] = option(  # noqa: RUF009 (option() returns a field with a default_factory)
        [],
        "override a model config field, FIELD=VALUE (repeatable), e.g. --set n_layer=8",
        repeat=True,
    )
    context_length: int | None = option(None, "context length (default: the preset's)")
    dropout: float | None = option(None, "dropout (default: the preset's)")
    # data
    data: str = option(
        "synthetic",
        "training text: file, directory, .jsonl, .parquet, .tar.gz, URL, hf:NAME, a shortcut "
        "(tinystories, wikitext2, shakespeare, fineweb), synthetic[:MB], or a prepared data dir",
    )
    val_data: str | None = option(
        None, "separate validation text (default: the last --val-fraction)"
    )
    val_fraction: float = option(0.1, "fraction of the data held out for validation")
    text_field: str = option("text", "field holding the text in .jsonl/.parquet/datasets")
    ascii_only: bool = option(False, "drop non-ASCII characters when cleaning the data")
    data_workers: int | None = option(None, "tokenizer worker processes (default: CPU count)")
    # tokenizer
    tokenizer: str = option("bpe", "char, bpe (both trained on --data), or a tokenizer.json path")
    vocab_size: int = option(4096, "BPE vocabulary size when training a BPE tokenizer")
    tokenizer_sample_chars: int = option(
        20_000_000, "characters of --data used to train the tokenizer"
    )
    # output
    out: str | None = option(None, "run directory (default: runs/PRESET)")
    # optimization
    batch_size: int = option(16, "sequences per micro-batch")
    windows: str = option(
        "any",
        "where training windows start: any (a new random offset each epoch) or document (at "
        "document starts, so each document is read from its beginning)",
    )
    micro_batch: str | None = option(
        None,
        "sequences per micro-batch: a number, or auto (the largest that fits the device; "
        "overrides --batch-size; accumulation keeps --tokens-per-step)",
    )
    tokens_per_step: int | None = option(
        None, "target tokens per optimizer step; gradient accumulation covers the rest"
    )
    optimizer: str = option(
        "auto",
        "auto (muon for pretraining, adamw for fine-tuning and under --fsdp), adamw, or muon "
        "(Muon for the blocks' weight matrices, AdamW for embeddings, head and gains)",
    )
    lr: float | None = option(None, "peak learning rate (default: by model size, 3e-3 .. 3e-4)")
    min_lr_ratio: float = option(0.1, "final learning rate as a fraction of the peak")
    warmup_steps: int = option(100, "linear warmup steps")
    schedule: str = option("cosine", "learning-rate schedule: cosine, wsd, constant")
    decay_fraction: float = option(0.2, "wsd: fraction of the run spent decaying")
    weight_decay: float = option(0.1, "AdamW weight decay (on weight matrices only)")
    beta1: float = option(0.9, "AdamW beta1")
    beta2: float = option(0.95, "AdamW beta2")
    grad_clip: float = option(1.0, "gradient clipping norm (0 = off)")
    token_weighting: str = option(
        "none", "loss re-weighting: none, or inverse-freq (rare tokens weigh more; see docs)"
    )
    token_weighting_power: float = option(
        0.5, "inverse-freq: a token's weight is (count + 1) ** -power, normalized"
    )
    # faults: loss spikes and overfitting
    spike_factor: float = option(
        3.0,
        "a batch whose loss exceeds this multiple of its moving average is skipped; a second "
        "in a row, or a NaN/inf loss, backtracks: reload the last checkpoint, lower the "
        "learning rate, skip the batches (0 = off)",
    )
    spike_window: int = option(50, "steps in the loss moving average for --spike-factor")
    spike_lr_factor: float = option(0.5, "multiply the learning rate by this at each backtrack")
    max_backtracks: int = option(5, "give up after this many backtracks")
    early_stop_patience: int | None = option(
        None,
        "stop when the validation loss has not improved for N evaluations; the final model "
        "is then the best one (best/)",
    )
    # budget
    max_steps: int | None = option(None, "stop after this many optimizer steps")
    max_tokens: int | None = option(None, "stop after this many training tokens")
    max_time: str | None = option(None, "stop after this wall time (seconds, or 90s / 5m / 2h)")
    stop_after_steps: int | None = option(
        None,
        "pause after this many steps (checkpoint saved; schedule unchanged; --resume continues)",
    )
    # evaluation and checkpoints
    eval_every: int = option(200, "evaluate on the validation split every N steps")
    eval_tokens: int = option(131072, "validation tokens per evaluation (at most)")
    sample_tokens: int = option(64, "tokens of sample text generated at each evaluation (0 = none)")
    sample_prompt: str | None = option(
        None, "prompt for the samples (default: start of a document)"
    )
    eval_tasks: str | None = option(
        None,
        "benchmark tasks scored zero-shot at each evaluation, comma-separated "
        "(e.g. hellaswag,arc_easy; core; mmlu), logged as task/NAME/METRIC (see docs/training.md)",
    )
    eval_tasks_limit: int = option(
        200, "--eval-tasks: examples scored per task (the first N of each)"
    )
    eval_task_data: str | None = option(
        None,
        "--eval-tasks: folder of task files in their upstream formats (default: read the "
        "Hugging Face hub, as `scratchlm eval --tasks` does)",
    )
    save_every: int = option(1000, "save a checkpoint every N steps (and always at the end)")
    keep_checkpoints: int = option(3, "step checkpoints to keep (best/ is kept separately)")
    log_every: int = option(10, "log training metrics every N steps")
    # system
    seed: int = option(1337, "random seed (model init, data order, dropout, samples)")
    resume: bool = option(False, "continue the run in --out from its latest checkpoint")
    device: str = option("auto", "auto, cpu, cuda, cuda:N or mps")
    precision: str = option(
        "auto", "auto, fp32, bf16 or fp16 (auto: bf16/fp16 on GPU, fp32 on CPU)"
    )
    compile: bool = option(False, "torch.compile the model")
    activation_checkpointing: bool = option(
        False,
        "recompute each block's activations in backward: less memory, about a third more compute",
    )
    fsdp: bool = option(
        False,
        "under torchrun: shard parameters, gradients and optimizer state over the ranks (FSDP2) "
        "instead of replicating the model (DDP)",
    )
    threads: int | None = option(None, "CPU threads for PyTorch (default: PyTorch's choice)")
    tensorboard: bool = option(
        False, "also write TensorBoard event files to OUT/tensorboard (needs the tensorboard extra)"
    )
    wandb: str | None = option(None, "log to this Weights & Biases project (needs wandb)")
    quiet: bool = option(False, "no progress bar or sample printing")
    config: str | None = option(None, "YAML or JSON file with these settings (flags override it)")

    def validate(self) -> None:
        problems = []
        for name in (
            "batch_size",
            "eval_every",
            "save_every",
            "log_every",
            "keep_checkpoints",
            "spike_window",
        ):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be >= 1")
        for name in (
            "max_steps",
            "max_tokens",
            "stop_after_steps",
            "tokens_per_step",
            "early_stop_patience",
        ):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"--{name.replace('_', '-')} must be >= 1")
        if self.windows not in ("any", "document"):
            problems.append(f"--windows must be any or document (got {self.windows!r})")
        if self.schedule not in ("cosine", "wsd", "constant"):
            problems.append(f"--schedule must be cosine, wsd or constant (got {self.schedule!r})")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            problems.append(
                f"--precision must be auto, fp32, bf16 or fp16 (got {self.precision!r})"
            )
        if not 0.0 < self.val_fraction < 1.0:
            problems.append(f"--val-fraction must be in (0, 1) (got {self.val_fraction})")
        if self.lr is not None and self.lr <= 0:
            problems.append("--lr must be positive")
        if self.max_time is not None:
            parse_duration(self.max_time)
        if self.micro_batch is not None and not (
            str(self.micro_batch) == "auto"
            or (str(self.micro_batch).isdigit() and int(self.micro_batch) >= 1)
        ):
            problems.append(
                f"--micro-batch must be auto or a positive number (got {self.micro_batch!r})"
            )
        if self.optimizer not in ("auto", "adamw", "muon"):
            problems.append(f"--optimizer must be auto, adamw or muon (got {self.optimizer!r})")
        if self.optimizer == "muon" and self.fsdp:
            problems.append(
                "--optimizer muon with --fsdp is not supported (Muon orthogonalizes whole "
                "matrices, FSDP shards them); use DDP (drop --fsdp) or --optimizer adamw"
            )
        if self.token_weighting not in ("none", "inverse-freq"):
            problems.append(
                f"--token-weighting must be none or inverse-freq (got {self.token_weighting!r})"
            )
        if self.token_weighting_power < 0:
            problems.append("--token-weighting-power must be >= 0")
        if self.spike_factor != 0 and self.spike_factor <= 1:
            problems.append(
                f"--spike-factor must be above 1, or 0 to turn it off (got {self.spike_factor})"
            )
        if not 0 < self.spike_lr_factor <= 1:
            problems.append(f"--spike-lr-factor must be in (0, 1] (got {self.spike_lr_factor})")
        if self.max_backtracks < 0:
            problems.append("--max-backtracks must be >= 0")
        if self.eval_tasks_limit < 1:
            problems.append(f"--eval-tasks-limit must be >= 1 (got {self.eval_tasks_limit})")
        if self.eval_task_data is not None and not self.eval_tasks:
            problems.append("--eval-task-data needs --eval-tasks (the tasks to read from it)")
        if self.eval_tasks is not None:
            eval_task_names(self.eval_tasks)  # an unknown task fails now, not at the first eval
        parse_model_overrides(self.set)  # a mistyped --set fails now, not after the data is read
        if problems:
            raise ScratchLMError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [item.name for item in dataclasses.fields(cls)]


def eval_task_names(spec: str) -> list[str]:
    """--eval-tasks "hellaswag,arc_easy" (or "core", "mmlu") -> task names; an unknown name is a
    one-line ScratchLMError naming the flag."""
    from scratchlm.evaluation.tasks import expand_task_names  # no torch: --help stays fast

    try:
        return expand_task_names(spec)
    except ScratchLMError as error:
        raise ScratchLMError(f"--eval-tasks: {error}") from None


def parse_duration(text: str | float | int) -> float:
    """'300', '90s', '5m', '1.5h' -> seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", str(text))
    if not match:
        raise ScratchLMError(
            f"cannot read the duration {text!r}; write seconds (300) or 90s, 5m, 2h"
        )
    value, unit = float(match.group(1)), match.group(2)
    return value * {"": 1, "s": 1, "m": 60, "h": 3600}[unit]


# --- typed settings from files and --set ------------------------------------------------------

# Names users bring from other tools, mapped to ours (the closest match by spelling misses them).
ALIASES = {
    "learning_rate": "lr",
    "steps": "max_steps",
    "n_embd": "d_model",
    "block_size": "context_length",
    "n_ctx": "context_length",
    "seq_len": "context_length",
    "num_layers": "n_layer",
    "num_heads": "n_head",
    "vocab": "vocab_size",
}
_NULLS = ("none", "null", "~", "")
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def field_types(cls: type) -> dict[str, Any]:
    """A dataclass's fields -> their resolved annotations (`from __future__ import annotations`
    leaves them as strings)."""
    hints = typing.get_type_hints(cls)
    return {item.name: hints[item.name] for item in dataclasses.fields(cls)}


def closest_name(name: str, known: list[str]) -> str:
    """The known name a mistyped one most likely meant (always one: the brief says which)."""
    if name in ALIASES and ALIASES[name] in known:
        return ALIASES[name]
    match = difflib.get_close_matches(name, known, n=1, cutoff=0.0)
    return match[0] if match else known[0]


def _expected(annotation: Any) -> str:
    """How an error message names a type: 'a float', 'an integer or null', 'one of a, b'."""
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [_expected(option) for option in arguments if option is not type(None)]
        return " or ".join(inner) + (" or null" if type(None) in arguments else "")
    if origin is typing.Literal:
        return "one of " + ", ".join(str(choice) for choice in arguments)
    if origin is list:
        return "a list of strings"
    return {bool: "true or false", int: "an integer", float: "a float", str: "a string"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class _Mismatch(Exception):
    """A value does not fit a type (turned into one ScratchLMError by `coerce_setting`)."""


def _coerce(value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() in _NULLS):
            if type(None) in arguments:
                return None
            raise _Mismatch
        for option in arguments:
            if option is type(None):
                continue
            try:
                return _coerce(value, option)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is typing.Literal:
        text = value if isinstance(value, str) else None
        if text is None or text not in arguments:
            raise _Mismatch
        return text
    if origin is list:
        if isinstance(value, dict):  # `set: {n_layer: 8}` -> ["n_layer=8"]
            return [f"{key}={_as_text(item)}" for key, item in value.items()]
        items = value if isinstance(value, list) else [value]
        return [_as_text(item) for item in items]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise _Mismatch
    if annotation is int:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, int):
            return value
        number = value if isinstance(value, float) else _number(value)
        if number is not None and math.isfinite(number) and float(number).is_integer():
            # 2e6 tokens, 1_000 steps: integers written the way people write them
            return int(number)
        raise _Mismatch
    if annotation is float:
        if isinstance(value, bool):
            raise _Mismatch
        number = float(value) if isinstance(value, (int, float)) else _number(value)
        if number is None or not math.isfinite(number):
            raise _Mismatch
        return float(number)
    if annotation is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise _Mismatch
        return value if isinstance(value, str) else _as_text(value)
    return value


def _number(value: Any) -> float | int | None:
    """'3e-4' (YAML 1.1 reads it as a string), '1_000', '42' -> a number; None if not one."""
    if not isinstance(value, str):
        return None
    text = value.strip().replace("_", "")
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def _as_text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def coerce_setting(value: Any, annotation: Any, *, key: str, source: str) -> Any:
    """`value` as the type `annotation` names (strings from YAML or --set become numbers,
    booleans or None where the field wants one), or a one-line ScratchLMError naming `key`."""
    try:
        return _coerce(value, annotation)
    except _Mismatch:
        raise ScratchLMError(
            f"{source}: {key} must be {_expected(annotation)}, got {_shown(value)}"
        ) from None


def read_config_file(
    path: str,
    *,
    extra: dict[str, Any] | None = None,
    refused: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A YAML or JSON file of TrainConfig keys (kebab-case or snake_case), each coerced to its
    field's type. `extra` adds settings the command takes besides TrainConfig's (name -> type:
    fine-tuning's LoRA flags); `refused` names settings the command does not take (name -> why)."""
    file = Path(path)
    if not file.is_file():
        raise ScratchLMError(f"config file {file} does not exist; pass a YAML or JSON file")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ScratchLMError(f"{file} is not UTF-8 text; save it as UTF-8") from None
    try:
        if file.suffix == ".json":
            values = json.loads(text)
        else:
            import yaml

            values = yaml.safe_load(text)
    except Exception as error:
        raise ScratchLMError(f"cannot parse {file}: {error}".splitlines()[0]) from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ScratchLMError(f"{file} must hold a mapping of settings (key: value)")
    known = {name: kind for name, kind in field_types(TrainConfig).items() if name != "config"}
    known.update(extra or {})
    for name in refused or {}:
        known.pop(name, None)
    result: dict[str, Any] = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if refused and name in refused:
            raise ScratchLMError(f"{file}: {key} {refused[name]}")
        if name not in known:
            suggestion = closest_name(name, sorted(known))
            raise ScratchLMError(
                f"{file}: unknown setting {key!r}; did you mean {suggestion!r}? "
                "(the settings are the flags' names, see --help)"
            )
        result[name] = coerce_setting(value, known[name], key=name, source=str(file))
    return result


def parse_model_overrides(assignments: list[str]) -> dict[str, Any]:
    """['n_layer=8', 'qk_norm=true', 'norm_eps=1e-5'] -> {'n_layer': 8, 'qk_norm': True,
    'norm_eps': 1e-05}: each value coerced to its ModelConfig field's type."""
    from scratchlm.config import ModelConfig

    kinds = field_types(ModelConfig)
    # Derived or owned elsewhere: an override would be silently replaced.
    owned = {
        "padded_vocab_size": "is derived from vocab_size and vocab_pad_multiple",
        "vocab_size": "comes from the tokenizer; use --vocab-size to size a BPE tokenizer",
        "description": "is not a model setting",
    }
    overrides: dict[str, Any] = {}
    for assignment in assignments:
        if "=" not in assignment:
            raise ScratchLMError(f"--set expects FIELD=VALUE, got {assignment!r}")
        key, raw = (part.strip() for part in assignment.split("=", 1))
        if key in owned:
            raise ScratchLMError(f"--set {key}: {key} {owned[key]}")
        if key not in kinds:
            suggestion = closest_name(key, sorted(set(kinds) - set(owned)))
            raise ScratchLMError(
                f"--set {assignment}: unknown model field {key!r}; did you mean {suggestion!r}? "
                "(`scratchlm info --preset tiny` lists the fields)"
            )
        overrides[key] = coerce_setting(raw, kinds[key], key=key, source=f"--set {assignment}")
    return overrides
