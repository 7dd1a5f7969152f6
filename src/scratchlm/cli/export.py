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
from scratchlm.export.dtypes import GGUF_DTYPES, HF_DTYPES, KQUANT_DTYPES

GGUF_DTYPE_HELP = (
    "weight type: f32, f16, bf16, or a block quant q8_0, q5_1, q5_0, q4_1, q4_0 (norms and "
    "biases stay f32; in q4/q5 files the output head is q8_0). K-quants (q4_k_m, q6_k, ...) "
    "are not written here: export f16, then run llama.cpp's `llama-quantize in.gguf out.gguf "
    "Q4_K_M` (docs/export.md)"
)
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
    parser.add_argument(
        "--dtype",
        default="fp32",
        choices=HF_DTYPES,
        help="weight dtype of the safetensors files (config.json torch_dtype says the same)",
    )
    parser.add_argument(
        "--license",
        default="other",
        help="license id written in the model card's metadata (apache-2.0, mit, cc-by-4.0, ...; "
        "with other, the card asks you to set it)",
    )
    parser.add_argument(
        "--push-to-hub",
        default=None,
        metavar="ORG/NAME",
        help="after the export, create this Hugging Face Hub repository (kept if it exists) and "
        "upload the folder (needs a write token: `hf auth login` or HF_TOKEN)",
    )
    parser.add_argument(
        "--private", action="store_true", help="with --push-to-hub: create the repository private"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    add_skip_checksums_argument(parser)


def command_export_hf(args: argparse.Namespace) -> None:
    from scratchlm.errors import ScratchLMError
    from scratchlm.export import hub
    from scratchlm.export.hf import export_hf

    if args.private and args.push_to_hub is None:
        raise ScratchLMError(
            "--private applies to --push-to-hub ORG/NAME; add it or drop --private"
        )
    token = None
    if args.push_to_hub is not None:
        # Both checked before the export: a push that cannot happen costs no export.
        hub.check_repo_id(args.push_to_hub, "--push-to-hub")
        token = hub.require_token()
    out = export_hf(
        args.checkpoint,
        args.out,
        force=args.force,
        verify=not args.skip_checksums,
        layout=args.layout,
        dtype=args.dtype,
        license=args.license,
        hub_id=args.push_to_hub,
    )
    hf_config = json.loads((out / "config.json").read_text())
    # The custom layout carries its own modeling code, which transformers runs only when asked.
    remote = ", trust_remote_code=True" if "auto_map" in hf_config else ""
    print(
        f"wrote {out} ({hf_config['architectures'][0]}); load it with "
        f"AutoModelForCausalLM.from_pretrained({str(out)!r}{remote})"
    )
    if token is not None:
        url, files = hub.push_export(
            out, args.push_to_hub, private=args.private, api=hub.hub_api(token)
        )
        print(f"pushed {len(files)} files to {url}")


def add_export_gguf(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(parser)
    parser.add_argument("--out", required=True, type=Path, help="the .gguf file to write")
    parser.add_argument(
        "--dtype",
        default="f32",
        choices=GGUF_DTYPES + KQUANT_DTYPES,
        metavar="{" + ",".join(GGUF_DTYPES) + "}",
        help=GGUF_DTYPE_HELP,
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
        "a local Hugging Face model directory, or a Hub id ORG/NAME that is not a local path "
        "(downloaded through the HF cache; HF_HUB_OFFLINE=1 reads only the cache); llama, qwen3, "
        "gpt2 or our custom layout",
        old_flag="--model",
        metavar="HF_DIR|ORG/NAME",
    )
    parser.add_argument("--out", required=True, help="output checkpoint directory")
    parser.add_argument(
        "--revision",
        default=None,
        help="with a Hub id: the branch, tag or commit to download (default main)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing --out")


def command_import_hf(args: argparse.Namespace) -> None:
    from scratchlm.export.hf import import_hf

    out = import_hf(
        require_checkpoint(args, "import hf"), args.out, force=args.force, revision=args.revision
    )
    print(
        f"wrote {out}; fine-tune it with: scratchlm finetune --checkpoint {out} --data FILE --out DIR"
    )
