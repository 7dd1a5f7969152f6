"""`scratchlm presets` and `scratchlm info`: the model presets and one config in full."""

from __future__ import annotations

import argparse
from typing import Any

from scratchlm.cli.options import add_checkpoint_argument, print_json


def add_presets(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")


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
        print_json(rows)
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


def add_info(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", help="preset name")
    add_checkpoint_argument(source, required=False)
    parser.add_argument("--json", action="store_true", help="print JSON")


def command_info(args: argparse.Namespace) -> None:
    from scratchlm.config import format_count, preset_config

    metadata: dict[str, Any] = {}
    if args.checkpoint:
        from scratchlm.checkpoint import checkpoint_config, read_metadata, resolve_checkpoint

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
        print_json(result)
        return
    for key, value in result.items():
        if key.startswith("n_params"):
            value = f"{value:,} ({format_count(value)})"
        print(f"{key:>24}: {value}")
