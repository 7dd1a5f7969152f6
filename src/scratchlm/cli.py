"""`scratchlm <command>`: one entry point. Thin: parse flags, call library functions, print.

User mistakes raise ScratchLMError anywhere below; `main` prints them as one line and exits 2.
"""

from __future__ import annotations

import argparse
import dataclasses
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
    from scratchlm.config import ModelConfig, format_count, preset_config

    metadata: dict[str, Any] = {}
    if args.checkpoint:
        from scratchlm.training.checkpoint import read_metadata, resolve_checkpoint

        checkpoint_dir = resolve_checkpoint(args.checkpoint)
        metadata = read_metadata(checkpoint_dir)
        config = ModelConfig.from_dict(metadata["model"])
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
        from scratchlm.training.checkpoint import resolve_checkpoint

        candidate = resolve_checkpoint(candidate)
    return Tokenizer.load(candidate)


def command_tokenize(args: argparse.Namespace) -> None:
    tokenizer = load_tokenizer_argument(args.tokenizer)
    text = args.text if args.text is not None else sys.stdin.read()
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
    """int | None -> int; list[str] -> list."""
    if isinstance(annotation, str):
        annotation = eval(annotation, {"list": list, "dict": dict})  # annotations are postponed
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return options[0]
    return origin or annotation


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field; defaults stay in TrainConfig (SUPPRESS here), so that
    `--config FILE` can sit between the defaults and the flags actually typed."""
    from scratchlm.training.run_config import TrainConfig

    for item in dataclasses.fields(TrainConfig):
        kind = _base_type(item.type)
        if item.default is not dataclasses.MISSING:
            default: Any = item.default
        else:
            assert not isinstance(item.default_factory, dataclasses._MISSING_TYPE)
            default = item.default_factory()
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


def resolve_train_config(args: argparse.Namespace) -> Any:
    from scratchlm.training.run_config import TrainConfig, read_config_file

    given = {name: value for name, value in vars(args).items() if name in TrainConfig.field_names()}
    values: dict[str, Any] = {}
    if given.get("config"):
        values.update(read_config_file(given["config"]))
    values.update(given)
    return TrainConfig(**values)


def command_train(args: argparse.Namespace) -> None:
    from scratchlm.training.trainer import train

    config = resolve_train_config(args)
    result = train(config)
    print(
        f"done: {result.steps} steps, {result.tokens:,} tokens in {result.elapsed_s:.0f}s "
        f"({result.tokens_per_s:,.0f} tokens/s); best val loss "
        f"{result.best_val_loss if result.best_val_loss is None else round(result.best_val_loss, 4)}"
    )
    print(f"checkpoint: {result.checkpoint}   (best: {result.run_dir / 'best'})")
    print(f'next: scratchlm generate --checkpoint {result.run_dir} --prompt "..."')


# --- inference and evaluation ---------------------------------------------------------------------


def load_for_inference(checkpoint: str, device_name: str) -> Any:
    from scratchlm.training.checkpoint import load_checkpoint
    from scratchlm.training.trainer import select_device

    device = select_device(device_name)
    return load_checkpoint(checkpoint, device), device


def command_generate(args: argparse.Namespace) -> None:
    from scratchlm.inference.engine import Engine
    from scratchlm.inference.sampling import SamplingSettings
    from scratchlm.inference.streaming import IncrementalDecoder

    loaded, device = load_for_inference(args.checkpoint, args.device)
    tokenizer = loaded.tokenizer
    settings = SamplingSettings(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    prompt_ids = tokenizer.encode(args.prompt) if args.prompt else [tokenizer.eos_id]
    engine = Engine(loaded.model, device=device)
    engine.check_prompt(prompt_ids)
    decoder = IncrementalDecoder(tokenizer)
    sys.stdout.write(args.prompt)
    sys.stdout.flush()
    for token_id in engine.generate(
        prompt_ids,
        max_new_tokens=args.max_new_tokens,
        sampling=settings,
        seed=args.seed,
        stop_ids=frozenset({tokenizer.eos_id}),
    ):
        sys.stdout.write(decoder.push(token_id))
        sys.stdout.flush()
    sys.stdout.write(decoder.flush() + "\n")


def command_eval(args: argparse.Namespace) -> None:
    from scratchlm.data import iter_documents
    from scratchlm.evaluation.perplexity import evaluate_text

    loaded, device = load_for_inference(args.checkpoint, args.device)
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


def command_quickstart(args: argparse.Namespace) -> None:
    from scratchlm.quickstart import run_quickstart

    run_quickstart(
        out=Path(args.out),
        minutes=args.minutes,
        preset=args.preset,
        seed=args.seed,
        device=args.device,
        corpus_mb=args.corpus_mb,
    )


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

    sub = add("eval", command_eval, "loss, perplexity and bits per byte of a checkpoint on a text")
    sub.add_argument("--checkpoint", required=True, help="checkpoint or run directory")
    sub.add_argument("--data", required=True, help="text to evaluate (any --data source)")
    sub.add_argument("--text-field", default="text", help="text field of .jsonl/.parquet/datasets")
    sub.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    sub.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    sub.add_argument(
        "--json", action="store_true", help="print JSON (loss, perplexity, bits_per_byte, tokens)"
    )

    sub = add(
        "generate", command_generate, "generate text from a prompt, printed as it is produced"
    )
    sub.add_argument("--checkpoint", required=True, help="checkpoint or run directory")
    sub.add_argument("--prompt", default="", help="text to continue (default: start of a document)")
    sub.add_argument("--max-new-tokens", type=int, default=200, help="tokens to generate at most")
    sub.add_argument(
        "--temperature", type=float, default=0.8, help="sampling temperature (0 = greedy)"
    )
    sub.add_argument("--top-k", type=int, default=50, help="sample from the k most likely tokens")
    sub.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass (e.g. 0.9)")
    sub.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling")
    sub.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")

    sub = add(
        "quickstart",
        command_quickstart,
        "build the default corpus, train a tokenizer and a small model, show samples",
    )
    sub.add_argument("--minutes", type=float, default=5.0, help="total time budget in minutes")
    sub.add_argument("--out", default="quickstart", help="run directory")
    sub.add_argument("--preset", default="tiny", help="model preset")
    sub.add_argument("--corpus-mb", type=int, default=20, help="size of the generated corpus in MB")
    sub.add_argument("--seed", type=int, default=1337, help="random seed")
    sub.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
