"""The commands that make a model: `tokenizer train`, `tokenize`, `data prepare`, `train`,
`finetune`, `merge-lora` and `quickstart`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from scratchlm.cli.options import (
    add_checkpoint_argument,
    add_device_argument,
    add_hidden_alias,
    add_train_arguments,
    print_json,
    resolve_train_config,
)
from scratchlm.errors import ScratchLMError
from scratchlm.finetune.settings import (
    FINETUNE_DEFAULTS,
    FINETUNE_EXCLUDED,
    FINETUNE_MAX_STEPS,
    LORA_DEFAULTS,
    LORA_TYPES,
)

# What `train` does with no --max-steps, --max-tokens or --max-time (training.setup's
# DEFAULT_MAX_STEPS; a test keeps the two equal without importing torch here).
TRAIN_DEFAULT_MAX_STEPS = 2000


# --- tokenizers -----------------------------------------------------------------------------------


def add_tokenizer_train(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", required=True, help="training text (any --data source of `train`)"
    )
    parser.add_argument("--kind", choices=["bpe", "char"], default="bpe", help="tokenizer kind")
    parser.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary size")
    parser.add_argument("--out", default="tokenizer.json", help="output tokenizer.json")
    parser.add_argument(
        "--sample-chars", type=int, default=20_000_000, help="characters of text to train on"
    )
    parser.add_argument(
        "--text-field", default="text", help="text field of .jsonl/.parquet/datasets"
    )
    parser.add_argument("--force", action="store_true", help="overwrite --out")


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


def add_tokenize(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tokenizer", required=True, help="tokenizer.json, or a checkpoint/run directory"
    )
    parser.add_argument("--text", help="text to tokenize (default: standard input)")
    parser.add_argument("--json", action="store_true", help="print JSON")


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
        print_json({"ids": ids, "pieces": pieces, "count": len(ids)})
        return
    print(f"{len(ids)} tokens ({len(text)} characters)")
    print("ids:   ", ids)
    print("pieces:", " | ".join(repr(piece)[1:-1] for piece in pieces))


def decode_escapes(text: str) -> str:
    """'\\n\\n' as typed in a shell -> two newlines (only \\n, \\t and \\r; other text is kept)."""
    return text.replace("\\n", "\n").replace("\\t", "\t").replace("\\r", "\r")


# --- data -----------------------------------------------------------------------------------------


def add_data_prepare(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        required=True,
        help="source text (file, dir, jsonl, parquet, tar.gz, URL, hf:NAME, shortcut)",
    )
    parser.add_argument(
        "--tokenizer", required=True, help="tokenizer.json, or a checkpoint/run directory"
    )
    parser.add_argument(
        "--out", required=True, help="output directory for shards and manifest.json"
    )
    parser.add_argument("--val-data", help="separate validation source")
    parser.add_argument(
        "--val-fraction", type=float, default=0.1, help="held-out fraction when no --val-data"
    )
    parser.add_argument(
        "--text-field", default="text", help="text field of .jsonl/.parquet/datasets"
    )
    parser.add_argument("--doc-separator", help="split .txt files into documents on this string")
    parser.add_argument(
        "--normalization",
        choices=["NFC", "NFKC", "none"],
        default="NFC",
        help="Unicode normalization",
    )
    parser.add_argument("--ascii-only", action="store_true", help="drop non-ASCII characters")
    parser.add_argument(
        "--keep-whitespace", action="store_true", help="do not normalize whitespace"
    )
    parser.add_argument("--min-chars", type=int, default=1, help="drop documents shorter than this")
    parser.add_argument("--no-dedup", action="store_true", help="keep exact duplicate documents")
    parser.add_argument(
        "--data-workers", type=int, help="tokenizer worker processes (default: CPU count)"
    )
    # The flag's name before `data prepare` took train's; kept for scripts, not shown.
    add_hidden_alias(parser, "--workers", "data_workers", type=int)
    parser.add_argument("--force", action="store_true", help="write into a non-empty --out")
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON")


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
        num_workers=args.data_workers,
        progress=not args.json,
    )
    manifest = json.loads((Path(result) / "manifest.json").read_text(encoding="utf-8"))
    if args.json:
        print_json(manifest)
        return
    for split, info in manifest["splits"].items():
        print(
            f"{split}: {info['tokens']:,} tokens, {info['documents']:,} documents, {len(info['shards'])} shard(s)"
        )
    print(f"wrote {result}")


# --- train ----------------------------------------------------------------------------------------


def add_print_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved settings (defaults < --config file < flags) as YAML and exit",
    )


def print_config(values: dict[str, Any]) -> None:
    """The settings as YAML that `--config` reads back (the `config` key itself left out)."""
    import yaml

    values = {key: value for key, value in values.items() if key != "config"}
    sys.stdout.write(yaml.safe_dump(values, sort_keys=False, allow_unicode=True))


def exit_if_stopped_by_signal(result: Any) -> None:
    """A run stopped by SIGTERM/SIGUSR1 saved its checkpoint (the trainer said where) but did
    not finish: exit 128 + the signal's number, as a process ended by that signal does and as
    Ctrl-C exits 130, so that `train && export` stops there and a scheduler that retries
    failed jobs runs it again (with --resume)."""
    if result.stop_signal is not None:
        raise SystemExit(128 + int(result.stop_signal))


def add_train(parser: argparse.ArgumentParser) -> None:
    add_train_arguments(
        parser,
        shown_defaults={
            "max_steps": f"{TRAIN_DEFAULT_MAX_STEPS} when no --max-tokens or --max-time is given"
        },
    )
    add_print_config_argument(parser)


def command_train(args: argparse.Namespace) -> None:
    config = resolve_train_config(args)
    if args.print_config:
        config.validate()
        print_config(config.to_dict())
        return
    from scratchlm.training.trainer import train

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


def own_values(
    defaults: dict[str, Any], args: argparse.Namespace, file_values: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A command's own settings (LoRA's, dpo's, rl's: the keys of `defaults`) from the flags
    typed, else the --config file, else the defaults."""
    values = {**defaults, **{k: v for k, v in (file_values or {}).items() if k in defaults}}
    values.update({name: value for name, value in vars(args).items() if name in defaults})
    return values


def lora_values(
    args: argparse.Namespace, file_values: dict[str, Any] | None = None
) -> dict[str, Any]:
    return own_values(LORA_DEFAULTS, args, file_values)


def lora_from_args(args: argparse.Namespace, file_values: dict[str, Any] | None = None) -> Any:
    from scratchlm.finetune.lora import LoRASettings

    values = lora_values(args, file_values)
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


def add_lora_arguments(parser: argparse.ArgumentParser) -> None:
    """The LoRA flags of finetune, dpo and rl. Defaults SUPPRESSed (shown in the help): a
    --config file may set them, flags override it."""
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
        parser.add_argument(
            flag, type=kind, default=argparse.SUPPRESS, help=f"{help_text} (default: {default})"
        )


def add_finetune(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(parser, "the base checkpoint or run directory")
    add_lora_arguments(parser)
    add_train_arguments(
        parser,
        exclude=FINETUNE_EXCLUDED,
        shown_defaults={
            **FINETUNE_DEFAULTS,
            "lr": "2e-4 full, 1e-3 LoRA",
            "max_steps": f"{FINETUNE_MAX_STEPS} when no --max-tokens or --max-time is given",
            "data": "required",
            "context_length": "the base model's; a longer one extends a rotary-position model",
        },
    )
    add_print_config_argument(parser)


def command_finetune(args: argparse.Namespace) -> None:
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
            "finetune needs --data: conversations (.jsonl, .jsonl.gz, .json or hf:NAME with Alpaca, "
            "messages, ShareGPT or prompt/completion records) or a text file"
        )
    config = resolve_train_config(args, FINETUNE_DEFAULTS, file_values=config_file)
    if config.max_steps is None and config.max_tokens is None and config.max_time is None:
        config.max_steps = FINETUNE_MAX_STEPS
    if args.print_config:
        config.validate()
        lora_from_args(args, config_file)  # a bad LoRA setting fails here too
        values = {
            key: value for key, value in config.to_dict().items() if key not in FINETUNE_EXCLUDED
        }
        print_config({**values, **lora_values(args, config_file)})
        return
    from scratchlm.finetune.trainer import finetune

    result = finetune(config, base=args.checkpoint, lora=lora_from_args(args, config_file))
    exit_if_stopped_by_signal(result)
    best = result.best_val_loss
    print(
        f"done: {result.steps} steps in {result.elapsed_s:.0f}s; best val loss {best if best is None else round(best, 4)}"
    )
    print(f"checkpoint: {result.checkpoint}   (best: {result.run_dir / 'best'})")
    print(f"next: scratchlm chat --checkpoint {result.run_dir}")


def add_merge_lora(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(parser, "a LoRA fine-tuning checkpoint or run directory")
    parser.add_argument("--out", required=True, help="output checkpoint directory")
    parser.add_argument(
        "--base", help="the base checkpoint (default: the one recorded in the LoRA checkpoint)"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing --out")


def command_merge_lora(args: argparse.Namespace) -> None:
    from scratchlm.finetune.merge import merge_lora_checkpoint

    out = merge_lora_checkpoint(args.checkpoint, args.out, base=args.base, force=args.force)
    print(f"wrote {out}: a plain checkpoint with the adapters folded in")


# --- quickstart -----------------------------------------------------------------------------------


def add_quickstart(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=5.0, help="total time budget in minutes")
    parser.add_argument("--out", default="quickstart", help="run directory")
    parser.add_argument("--preset", default="tiny", help="model preset")
    parser.add_argument(
        "--corpus-mb", type=int, default=20, help="size of the generated corpus in MB"
    )
    parser.add_argument(
        "--vocab-size",
        type=int,
        default=None,
        help="BPE vocabulary size (default 1024: small enough that the model learns to copy names)",
    )
    parser.add_argument("--no-chat", action="store_true", help="skip the chat fine-tuning stage")
    parser.add_argument("--seed", type=int, default=1337, help="random seed")
    add_device_argument(parser)


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
        **({} if args.vocab_size is None else {"vocab_size": args.vocab_size}),
    )
    if stopped_by is not None:
        raise SystemExit(128 + stopped_by)  # as `train` does: see exit_if_stopped_by_signal
