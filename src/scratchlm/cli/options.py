"""The flag groups several commands share: sampling, quantization, device, checkpoint input,
--skip-checksums and the training settings (one flag per `TrainConfig` field).

Each group is defined once here, so a flag has one name, one help text and one set of defaults
across commands; a command states only where its defaults differ (`add_sampling_arguments(parser,
temperature=0.7)`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from typing import Any

from scratchlm.errors import ScratchLMError
from scratchlm.inference.settings import generation_defaults


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each default once: a help text that already says "(default: ...)" (because the
    value alone would mislead, e.g. None for "the preset's") gets no second one, and a flag
    whose default is None (not set: the help says what happens then) gets none."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "(default:" in text or action.default is None:
            return text
        return super()._get_help_string(action)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


# The one set of sampling defaults of the CLI (those of `SamplingSettings`, the engine's, plus
# how many tokens to generate); `chat` and `eval` pass only the values they change.
# The one set of generation defaults (torch-free, shared with the Python API).
SAMPLING_DEFAULTS: dict[str, Any] = generation_defaults()
SAMPLERS = ("greedy", "temperature", "top-k", "top-p", "beam")


def add_checkpoint_argument(
    parser: argparse.ArgumentParser | Any,
    help: str = "checkpoint or run directory",
    *,
    required: bool = True,
    old_flag: str | None = None,
    metavar: str = "CHECKPOINT",
) -> None:
    """--checkpoint (-m, as llama.cpp's --model): the model every reading command takes;
    `old_flag`, the command's name for it before, stays accepted."""
    if old_flag is None:
        parser.add_argument("-m", "--checkpoint", required=required, metavar=metavar, help=help)
        return
    # Either spelling satisfies "required": checked after parsing (see require_checkpoint).
    parser.add_argument("-m", "--checkpoint", metavar=metavar, help=f"{help} (required)")
    add_hidden_alias(parser, old_flag, "checkpoint")


def require_checkpoint(args: argparse.Namespace, command: str) -> str:
    checkpoint: str | None = getattr(args, "checkpoint", None)
    if not checkpoint:
        raise ScratchLMError(f"{command} needs --checkpoint PATH (-m PATH)")
    return checkpoint


def add_hidden_alias(
    parser: argparse.ArgumentParser | Any, flag: str, dest: str, **kwargs: Any
) -> None:
    """An old spelling of a flag, still accepted (scripts use it) but not shown in --help."""
    parser.add_argument(
        flag, dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs
    )


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")


def add_skip_checksums_argument(parser: argparse.ArgumentParser) -> None:
    """The flag of every command that reads a checkpoint: load it without checking its files
    against the SHA-256 checksums in its config.json."""
    parser.add_argument(
        "--skip-checksums",
        action="store_true",
        help="do not verify the checkpoint's files against their checksums (faster for large "
        "models; loads a damaged checkpoint anyway)",
    )


def add_quantize_argument(parser: argparse.ArgumentParser) -> None:
    # "int8" (retired) stays a choice, unlisted, so quantize_for_cpu can name its replacement.
    parser.add_argument(
        "--quantize",
        choices=["none", "q8", "q4", "bf16", "int8"],
        default="none",
        metavar="{none,q8,q4,bf16}",
        help="weights for the CPU decode kernels: q8/q4 blocks (as GGUF Q8_0/Q4_0) or bf16, "
        "packed once beside the checkpoint; faster decoding, slightly different outputs",
    )
    parser.add_argument(
        "--kv-cache",
        choices=["fp32", "fp16"],
        default="fp32",
        help="the KV cache's element type on CPU: fp16 halves the bytes attention reads per "
        "position (many rows, long contexts), keys and values rounded to fp16",
    )


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for PyTorch and the decode kernels (default: $OMP_NUM_THREADS, else "
        "PyTorch's choice: the physical cores)",
    )


def apply_threads(args: argparse.Namespace) -> None:
    """Set --threads (when the command has it and it was given) before any model work. PyTorch's
    thread count is process-wide: the server's scheduler thread and the kernels read it too."""
    threads: int | None = getattr(args, "threads", None)
    if threads is None:
        return
    if threads < 1:
        raise ScratchLMError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def add_sampling_arguments(parser: argparse.ArgumentParser, **differences: Any) -> None:
    """The sampling flags with SAMPLING_DEFAULTS, except the `differences` this command makes."""
    unknown = set(differences) - set(SAMPLING_DEFAULTS)
    assert not unknown, f"not sampling settings: {unknown}"
    defaults = {**SAMPLING_DEFAULTS, **differences}
    parser.add_argument(
        "--sampler", choices=SAMPLERS, help="sampling method (default: the flags below as given)"
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=defaults["temperature"],
        help="sampling temperature (0 = greedy)",
    )
    parser.add_argument(
        "--top-k",
        type=int,
        default=defaults["top_k"],
        help="sample from the k most likely tokens",
    )
    parser.add_argument(
        "--top-p", type=float, default=defaults["top_p"], help="nucleus sampling mass (e.g. 0.9)"
    )
    parser.add_argument(
        "--min-p",
        type=float,
        default=defaults["min_p"],
        help="drop tokens below min-p x the top probability",
    )
    parser.add_argument(
        "--repetition-penalty",
        type=float,
        default=defaults["repetition_penalty"],
        help="divide seen tokens' positive logits (multiply negative ones) by this",
    )
    parser.add_argument(
        "--presence-penalty",
        type=float,
        default=defaults["presence_penalty"],
        help="subtract from seen tokens' logits",
    )
    parser.add_argument(
        "--frequency-penalty",
        type=float,
        default=defaults["frequency_penalty"],
        help="subtract per occurrence from seen tokens' logits",
    )
    parser.add_argument(
        "-n",
        "--max-new-tokens",
        type=int,
        default=defaults["max_new_tokens"],
        help="tokens to generate at most",
    )
    parser.add_argument(
        "--seed", type=int, default=defaults["seed"], help="seed for reproducible sampling"
    )


def sampling_from_args(args: argparse.Namespace) -> Any:
    """--sampler picks which controls apply; without it the flags apply as given."""
    from scratchlm.inference.settings import SamplingSettings

    temperature, top_k, top_p = args.temperature, args.top_k, args.top_p
    if args.sampler == "greedy":
        temperature = 0.0
    elif args.sampler == "temperature":
        top_k, top_p = None, None
    elif args.sampler == "top-k":
        top_p = None
    elif args.sampler == "top-p":
        top_k, top_p = None, top_p if top_p is not None else 0.9
    return SamplingSettings(
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        presence_penalty=args.presence_penalty,
        frequency_penalty=args.frequency_penalty,
    )


# --- training settings ----------------------------------------------------------------------------


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(annotation: Any) -> Any:
    """int | None -> int; list[str] -> list (a resolved annotation, see `field_types`)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return options[0]
    return origin or annotation


def add_train_arguments(
    parser: argparse.ArgumentParser,
    *,
    exclude: frozenset[str] = frozenset(),
    shown_defaults: dict[str, Any] | None = None,
) -> None:
    """One flag per TrainConfig field; defaults stay in TrainConfig (SUPPRESS here), so that
    `--config FILE` can sit between the defaults and the flags actually typed."""
    from scratchlm.training.run_config import TrainConfig, field_types

    kinds = field_types(TrainConfig)
    for item in dataclasses.fields(TrainConfig):
        if item.name in exclude:
            continue
        kind = _base_type(kinds[item.name])
        if item.default is not dataclasses.MISSING:
            default: Any = item.default
        else:
            assert not isinstance(item.default_factory, dataclasses._MISSING_TYPE)
            default = item.default_factory()
        help_text = item.metadata["help"]
        if item.name in (shown_defaults or {}):
            # What happens when the flag is not given, said instead of the field's raw default.
            help_text = f"{help_text.split(' (default:')[0]} (default: {shown_defaults[item.name]})"  # type: ignore[index]
        elif "(default:" not in help_text and default is not None:
            help_text = f"{help_text} (default: {default})"
        if kind is bool:
            parser.add_argument(
                _flag(item.name),
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        elif kind is list:
            parser.add_argument(
                _flag(item.name),
                action="append",
                default=argparse.SUPPRESS,
                metavar="FIELD=VALUE",
                help=help_text,
            )
        else:
            parser.add_argument(
                _flag(item.name), type=kind, default=argparse.SUPPRESS, help=help_text
            )


def resolve_train_config(
    args: argparse.Namespace,
    defaults: dict[str, Any] | None = None,
    *,
    file_values: dict[str, Any] | None = None,
) -> Any:
    """defaults < the --config file (typed, see `read_config_file`) < the flags typed."""
    from scratchlm.training.run_config import TrainConfig, read_config_file

    names = TrainConfig.field_names()
    given = {name: value for name, value in vars(args).items() if name in names}
    values: dict[str, Any] = dict(defaults or {})
    if file_values is None and given.get("config"):
        file_values = read_config_file(given["config"])
    values.update({name: value for name, value in (file_values or {}).items() if name in names})
    values.update(given)
    return TrainConfig(**values)
