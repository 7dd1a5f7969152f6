"""The Python API behind `import scratchlm`: `load` a checkpoint into a `LanguageModel` (generate,
stream, chat, score), and `train` / `finetune` runs with the CLI's settings.

Nothing heavy is imported at module level: `import scratchlm` stays cheap (no torch) and each
function imports what it needs when called. The settings and defaults are the CLI's own (the
TrainConfig fields, typed by `training.run_config`; the sampling defaults of `cli.options`), read
from where the CLI keeps them, never restated here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from scratchlm.errors import ScratchLMError

if TYPE_CHECKING:
    import torch

    from scratchlm.chat_template import Message
    from scratchlm.checkpoint import Checkpoint
    from scratchlm.config import ModelConfig
    from scratchlm.inference.settings import SamplingSettings
    from scratchlm.model import GPT
    from scratchlm.tokenizer import Tokenizer
    from scratchlm.training.run_config import TrainConfig

# Keyword arguments of generate/stream/chat besides the SamplingSettings fields.
_CONTROL_SETTINGS = ("max_new_tokens", "seed", "stop")


class Score(NamedTuple):
    """`LanguageModel.score(text)`: mean nats per predicted token, and bits per UTF-8 byte."""

    loss: float
    bits_per_byte: float


class LanguageModel:
    """A checkpoint loaded for inference (see `load`). `.model` is the torch module, `.config`
    its ModelConfig, `.tokenizer` the Tokenizer, `.device` where it runs and `.path` the
    checkpoint directory it came from."""

    def __init__(self, loaded: Checkpoint, device: torch.device) -> None:
        self.model: GPT = loaded.model
        self.config: ModelConfig = loaded.config
        self.tokenizer: Tokenizer = loaded.tokenizer
        self.device = device
        self.path: Path = loaded.path
        self.metadata: dict[str, Any] = loaded.metadata

    def __repr__(self) -> str:
        return (
            f"LanguageModel({str(self.path)!r}, {self.config.n_params:,} parameters, "
            f"{self.tokenizer.kind} tokenizer, on {self.device})"
        )

    # --- generation -------------------------------------------------------------------------------
    def generate(self, prompt: str = "", **sampling: Any) -> str:
        """The text generated after `prompt` (the prompt itself not included). An empty prompt
        starts a new document. Keyword arguments: the SamplingSettings fields (temperature,
        top_k, top_p, min_p, repetition_penalty, presence_penalty, frequency_penalty),
        max_new_tokens, seed and stop (strings that end the text); defaults are the CLI's."""
        return "".join(self.stream(prompt, **sampling))

    def stream(self, prompt: str = "", **sampling: Any) -> Iterator[str]:
        """`generate` as it happens: text pieces (whole UTF-8 characters) as they are decoded."""
        from scratchlm.tokenizer import require_unicode

        if not isinstance(prompt, str):
            raise ScratchLMError(f"the prompt must be a string, got {type(prompt).__name__}")
        require_unicode(prompt, "the prompt")
        ids = self.tokenizer.encode(prompt) if prompt else [self.tokenizer.eos_id]
        return self._stream_ids(ids, frozenset({self.tokenizer.eos_id}), sampling)

    def chat(self, messages: Sequence[Message], **sampling: Any) -> str:
        """The assistant's reply to a conversation: a list of {"role", "content"} messages (an
        optional system message first, then user and assistant turns), rendered with the one
        chat template (`scratchlm.chat_template.render`). Same keyword arguments as `generate`."""
        from scratchlm.chat_template import end_of_turn_id, render
        from scratchlm.tokenizer import (
            ASSISTANT_TOKEN,
            EOS_TOKEN,
            SYSTEM_TOKEN,
            USER_TOKEN,
        )

        ids, _ = render(messages, self.tokenizer, add_generation_prompt=True)
        # The end marker and EOS end a reply; so does a role marker (as in `scratchlm chat`): a
        # model that starts a turn of its own has finished its reply.
        stop_ids = frozenset(
            {end_of_turn_id(self.tokenizer)}
            | {
                self.tokenizer.special_id(token)
                for token in (EOS_TOKEN, ASSISTANT_TOKEN, USER_TOKEN, SYSTEM_TOKEN)
            }
        )
        return "".join(self._stream_ids(ids, stop_ids, sampling))

    def _stream_ids(
        self, prompt_ids: list[int], stop_ids: frozenset[int], sampling: dict[str, Any]
    ) -> Iterator[str]:
        from scratchlm.inference.engine import Engine

        settings, controls = sampling_settings(sampling)
        stop = controls["stop"]
        stop_strings = [stop] if isinstance(stop, str) else list(stop or [])
        return Engine(self.model).stream_text(
            self.tokenizer,
            prompt_ids,
            max_new_tokens=controls["max_new_tokens"],
            sampling=settings,
            seed=controls["seed"],
            stop_ids=stop_ids,
            stop_strings=stop_strings,
        )

    # --- scoring ----------------------------------------------------------------------------------
    def score(self, text: str) -> Score:
        """(loss, bits_per_byte) of `text` as one document (`scratchlm eval --data`'s numbers):
        mean nats per token over the text and the EOS after it, in context-length windows."""
        from scratchlm.evaluation.perplexity import evaluate_text
        from scratchlm.inference.kernels.decoder import kernel_logits
        from scratchlm.tokenizer import require_unicode

        if not isinstance(text, str) or not text:
            raise ScratchLMError("score() needs some text; pass a non-empty string")
        require_unicode(text, "the text")
        result = evaluate_text(
            self.model, self.tokenizer, [text], device=self.device, fast_logits=kernel_logits
        )
        assert result.bits_per_byte is not None  # the text is not empty
        return Score(result.loss, result.bits_per_byte)


def sampling_settings(values: dict[str, Any]) -> tuple[SamplingSettings, dict[str, Any]]:
    """Keyword arguments -> (SamplingSettings, {max_new_tokens, seed, stop}), each missing one at
    the CLI's default; an unknown name is a one-line error with the closest known one."""
    import dataclasses

    from scratchlm.inference.settings import SamplingError, SamplingSettings, generation_defaults
    from scratchlm.training.run_config import closest_name

    fields = [item.name for item in dataclasses.fields(SamplingSettings)]
    known = [*fields, *_CONTROL_SETTINGS]
    for name in values:
        if name not in known:
            raise ScratchLMError(
                f"unknown sampling setting {name!r}; did you mean "
                f"{closest_name(name, known)!r}? (known: {', '.join(known)})"
            )
    merged = {**generation_defaults(), "stop": (), **values}
    try:
        settings = SamplingSettings(**{name: merged[name] for name in fields})
    except SamplingError as error:  # named as the keyword argument, not as the CLI flag
        raise ScratchLMError(error.for_request()) from None
    return settings, {name: merged[name] for name in _CONTROL_SETTINGS}


def load(
    path: str | os.PathLike[str],
    device: str = "auto",
    quantize: str = "none",
    verify: bool = True,
    kv_cache: str = "fp32",
) -> LanguageModel:
    """A checkpoint directory, or a run directory (its best/, else its latest checkpoint),
    loaded for inference: `device` auto (CUDA > MPS > CPU), cpu, cuda, cuda:N or mps;
    `quantize="q8"` (or "q4", "bf16") for faster CPU decoding; `verify=False` skips the
    checksums (the CLI's --skip-checksums); `kv_cache="fp16"` halves the KV cache (CPU)."""
    from scratchlm.inference.load import load_for_inference

    loaded, chosen = load_for_inference(
        os.fspath(path), device, quantize, verify=verify, kv_cache=kv_cache
    )
    return LanguageModel(loaded, chosen)


# --- training -------------------------------------------------------------------------------------


def _settings(settings: dict[str, Any], kinds: dict[str, Any], source: str) -> dict[str, Any]:
    """Keyword arguments coerced to their fields' types as a --config file's values are
    (`lr="3e-4"` works, a path may be a Path); unknown names fail with the closest known one."""
    from scratchlm.training.run_config import closest_name, coerce_setting

    values: dict[str, Any] = {}
    for name, value in settings.items():
        if name not in kinds:
            raise ScratchLMError(
                f"{source}: unknown setting {name!r}; did you mean "
                f"{closest_name(name, sorted(kinds))!r}? (the settings are the CLI flags' names)"
            )
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        values[name] = coerce_setting(value, kinds[name], key=name, source=source)
    return values


def train_config(**settings: Any) -> TrainConfig:
    """The TrainConfig `train(**settings)` runs: its defaults < the file in `config=` (read as
    `scratchlm train --config` reads it) < the other keyword arguments; validated."""
    from scratchlm.training.run_config import TrainConfig, field_types, read_config_file

    values = _settings(settings, field_types(TrainConfig), "scratchlm.train")
    file_values = read_config_file(values["config"]) if values.get("config") else {}
    config = TrainConfig(**{**file_values, **values})
    config.validate()
    return config


def train(**settings: Any) -> Path:
    """Train a model (the `scratchlm train` settings, as keyword arguments: preset, data,
    tokenizer, max_steps, out, config, ...) and return its run directory. A run stopped by
    SIGTERM/SIGUSR1 returns too, after saving its checkpoint; continue it with resume=True."""
    from scratchlm.training.trainer import train as run_training

    return run_training(train_config(**settings)).run_dir


def _fine_tuning_settings(
    command: str,
    settings: dict[str, Any],
    *,
    excluded: frozenset[str],
    extra_types: dict[str, Any],
    defaults: dict[str, Any],
    refusal: str,
    max_steps: int,
) -> tuple[Any, dict[str, Any], Any]:
    """What finetune, dpo and rl share: typed keyword settings over a `config=` file over the
    command's defaults -> (TrainConfig, every merged value, LoRASettings or None)."""
    from scratchlm.finetune.lora import LoRASettings
    from scratchlm.finetune.settings import LORA_DEFAULTS, LORA_TYPES
    from scratchlm.training.run_config import TrainConfig, field_types, read_config_file

    kinds = {name: kind for name, kind in field_types(TrainConfig).items() if name not in excluded}
    extra = {**LORA_TYPES, **extra_types}
    values = _settings(settings, {**kinds, **extra}, f"scratchlm.{command}")
    file_values = (
        read_config_file(
            values["config"],
            extra=extra,
            refused={name: f"{refusal}; remove it from the file" for name in excluded},
        )
        if values.get("config")
        else {}
    )
    merged = {**defaults, **file_values, **values}
    names = TrainConfig.field_names()  # finetune's tokenizer "base" included, as the CLI
    config = TrainConfig(**{name: value for name, value in merged.items() if name in names})
    if config.max_steps is None and config.max_tokens is None and config.max_time is None:
        config.max_steps = max_steps
    lora = {name: merged.get(name, default) for name, default in LORA_DEFAULTS.items()}
    adapters = None
    if lora["lora_rank"]:
        targets = tuple(
            target.strip() for target in str(lora["lora_targets"]).split(",") if target.strip()
        )
        adapters = LoRASettings(
            rank=lora["lora_rank"],
            alpha=lora["lora_alpha"],
            dropout=lora["lora_dropout"],
            targets=targets,
        )
    return config, merged, adapters


def finetune(checkpoint: str | os.PathLike[str], **settings: Any) -> Path:
    """Fine-tune `checkpoint` (a checkpoint or run directory) with the `scratchlm finetune`
    settings as keyword arguments (data is required; lora_rank > 0 for LoRA) and return the run
    directory. The model, its tokenizer and context come from the checkpoint."""
    from scratchlm.finetune.settings import (
        FINETUNE_DEFAULTS,
        FINETUNE_EXCLUDED,
        FINETUNE_MAX_STEPS,
    )
    from scratchlm.finetune.trainer import finetune as run_finetune

    config, merged, adapters = _fine_tuning_settings(
        "finetune",
        settings,
        excluded=FINETUNE_EXCLUDED,
        extra_types={},
        defaults=FINETUNE_DEFAULTS,
        refusal="does not apply to finetune: the model and its tokenizer come from the checkpoint",
        max_steps=FINETUNE_MAX_STEPS,
    )
    if "data" not in merged:
        raise ScratchLMError(
            "finetune needs data=: conversations (.jsonl, .jsonl.gz, .json or hf:NAME with "
            "Alpaca, messages, ShareGPT or prompt/completion records) or a text file"
        )
    return run_finetune(config, base=os.fspath(checkpoint), lora=adapters).run_dir


def rl(checkpoint: str | os.PathLike[str], **settings: Any) -> Path:
    """Reinforcement learning from verifiable rewards on `checkpoint` (a chat checkpoint or run
    directory) with the `scratchlm rl` settings as keyword arguments (task is required: arithmetic,
    story-qa, gsm8k or file with task_data; reward, prompts_per_step, group_size, ...;
    lora_rank > 0 for LoRA) and return the run directory."""
    from scratchlm.finetune.rl import RLSettings
    from scratchlm.finetune.rl import rl as run_rl
    from scratchlm.finetune.settings import (
        RL_DEFAULTS,
        RL_EXCLUDED,
        RL_MAX_STEPS,
        RL_TRAIN_DEFAULTS,
        RL_TYPES,
    )

    config, merged, adapters = _fine_tuning_settings(
        "rl",
        settings,
        excluded=RL_EXCLUDED,
        extra_types=RL_TYPES,
        defaults=RL_TRAIN_DEFAULTS,
        refusal="does not apply to rl (the prompts come from the task, the model from the "
        "checkpoint)",
        max_steps=RL_MAX_STEPS,
    )
    if merged.get("task") is None:
        raise ScratchLMError(
            "rl needs task=: arithmetic, story-qa, gsm8k, or file (with task_data=)"
        )
    rl_settings = RLSettings(
        **{name: merged.get(name, default) for name, default in RL_DEFAULTS.items()}
    )
    result = run_rl(config, base=os.fspath(checkpoint), settings=rl_settings, lora=adapters)
    return result.run_dir


def dpo(checkpoint: str | os.PathLike[str], **settings: Any) -> Path:
    """Preference-tune `checkpoint` (an SFT checkpoint or run directory) with the `scratchlm dpo`
    settings as keyword arguments (data is required; loss "sigmoid"|"ipo"|"simpo", beta,
    simpo_gamma; lora_rank > 0 for LoRA) and return the run directory."""
    from scratchlm.finetune.dpo import DPOSettings
    from scratchlm.finetune.dpo import dpo as run_dpo
    from scratchlm.finetune.settings import (
        DPO_DEFAULTS,
        DPO_EXCLUDED,
        DPO_TYPES,
        FINETUNE_DEFAULTS,
        FINETUNE_MAX_STEPS,
    )

    config, merged, adapters = _fine_tuning_settings(
        "dpo",
        settings,
        excluded=DPO_EXCLUDED,
        extra_types=DPO_TYPES,
        defaults=FINETUNE_DEFAULTS,
        refusal="does not apply to dpo: the model and its tokenizer come from the checkpoint, "
        "and preference pairs are records, not text",
        max_steps=FINETUNE_MAX_STEPS,
    )
    if "data" not in merged:
        raise ScratchLMError(
            "dpo needs data=: preference pairs ({prompt, chosen, rejected}, {instruction, "
            "input, chosen, rejected} or chosen/rejected conversations)"
        )
    preference = DPOSettings(
        **{name: merged.get(name, default) for name, default in DPO_DEFAULTS.items()}
    )
    result = run_dpo(config, base=os.fspath(checkpoint), settings=preference, lora=adapters)
    return result.run_dir
