"""`scratchlm export hf|gguf|ollama` and `scratchlm import hf`: flags over the library functions
of `scratchlm.export`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scratchlm.cli.options import (
    add_checkpoint_argument,
    add_hidden_alias,
    add_skip_checksums_argument,
    require_checkpoint,
)

# The weight types of `export.gguf.GGUF_DTYPES` (a test keeps them equal): listed here so that
# --help does not import the exporter (torch, numpy).
GGUF_DTYPES = ("f32", "f16", "bf16", "q8_0")
# `export.layouts.LAYOUT_CHOICES`, likewise kept equal by a test.
LAYOUT_CHOICES = ("auto", "llama", "qwen3", "gpt2", "custom")


def add_layout_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--layout",
        default="auto",
        choices=LAYOUT_CHOICES,
        help="architecture to write (auto: the first standard one that computes this model "
        "exactly, else for `export hf` custom: our own modeling code, loaded with "
        "trust_remote_code=True; a forced standard one that is not exact is refused)",
    )


def add_export_hf(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(parser)
    parser.add_argument("--out", required=True, help="output Hugging Face model directory")
    add_layout_argument(parser)
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    add_skip_checksums_argument(parser)


def command_export_hf(args: argparse.Namespace) -> None:
    from scratchlm.export.hf import export_hf

    out = export_hf(
        args.checkpoint,
        args.out,
        force=args.force,
        verify=not args.skip_checksums,
        layout=args.layout,
    )
    hf_config = json.loads((out / "config.json").read_text())
    # The custom layout carries its own modeling code, which transformers runs only when asked.
    remote = ", trust_remote_code=True" if "auto_map" in hf_config else ""
    print(
        f"wrote {out} ({hf_config['architectures'][0]}); load it with "
        f"AutoModelForCausalLM.from_pretrained({str(out)!r}{remote})"
    )


def add_export_gguf(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(parser)
    parser.add_argument("--out", required=True, type=Path, help="the .gguf file to write")
    parser.add_argument(
        "--dtype", default="f32", choices=GGUF_DTYPES, help="weight type (norms stay f32)"
    )
    add_layout_argument(parser)
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    add_skip_checksums_argument(parser)


def command_export_gguf(args: argparse.Namespace) -> None:
    from scratchlm.export.gguf import export_gguf

    path = export_gguf(
        args.checkpoint,
        args.out,
        dtype=args.dtype,
        force=args.force,
        verify=not args.skip_checksums,
        layout=args.layout,
    )
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {args.dtype})")


def add_export_ollama(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(parser)
    parser.add_argument("--out", required=True, type=Path, help="directory to write into")
    parser.add_argument("--dtype", default="q8_0", choices=GGUF_DTYPES, help="GGUF weight type")
    parser.add_argument(
        "--system-prompt", default=None, help="default system prompt (Modelfile SYSTEM)"
    )
    add_hidden_alias(parser, "--system", "system_prompt")  # its name before `chat`'s
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    add_skip_checksums_argument(parser)


def command_export_ollama(args: argparse.Namespace) -> None:
    from scratchlm.export.ollama import export_ollama

    modelfile = export_ollama(
        args.checkpoint,
        args.out,
        dtype=args.dtype,
        system=args.system_prompt,
        force=args.force,
        verify=not args.skip_checksums,
    )
    print(f"wrote {modelfile.parent}; run: ollama create NAME -f {modelfile}")


def add_import_hf(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(
        parser,
        "a local Hugging Face model directory (llama, qwen3, gpt2 or our custom layout)",
        old_flag="--model",
        metavar="HF_DIR",
    )
    parser.add_argument("--out", required=True, help="output checkpoint directory")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")


def command_import_hf(args: argparse.Namespace) -> None:
    from scratchlm.export.hf import import_hf

    out = import_hf(require_checkpoint(args, "import hf"), args.out, force=args.force)
    print(
        f"wrote {out}; fine-tune it with: scratchlm finetune --checkpoint {out} --data FILE --out DIR"
    )
