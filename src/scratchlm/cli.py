"""`scratchlm <command>`: one entry point. Thin: parse flags, call library functions, print.

User mistakes raise ScratchLMError anywhere below; `main` prints them as one line and exits 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import sys
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from scratchlm.errors import ScratchLMError

HelpFormatter = argparse.ArgumentDefaultsHelpFormatter


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


# --- presets and info -----------------------------------------------------------------------------


def command_presets(args: argparse.Namespace) -> None:
    from scratchlm.config import PRESETS, format_count, preset_config

    rows: list[dict[str, Any]] = []
    for name in PRESETS:
        config = preset_config(name)
        counts = config.parameter_counts()
        rows.append(
            {
                "name": name,
                "n_params": counts["n_params"],
                "n_params_non_embedding": counts["n_params_non_embedding"],
                "n_layer": config.n_layer,
                "d_model": config.d_model,
                "n_head": config.n_head,
                "n_kv_head": config.n_kv_head,
                "context_length": config.context_length,
                "description": config.description,
            }
        )
    if args.json:
        _print_json(rows)
        return
    print(
        f"{'preset':<17}{'params':>9}{'non-emb':>9}{'layers':>8}{'d_model':>9}{'heads':>7}{'kv':>4}{'context':>9}  description"
    )
    for row in rows:
        print(
            f"{row['name']:<17}{format_count(row['n_params']):>9}{format_count(row['n_params_non_embedding']):>9}"
            f"{row['n_layer']:>8}{row['d_model']:>9}{row['n_head']:>7}{row['n_kv_head']:>4}"
            f"{row['context_length']:>9}  {row['description']}"
        )


def command_info(args: argparse.Namespace) -> None:
    from scratchlm.config import format_count, preset_config

    metadata: dict[str, Any] = {}
    if args.checkpoint:
        from scratchlm.checkpoint import (
            checkpoint_config,
            read_metadata,
            resolve_checkpoint,
        )

        checkpoint_dir = resolve_checkpoint(args.checkpoint)
        metadata = read_metadata(checkpoint_dir)
        config = checkpoint_config(checkpoint_dir, metadata)
    else:
        config = preset_config(args.preset)
    # Counts come from shapes alone (the meta device / arithmetic), so kia-1.6b costs no memory.
    result: dict[str, Any] = {**config.to_dict(), **config.parameter_counts()}
    if metadata:
        result["checkpoint"] = {k: v for k, v in metadata.items() if k != "model"}
    if args.json:
        _print_json(result)
        return
    for key, value in result.items():
        if key.startswith("n_params"):
            value = f"{value:,} ({format_count(value)})"
        print(f"{key:>24}: {value}")


# --- tokenizers -----------------------------------------------------------------------------------


def command_tokenizer_train(args: argparse.Namespace) -> None:
    from scratchlm.data import sample_text
    from scratchlm.tokenizer import train_bpe, train_char

    texts = sample_text(args.data, max_chars=args.sample_chars, text_field=args.text_field)
    tokenizer = train_bpe(texts, args.vocab_size) if args.kind == "bpe" else train_char(texts)
    out = Path(args.out)
    if out.exists() and not args.force:
        raise ScratchLMError(
            f"{out} already exists; pass --force to overwrite it or choose another --out"
        )
    tokenizer.save(out)
    print(f"wrote {out}: {tokenizer.kind} tokenizer with {tokenizer.vocab_size} tokens")


def load_tokenizer_argument(path: str) -> Any:
    from scratchlm.tokenizer import Tokenizer

    candidate = Path(path)
    if candidate.is_dir() and not (candidate / "tokenizer.json").is_file():
        from scratchlm.checkpoint import resolve_checkpoint

        candidate = resolve_checkpoint(candidate)
    return Tokenizer.load(candidate)


def command_tokenize(args: argparse.Namespace) -> None:
    from scratchlm.tokenizer import require_unicode

    tokenizer = load_tokenizer_argument(args.tokenizer)
    if args.text is not None:
        text = args.text
    else:
        text = require_unicode(sys.stdin.read(), "standard input")
    ids = tokenizer.encode(text)
    pieces = [tokenizer.id_to_piece(token_id) for token_id in ids]
    if args.json:
        _print_json({"ids": ids, "pieces": pieces, "count": len(ids)})
        return
    print(f"{len(ids)} tokens ({len(text)} characters)")
    print("ids:   ", ids)
    print("pieces:", " | ".join(repr(piece)[1:-1] for piece in pieces))


def decode_escapes(text: str) -> str:
    """'\\n\\n' as typed in a shell -> two newlines (only \\n, \\t and \\r; other text is kept)."""
    return text.replace("\\n", "\n").replace("\\t", "\t").replace("\\r", "\r")


# --- data -----------------------------------------------------------------------------------------


def command_data_prepare(args: argparse.Namespace) -> None:
    from scratchlm.data import CleaningOptions, prepare_dataset

    tokenizer = load_tokenizer_argument(args.tokenizer)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise ScratchLMError(
            f"{out} already exists and is not empty; pass --force or choose another --out"
        )
    cleaning = CleaningOptions(
        unicode_normalization=None if args.normalization == "none" else args.normalization,
        ascii_only=args.ascii_only,
        normalize_whitespace=not args.keep_whitespace,
        min_chars=args.min_chars,
        deduplicate=not args.no_dedup,
    )
    result = prepare_dataset(
        args.data,
        out,
        tokenizer,
        val_source=args.val_data,
        val_fraction=args.val_fraction,
        text_field=args.text_field,
        # "\n\n" typed in a shell arrives as backslash-n: read escapes as a user means them.
        doc_separator=decode_escapes(args.doc_separator) if args.doc_separator else None,
        cleaning=cleaning,
        num_workers=args.workers,
        progress=not args.json,
    )
    manifest = json.loads((Path(result) / "manifest.json").read_text(encoding="utf-8"))
    if args.json:
        _print_json(manifest)
        return
    for split, info in manifest["splits"].items():
        print(
            f"{split}: {info['tokens']:,} tokens, {info['documents']:,} documents, {len(info['shards'])} shard(s)"
        )
    print(f"wrote {result}")


# --- train ----------------------------------------------------------------------------------------


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
        default = (shown_defaults or {}).get(item.name, default)
        help_text = f"{item.metadata['help']} (default: {default})"
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


def exit_if_stopped_by_signal(result: Any) -> None:
    """A run stopped by SIGTERM/SIGUSR1 saved its checkpoint (the trainer said where) but did
    not finish: exit 128 + the signal's number, as a process ended by that signal does and as
    Ctrl-C exits 130, so that `train && export` stops there and a scheduler that retries
    failed jobs runs it again (with --resume)."""
    if result.stop_signal is not None:
        raise SystemExit(128 + int(result.stop_signal))


def command_train(args: argparse.Namespace) -> None:
    from scratchlm.training.trainer import train

    config = resolve_train_config(args)
    result = train(config)
    exit_if_stopped_by_signal(result)
    print(
        f"done: {result.steps} steps, {result.tokens:,} tokens in {result.elapsed_s:.0f}s "
        f"({result.tokens_per_s:,.0f} tokens/s); best val loss "
        f"{result.best_val_loss if result.best_val_loss is None else round(result.best_val_loss, 4)}"
    )
    print(f"checkpoint: {result.checkpoint}   (best: {result.run_dir / 'best'})")
    print(f'next: scratchlm generate --checkpoint {result.run_dir} --prompt "..."')


# --- fine-tuning ----------------------------------------------------------------------------------

FINETUNE_DEFAULTS: dict[str, Any] = {
    "warmup_steps": 20,
    "eval_every": 50,
    "save_every": 200,
    "sample_tokens": 48,
    "tokenizer": "base",
}
FINETUNE_EXCLUDED = frozenset(
    {"preset", "set", "tokenizer", "vocab_size", "tokenizer_sample_chars", "context_length"}
)


# finetune's own settings (besides TrainConfig's): flag defaults, and their types in a --config file
LORA_DEFAULTS: dict[str, Any] = {
    "lora_rank": 0,
    "lora_alpha": 16.0,
    "lora_dropout": 0.0,
    "lora_targets": "q_proj,k_proj,v_proj,o_proj",
}
LORA_TYPES: dict[str, Any] = {name: type(value) for name, value in LORA_DEFAULTS.items()}


def lora_from_args(args: argparse.Namespace, file_values: dict[str, Any] | None = None) -> Any:
    """LoRA settings from the flags typed, else the --config file, else the defaults."""
    from scratchlm.finetune.lora import LoRASettings

    values = {**LORA_DEFAULTS, **(file_values or {})}
    values.update({name: value for name, value in vars(args).items() if name in LORA_DEFAULTS})
    if not values["lora_rank"]:
        return None
    targets = tuple(
        target.strip() for target in str(values["lora_targets"]).split(",") if target.strip()
    )
    return LoRASettings(
        rank=values["lora_rank"],
        alpha=values["lora_alpha"],
        dropout=values["lora_dropout"],
        targets=targets,
    )


def command_finetune(args: argparse.Namespace) -> None:
    from scratchlm.finetune.trainer import finetune
    from scratchlm.training.run_config import read_config_file

    config_file = (
        read_config_file(
            args.config,
            extra=LORA_TYPES,
            refused={
                name: "does not apply to finetune: the model and its tokenizer come from "
                "--checkpoint; remove it from the file"
                for name in FINETUNE_EXCLUDED
            },
        )
        if getattr(args, "config", None)
        else {}
    )
    if "data" not in vars(args) and "data" not in config_file:
        raise ScratchLMError(
            "finetune needs --data: a JSONL of conversations (Alpaca, messages or prompt/completion) or a text file"
        )
    config = resolve_train_config(args, FINETUNE_DEFAULTS, file_values=config_file)
    if config.max_steps is None and config.max_tokens is None and config.max_time is None:
        config.max_steps = 300
    result = finetune(config, base=args.checkpoint, lora=lora_from_args(args, config_file))
    exit_if_stopped_by_signal(result)
    best = result.best_val_loss
    print(
        f"done: {result.steps} steps in {result.elapsed_s:.0f}s; best val loss {best if best is None else round(best, 4)}"
    )
    print(f"checkpoint: {result.checkpoint}   (best: {result.run_dir / 'best'})")
    print(f"next: scratchlm chat --checkpoint {result.run_dir}")


def command_merge_lora(args: argparse.Namespace) -> None:
    from scratchlm.finetune.merge import merge_lora_checkpoint

    out = merge_lora_checkpoint(args.checkpoint, args.out, base=args.base, force=args.force)
    print(f"wrote {out}: a plain checkpoint with the adapters folded in")


# --- inference and evaluation ---------------------------------------------------------------------


SAMPLERS = ("greedy", "temperature", "top-k", "top-p", "beam")


def sampling_from_args(args: argparse.Namespace) -> Any:
    """--sampler picks which controls apply; without it the flags apply as given."""
    from scratchlm.inference.sampling import SamplingSettings

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
    parser.add_argument(
        "--quantize",
        choices=["none", "int8"],
        default="none",
        help="int8 weights for faster CPU decoding",
    )


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sampler", choices=SAMPLERS, help="sampling method (default: the flags below as given)"
    )
    parser.add_argument(
        "--temperature", type=float, default=0.8, help="sampling temperature (0 = greedy)"
    )
    parser.add_argument(
        "--top-k", type=int, default=50, help="sample from the k most likely tokens"
    )
    parser.add_argument(
        "--top-p", type=float, default=None, help="nucleus sampling mass (e.g. 0.9)"
    )
    parser.add_argument(
        "--min-p", type=float, default=None, help="drop tokens below min-p x the top probability"
    )
    parser.add_argument(
        "--repetition-penalty",
        type=float,
        default=1.0,
        help="divide seen tokens' positive logits (multiply negative ones) by this",
    )
    parser.add_argument(
        "--presence-penalty", type=float, default=0.0, help="subtract from seen tokens' logits"
    )
    parser.add_argument(
        "--frequency-penalty",
        type=float,
        default=0.0,
        help="subtract per occurrence from seen tokens' logits",
    )
    parser.add_argument(
        "--max-new-tokens", type=int, default=200, help="tokens to generate at most"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling")


def command_generate(args: argparse.Namespace) -> None:
    from scratchlm.inference.beam import beam_search
    from scratchlm.inference.engine import Engine
    from scratchlm.inference.load import load_for_inference

    loaded, device = load_for_inference(
        args.checkpoint, args.device, args.quantize, verify=not args.skip_checksums
    )
    tokenizer = loaded.tokenizer
    settings = sampling_from_args(args)
    prompt_ids = tokenizer.encode(args.prompt) if args.prompt else [tokenizer.eos_id]
    stop_ids = frozenset({tokenizer.eos_id})
    if args.num_samples < 1:
        raise ScratchLMError(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.sampler == "beam":
        results = beam_search(
            loaded.model,
            prompt_ids,
            beam_width=max(args.beam_width, args.num_samples),
            max_new_tokens=args.max_new_tokens,
            length_penalty=args.length_penalty,
            stop_ids=stop_ids,
            truncate=args.truncate,
        )
        for rank, result in enumerate(results[: args.num_samples], start=1):
            if args.num_samples > 1:
                print(
                    f"--- beam {rank}: score {result.score:.4f} (log-probability {result.log_probability:.3f})"
                )
            print(
                args.prompt
                + _cut_at_stop(tokenizer.decode(result.token_ids, skip_special=True), args.stop)
            )
        return
    draft = None
    if args.draft_checkpoint:
        from scratchlm.checkpoint import load_checkpoint

        draft = load_checkpoint(args.draft_checkpoint, device, verify=not args.skip_checksums)
        if draft.tokenizer.fingerprint() != tokenizer.fingerprint():
            raise ScratchLMError(
                "--draft-checkpoint uses a different tokenizer; the draft must share the target's tokenizer"
            )
    engine = Engine(loaded.model, device=device)
    for sample in range(args.num_samples):
        seed = None if args.seed is None else args.seed + sample
        if args.num_samples > 1:
            print(f"--- sample {sample + 1}")
        sys.stdout.write(args.prompt)
        sys.stdout.flush()
        if draft is not None:
            from scratchlm.inference.speculative import SpeculativeStats, speculative_text

            stats = SpeculativeStats()
            pieces = speculative_text(
                loaded.model,
                draft.model,
                tokenizer,
                prompt_ids,
                max_new_tokens=args.max_new_tokens,
                sampling=settings,
                draft_tokens=args.draft_tokens,
                seed=seed,
                stop_ids=stop_ids,
                stop_strings=args.stop or [],
                stats=stats,
            )
        else:
            pieces = engine.stream_text(
                tokenizer,
                prompt_ids,
                max_new_tokens=args.max_new_tokens,
                sampling=settings,
                seed=seed,
                stop_ids=stop_ids,
                stop_strings=args.stop or [],
                truncate=args.truncate,
            )
        for text in pieces:
            sys.stdout.write(text)
            sys.stdout.flush()
        sys.stdout.write("\n")
        if draft is not None:
            print(
                f"[speculative: {stats.accepted}/{stats.drafted} drafted tokens accepted "
                f"({stats.acceptance_rate:.0%}) in {stats.rounds} target passes]",
                file=sys.stderr,
            )
        elif engine.truncated_tokens:
            print(
                f"[the prompt was cut: its first {engine.truncated_tokens} tokens were dropped]",
                file=sys.stderr,
            )


def _cut_at_stop(text: str, stops: list[str] | None) -> str:
    cuts = [text.find(stop) for stop in stops or [] if stop and stop in text]
    return text[: min(cuts)] if cuts else text


def command_bench(args: argparse.Namespace) -> None:
    import torch

    from scratchlm.inference.bench import run_benchmark

    if args.checkpoint:
        from scratchlm.inference.load import load_for_inference

        loaded, device = load_for_inference(
            args.checkpoint, args.device, verify=not args.skip_checksums
        )
        model = loaded.model
    else:
        from scratchlm.config import preset_config
        from scratchlm.device import select_device
        from scratchlm.model import build_model

        device = select_device(args.device)
        torch.manual_seed(0)
        model = build_model(preset_config(args.preset), device)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if args.precision != "auto":
        model.to(dtypes[args.precision])
    elif device.type == "cuda":
        model.to(torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    model.eval()
    if args.threads:
        torch.set_num_threads(args.threads)
    from scratchlm.inference.quantize import quantize_for_cpu

    model = quantize_for_cpu(model, args.quantize)
    if args.compile:
        model.forward = torch.compile(model.forward, dynamic=True)  # type: ignore[method-assign]
    result = run_benchmark(
        model,
        prompt_tokens=args.prompt_tokens,
        new_tokens=args.new_tokens,
        batch_sizes=tuple(args.batch_size),
        num_runs=args.num_runs,
    )
    values = result.as_dict()
    if args.json:
        _print_json(values)
        return
    print(
        f"model: {values['n_params']:,} parameters, {values['dtype']} on {values['device']}; "
        f"prompt {args.prompt_tokens} tokens, {args.new_tokens} new tokens, median of {args.num_runs} runs"
    )
    print(f"prefill:             {values['prefill_tokens_per_s']:>12,.0f} tokens/s")
    print(f"time to first token: {values['time_to_first_token_s'] * 1000:>12,.1f} ms")
    print(f"decode (batch 1):    {values['decode_tokens_per_s']:>12,.1f} tokens/s")
    for batch, rate in result.batched_decode_tokens_per_s.items():
        print(f"decode (batch {batch:>2}):   {rate:>12,.1f} tokens/s aggregate")
    print(f"peak memory:         {values['peak_memory_bytes'] / 2**20:>12,.1f} MiB")


def command_eval(args: argparse.Namespace) -> None:
    if args.prompts:
        command_eval_prompts(args)
        return
    if not args.data:
        raise ScratchLMError(
            "eval needs --data TEXT (loss, perplexity, bits/byte) or --prompts FILE (a prompt suite)"
        )
    from scratchlm.data import iter_documents
    from scratchlm.evaluation.perplexity import evaluate_text
    from scratchlm.inference.load import load_for_inference

    loaded, device = load_for_inference(
        args.checkpoint, args.device, verify=not args.skip_checksums
    )
    # Raw text, uncleaned: the score is of the text exactly as given.
    documents = (
        "".join(document.pieces())
        for document in iter_documents(args.data, text_field=args.text_field)
    )
    result = evaluate_text(
        loaded.model, loaded.tokenizer, documents, device=device, batch_size=args.batch_size
    )
    if result.tokens == 0:
        raise ScratchLMError(f"{args.data} holds no text to evaluate; pass a non-empty file")
    values = result.as_dict()
    if args.json:
        _print_json(values)
        return
    print(
        f"loss {values['loss']:.4f} nats/token | perplexity {values['perplexity']:.3f} | "
        f"{values['bits_per_byte']:.4f} bits/byte | {values['tokens']:,} tokens"
    )


def command_eval_prompts(args: argparse.Namespace) -> None:
    from scratchlm.checkpoint import load_checkpoint
    from scratchlm.evaluation.prompts import read_prompts, run_prompt_suite

    prompts = read_prompts(args.prompts)
    verify = not args.skip_checksums
    from scratchlm.inference.load import load_for_inference

    loaded, device = load_for_inference(args.checkpoint, args.device, args.quantize, verify=verify)
    others = [load_checkpoint(path, device, verify=verify) for path in args.compare or []]
    markdown, jsonl = run_prompt_suite(
        [loaded, *others],
        prompts,
        sampling=sampling_from_args(args),
        max_new_tokens=args.max_new_tokens,
        seed=args.seed if args.seed is not None else 0,
        suite_name=args.suite_name or f"prompts-{Path(args.prompts).stem}",
    )
    if args.json:
        _print_json({"markdown": str(markdown), "jsonl": str(jsonl), "prompts": len(prompts)})
        return
    print(f"{len(prompts)} prompts x {1 + len(others)} checkpoint(s): wrote {markdown} and {jsonl}")


def command_report(args: argparse.Namespace) -> None:
    from scratchlm.report import write_report

    paths = write_report(
        args.run_dir, out=args.out, bench=not args.no_bench, bench_tokens=args.bench_tokens
    )
    print(f"wrote {paths.html}")
    print(f"wrote {paths.markdown}")
    if paths.speed.error:
        print(f"inference speed not measured: {paths.speed.error}")


def command_quickstart(args: argparse.Namespace) -> None:
    from scratchlm.quickstart import run_quickstart

    stopped_by = run_quickstart(
        out=Path(args.out),
        minutes=args.minutes,
        preset=args.preset,
        seed=args.seed,
        device=args.device,
        corpus_mb=args.corpus_mb,
        chat=not args.no_chat,
    )
    if stopped_by is not None:
        raise SystemExit(128 + stopped_by)  # as `train` does: see exit_if_stopped_by_signal


# --- parser ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scratchlm",
        description="Build your own GPT-style language model from scratch.",
        formatter_class=HelpFormatter,
    )
    from scratchlm import __version__

    parser.add_argument("--version", action="version", version=f"scratchlm {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(
        name: str, handler: Callable[[argparse.Namespace], None], help: str, group: Any = commands
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = group.add_parser(
            name, help=help, description=help, formatter_class=HelpFormatter
        )
        sub.set_defaults(handler=handler)
        return sub

    sub = add("presets", command_presets, "list model presets with parameter counts")
    sub.add_argument("--json", action="store_true", help="print JSON")

    sub = add(
        "info",
        command_info,
        "show a preset's or checkpoint's full config and exact parameter count",
    )
    source = sub.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", help="preset name")
    source.add_argument("--checkpoint", help="checkpoint or run directory")
    sub.add_argument("--json", action="store_true", help="print JSON")

    tokenizer_parser = commands.add_parser(
        "tokenizer", help="tokenizer commands", formatter_class=HelpFormatter
    )
    tokenizer_commands = tokenizer_parser.add_subparsers(
        dest="tokenizer_command", metavar="COMMAND", required=True
    )
    sub = add(
        "train", command_tokenizer_train, "train a BPE or character tokenizer", tokenizer_commands
    )
    sub.add_argument("--data", required=True, help="training text (any --data source of `train`)")
    sub.add_argument("--kind", choices=["bpe", "char"], default="bpe", help="tokenizer kind")
    sub.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary size")
    sub.add_argument("--out", default="tokenizer.json", help="output tokenizer.json")
    sub.add_argument(
        "--sample-chars", type=int, default=20_000_000, help="characters of text to train on"
    )
    sub.add_argument("--text-field", default="text", help="text field of .jsonl/.parquet/datasets")
    sub.add_argument("--force", action="store_true", help="overwrite --out")

    sub = add("tokenize", command_tokenize, "show the ids and pieces of a text")
    sub.add_argument(
        "--tokenizer", required=True, help="tokenizer.json, or a checkpoint/run directory"
    )
    sub.add_argument("--text", help="text to tokenize (default: standard input)")
    sub.add_argument("--json", action="store_true", help="print JSON")

    data_parser = commands.add_parser("data", help="data commands", formatter_class=HelpFormatter)
    data_commands = data_parser.add_subparsers(
        dest="data_command", metavar="COMMAND", required=True
    )
    sub = add(
        "prepare", command_data_prepare, "clean and tokenize text into token shards", data_commands
    )
    sub.add_argument(
        "--data",
        required=True,
        help="source text (file, dir, jsonl, parquet, tar.gz, URL, hf:NAME, shortcut)",
    )
    sub.add_argument(
        "--tokenizer", required=True, help="tokenizer.json, or a checkpoint/run directory"
    )
    sub.add_argument("--out", required=True, help="output directory for shards and manifest.json")
    sub.add_argument("--val-data", help="separate validation source")
    sub.add_argument(
        "--val-fraction", type=float, default=0.1, help="held-out fraction when no --val-data"
    )
    sub.add_argument("--text-field", default="text", help="text field of .jsonl/.parquet/datasets")
    sub.add_argument("--doc-separator", help="split .txt files into documents on this string")
    sub.add_argument(
        "--normalization",
        choices=["NFC", "NFKC", "none"],
        default="NFC",
        help="Unicode normalization",
    )
    sub.add_argument("--ascii-only", action="store_true", help="drop non-ASCII characters")
    sub.add_argument("--keep-whitespace", action="store_true", help="do not normalize whitespace")
    sub.add_argument("--min-chars", type=int, default=1, help="drop documents shorter than this")
    sub.add_argument("--no-dedup", action="store_true", help="keep exact duplicate documents")
    sub.add_argument("--workers", type=int, help="tokenizer worker processes (default: CPU count)")
    sub.add_argument("--force", action="store_true", help="write into a non-empty --out")
    sub.add_argument("--json", action="store_true", help="print the manifest as JSON")

    sub = add(
        "train",
        command_train,
        "pretrain a model (defaults run: tiny preset on the built-in corpus)",
    )
    add_train_arguments(sub)

    sub = add(
        "finetune",
        command_finetune,
        "fine-tune a checkpoint on chat data (JSONL) or text, fully or with LoRA",
    )
    sub.add_argument("--checkpoint", required=True, help="the base checkpoint or run directory")
    # Defaults SUPPRESSed (shown in the help): a --config file may set them, flags override it.
    for flag, kind, help_text in (
        ("--lora-rank", int, "LoRA rank (0 = full fine-tuning)"),
        ("--lora-alpha", float, "LoRA scale numerator (scale = alpha / rank)"),
        ("--lora-dropout", float, "dropout on the LoRA input"),
        (
            "--lora-targets",
            str,
            "comma-separated layers to adapt: q_proj k_proj v_proj o_proj gate_proj up_proj "
            "down_proj",
        ),
    ):
        default = LORA_DEFAULTS[flag[2:].replace("-", "_")]
        sub.add_argument(
            flag, type=kind, default=argparse.SUPPRESS, help=f"{help_text} (default: {default})"
        )
    add_train_arguments(
        sub,
        exclude=FINETUNE_EXCLUDED,
        shown_defaults={
            **FINETUNE_DEFAULTS,
            "lr": "2e-4 full, 1e-3 LoRA",
            "max_steps": "300 if no budget",
            "data": "required",
        },
    )

    from scratchlm.chat.terminal import add_chat_arguments, command_chat
    from scratchlm.export.hf import (
        add_export_hf_arguments,
        add_import_hf_arguments,
        command_export_hf,
        command_import_hf,
    )

    export_parser = commands.add_parser(
        "export", help="export to Hugging Face (and GGUF/Ollama)", formatter_class=HelpFormatter
    )
    export_commands = export_parser.add_subparsers(
        dest="export_command", metavar="FORMAT", required=True
    )
    sub = add(
        "hf",
        command_export_hf,
        "a Hugging Face model directory (LlamaForCausalLM or GPT2LMHeadModel)",
        export_commands,
    )
    add_export_hf_arguments(sub)
    from scratchlm.export.gguf import add_export_gguf_arguments, command_export_gguf
    from scratchlm.export.ollama import add_export_ollama_arguments, command_export_ollama

    sub = add(
        "gguf",
        command_export_gguf,
        "a GGUF file for llama.cpp (f32, f16, bf16 or q8_0)",
        export_commands,
    )
    add_export_gguf_arguments(sub)
    sub = add("ollama", command_export_ollama, "a GGUF plus an Ollama Modelfile", export_commands)
    add_export_ollama_arguments(sub)
    import_parser = commands.add_parser(
        "import", help="import from Hugging Face", formatter_class=HelpFormatter
    )
    import_commands = import_parser.add_subparsers(
        dest="import_command", metavar="FORMAT", required=True
    )
    sub = add(
        "hf",
        command_import_hf,
        "a local Hugging Face llama or gpt2 directory into a checkpoint",
        import_commands,
    )
    add_import_hf_arguments(sub)
    from scratchlm.server.cli import add_serve_arguments, command_serve

    sub = add(
        "serve",
        command_serve,
        "OpenAI-compatible HTTP server with continuous batching and a chat page",
    )
    add_serve_arguments(sub)

    sub = add(
        "chat", command_chat, "multi-turn chat in the terminal (the KV cache is kept across turns)"
    )
    add_chat_arguments(sub)

    sub = add(
        "merge-lora", command_merge_lora, "fold a LoRA run's adapters into a plain checkpoint"
    )
    sub.add_argument(
        "--checkpoint", required=True, help="a LoRA fine-tuning checkpoint or run directory"
    )
    sub.add_argument("--out", required=True, help="output checkpoint directory")
    sub.add_argument(
        "--base", help="the base checkpoint (default: the one recorded in the LoRA checkpoint)"
    )
    sub.add_argument("--force", action="store_true", help="replace an existing --out")

    sub = add(
        "eval",
        command_eval,
        "loss, perplexity and bits per byte on a text; or replies to a prompt suite",
    )
    sub.add_argument("--checkpoint", required=True, help="checkpoint or run directory")
    sub.add_argument("--data", help="text to evaluate (any --data source)")
    sub.add_argument("--text-field", default="text", help="text field of .jsonl/.parquet/datasets")
    sub.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    sub.add_argument("--prompts", help="prompt suite: one prompt per line, or JSONL with 'prompt'")
    sub.add_argument(
        "--compare",
        action="append",
        metavar="CHECKPOINT",
        help="with --prompts: also answer with this checkpoint (repeatable)",
    )
    sub.add_argument("--suite-name", help="with --prompts: output name (default: prompts-FILESTEM)")
    add_sampling_arguments(sub)
    sub.set_defaults(temperature=0.7, max_new_tokens=128)
    add_quantize_argument(sub)
    add_skip_checksums_argument(sub)
    sub.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    sub.add_argument(
        "--json", action="store_true", help="print JSON (loss, perplexity, bits_per_byte, tokens)"
    )

    sub = add(
        "generate", command_generate, "generate text from a prompt, printed as it is produced"
    )
    sub.add_argument("--checkpoint", required=True, help="checkpoint or run directory")
    sub.add_argument("--prompt", default="", help="text to continue (default: start of a document)")
    add_sampling_arguments(sub)
    sub.add_argument(
        "--stop", action="append", metavar="TEXT", help="stop when this text appears (repeatable)"
    )
    sub.add_argument(
        "--num-samples",
        type=int,
        default=1,
        help="independent samples (seeds seed, seed+1, ...) or best beams",
    )
    sub.add_argument("--beam-width", type=int, default=4, help="beams for --sampler beam")
    sub.add_argument(
        "--length-penalty", type=float, default=1.0, help="beam score = log-prob / length**penalty"
    )
    sub.add_argument(
        "--draft-checkpoint", help="a small model with the same tokenizer, for speculative decoding"
    )
    sub.add_argument(
        "--draft-tokens", type=int, default=4, help="tokens the draft proposes per target pass"
    )
    sub.add_argument(
        "--truncate",
        action="store_true",
        help="drop the oldest prompt tokens if the prompt is too long",
    )
    add_quantize_argument(sub)
    add_skip_checksums_argument(sub)
    sub.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")

    sub = add(
        "bench",
        command_bench,
        "inference speed: prefill, decode at batch 1 and more, time to first token, memory",
    )
    source = sub.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="checkpoint or run directory")
    source.add_argument("--preset", help="a preset with random weights")
    sub.add_argument("--prompt-tokens", type=int, default=128, help="prompt length")
    sub.add_argument("--new-tokens", type=int, default=128, help="tokens to decode")
    sub.add_argument(
        "--batch-size",
        type=int,
        nargs="+",
        default=[1, 8],
        help="batch sizes to decode at (aggregate tokens/s)",
    )
    sub.add_argument(
        "--num-runs", type=int, default=3, help="runs per measurement (median reported)"
    )
    sub.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    sub.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        default="auto",
        help="weights dtype (auto: bf16/fp16 on GPU, fp32 on CPU)",
    )
    sub.add_argument("--threads", type=int, help="CPU threads")
    add_quantize_argument(sub)
    add_skip_checksums_argument(sub)
    sub.add_argument("--compile", action="store_true", help="torch.compile the model")
    sub.add_argument("--json", action="store_true", help="print JSON")

    sub = add(
        "report",
        command_report,
        "one self-contained HTML (and Markdown) page per run: config, curves, samples, speed",
    )
    sub.add_argument("run_dir", metavar="RUN_DIR", help="the --out directory of a train run")
    sub.add_argument("--out", help="output directory or NAME.html (none: into RUN_DIR)")
    sub.add_argument("--no-bench", action="store_true", help="skip the inference speed measurement")
    sub.add_argument(
        "--bench-tokens", type=int, default=32, help="tokens to decode when measuring speed"
    )

    sub = add(
        "quickstart",
        command_quickstart,
        "build the default corpus, train a tokenizer and a small model, show samples",
    )
    sub.add_argument("--minutes", type=float, default=5.0, help="total time budget in minutes")
    sub.add_argument("--out", default="quickstart", help="run directory")
    sub.add_argument("--preset", default="tiny", help="model preset")
    sub.add_argument("--corpus-mb", type=int, default=20, help="size of the generated corpus in MB")
    sub.add_argument("--no-chat", action="store_true", help="skip the chat fine-tuning stage")
    sub.add_argument("--seed", type=int, default=1337, help="random seed")
    sub.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    return parser


# Arguments that are text for the model, checked for valid UTF-8 before any work. Paths are not
# in the list: on Linux a file name may hold any bytes, and Python hands them over losslessly.
TEXT_ARGUMENTS = (
    "text",
    "prompt",
    "stop",
    "system_prompt",
    "system",
    "sample_prompt",
    "doc_separator",
)


def check_text_arguments(args: argparse.Namespace) -> None:
    from scratchlm.tokenizer import require_unicode

    for dest in TEXT_ARGUMENTS:
        value = getattr(args, dest, None)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                require_unicode(item, f"--{dest.replace('_', '-')}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if isinstance(sys.stdin, io.TextIOWrapper):
        # Invalid bytes on stdin arrive as lone surrogates (as on argv) instead of raising inside
        # input() or read(); every reader then reports them in one line (tokenizer.require_unicode).
        sys.stdin.reconfigure(errors="surrogateescape")
    try:
        check_text_arguments(args)
        args.handler(args)
    except ScratchLMError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `scratchlm generate ... | head`: the reader left; not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as error:
        # The machine's fault, not a bug of ours (disk full, permissions, a file that vanished):
        # one line naming the file. Commands that can say more (which checkpoint survived, which
        # flag to change) catch their own OSErrors first.
        where = f": {os.fsdecode(error.filename)}" if error.filename is not None else ""
        print(
            f"error: {error.strerror or error}{where}; free space or fix the permissions or the "
            "path, then run the command again",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
