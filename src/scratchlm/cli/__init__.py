"""`scratchlm <command>`: one entry point. Thin: parse flags, call library functions, print.

`COMMANDS` is the one table of subcommands (name -> flags, handler, help); each family of
commands has its module here (`info`, `train`, `dpo`, `rl`, `generate`, `evaluate`, `chat`,
`serve`, `export`, `report`) and `options` holds the flag groups they share. This package is the only one that imports
argparse; its modules import torch, FastAPI and the like inside the handlers, so `--help` and
argument errors stay fast.

User mistakes raise ScratchLMError anywhere below; `main` prints them as one line and exits 2.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from scratchlm.cli import chat, dpo, evaluate, export, generate, info, report, rl, serve, train
from scratchlm.cli.options import HelpFormatter, apply_threads
from scratchlm.errors import ScratchLMError


@dataclass(frozen=True)
class Command:
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], None]
    help: str


# Groups of commands ("tokenizer train"): the group's help and the metavar of its subcommand.
GROUPS: dict[str, tuple[str, str]] = {
    "tokenizer": ("tokenizer commands", "COMMAND"),
    "data": ("data commands", "COMMAND"),
    "export": ("export to Hugging Face (and GGUF/Ollama)", "FORMAT"),
    "import": ("import from Hugging Face", "FORMAT"),
}

COMMANDS: dict[str, Command] = {
    "presets": Command(
        info.add_presets, info.command_presets, "list model presets with parameter counts"
    ),
    "info": Command(
        info.add_info,
        info.command_info,
        "show a preset's or checkpoint's full config and exact parameter count",
    ),
    "tokenizer train": Command(
        train.add_tokenizer_train,
        train.command_tokenizer_train,
        "train a BPE or character tokenizer",
    ),
    "tokenize": Command(
        train.add_tokenize, train.command_tokenize, "show the ids and pieces of a text"
    ),
    "data prepare": Command(
        train.add_data_prepare,
        train.command_data_prepare,
        "clean and tokenize text into token shards",
    ),
    "train": Command(
        train.add_train,
        train.command_train,
        "pretrain a model (defaults run: tiny preset on the built-in corpus)",
    ),
    "finetune": Command(
        train.add_finetune,
        train.command_finetune,
        "fine-tune a checkpoint on chat data (JSONL, JSON, ShareGPT, hf:) or text, fully or with LoRA",
    ),
    "dpo": Command(
        dpo.add_dpo,
        dpo.command_dpo,
        "preference-tune a chat checkpoint on chosen/rejected pairs (DPO, IPO or SimPO)",
    ),
    "rl": Command(
        rl.add_rl,
        rl.command_rl,
        "reinforcement learning from verifiable rewards (GRPO-style) on a chat checkpoint",
    ),
    "export hf": Command(
        export.add_export_hf,
        export.command_export_hf,
        "a Hugging Face model directory (LlamaForCausalLM or GPT2LMHeadModel)",
    ),
    "export gguf": Command(
        export.add_export_gguf,
        export.command_export_gguf,
        "a GGUF file for llama.cpp (f32, f16, bf16 or q8_0)",
    ),
    "export ollama": Command(
        export.add_export_ollama,
        export.command_export_ollama,
        "a GGUF plus an Ollama Modelfile",
    ),
    "import hf": Command(
        export.add_import_hf,
        export.command_import_hf,
        "a Hugging Face model (a local directory or a Hub id; llama, qwen3, gpt2 or scratchlm's "
        "custom layout) into a checkpoint",
    ),
    "serve": Command(
        serve.add_serve,
        serve.command_serve,
        "OpenAI-compatible HTTP server with continuous batching and a chat page",
    ),
    "chat": Command(
        chat.add_chat,
        chat.command_chat,
        "multi-turn chat in the terminal (the KV cache is kept across turns)",
    ),
    "merge-lora": Command(
        train.add_merge_lora,
        train.command_merge_lora,
        "fold a LoRA run's adapters into a plain checkpoint",
    ),
    "eval": Command(
        evaluate.add_eval,
        evaluate.command_eval,
        "loss, perplexity and bits per byte on a text; replies to a prompt suite; or benchmarks",
    ),
    "generate": Command(
        generate.add_generate,
        generate.command_generate,
        "generate text from a prompt, printed as it is produced",
    ),
    "bench": Command(
        generate.add_bench,
        generate.command_bench,
        "inference speed: prefill, decode at batch 1 and more, time to first token, memory",
    ),
    "report": Command(
        report.add_report,
        report.command_report,
        "one self-contained HTML (and Markdown) page per run: config, curves, samples, speed",
    ),
    "quickstart": Command(
        train.add_quickstart,
        train.command_quickstart,
        "build the default corpus, train a tokenizer and a small model, show samples",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    from scratchlm import __version__

    parser = argparse.ArgumentParser(
        prog="scratchlm",
        description="Build your own GPT-style language model from scratch.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"scratchlm {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, argparse._SubParsersAction[argparse.ArgumentParser]] = {}
    for name, command in COMMANDS.items():
        *group_name, leaf = name.split(" ")
        target = commands
        if group_name:
            group = group_name[0]
            if group not in groups:
                help_text, metavar = GROUPS[group]
                group_parser = commands.add_parser(
                    group, help=help_text, formatter_class=HelpFormatter
                )
                groups[group] = group_parser.add_subparsers(
                    dest=f"{group}_command", metavar=metavar, required=True
                )
            target = groups[group]
        sub = target.add_parser(
            leaf, help=command.help, description=command.help, formatter_class=HelpFormatter
        )
        command.add_arguments(sub)
        sub.set_defaults(handler=command.handler)
    return parser


# Arguments that are text for the model, checked for valid UTF-8 before any work. Paths are not
# in the list: on Linux a file name may hold any bytes, and Python hands them over losslessly.
TEXT_ARGUMENTS = ("text", "prompt", "stop", "system_prompt", "sample_prompt", "doc_separator")


def check_text_arguments(args: argparse.Namespace) -> None:
    from scratchlm.tokenizer import require_unicode

    for dest in TEXT_ARGUMENTS:
        value = getattr(args, dest, None)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                require_unicode(item, f"--{dest.replace('_', '-')}")


def main(argv: Sequence[str] | None = None) -> int:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return run_command(argv)
    try:
        code = run_command(argv)
    except SystemExit as stop:  # --help, a flag error, a run stopped by a signal (128 + N)
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
        code = 1 if isinstance(stop.code, str) else (stop.code or 0)
    exit_skipping_teardown(code)


def exit_skipping_teardown(code: int) -> NoReturn:
    """End a torchrun rank without the interpreter's teardown.

    Under FSDP2 (torch 2.13), the gloo process group outlives `destroy_process_group`: objects
    held from C++ keep it, and its worker threads (pt_gloo_runloop, gloo_tcp_loop) still run
    when the interpreter shuts down. Destroying them there aborts the rank now and then
    ("terminate called without an active exception", exit -6) after a run whose every file was
    written, and torchrun reports the job failed. Everything the command wrote is already
    fsynced and renamed in place; only the standard streams need flushing.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        # a closed pipe or stream: nothing left to save
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def run_command(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if isinstance(sys.stdin, io.TextIOWrapper):
        # Invalid bytes on stdin arrive as lone surrogates (as on argv) instead of raising inside
        # input() or read(); every reader then reports them in one line (tokenizer.require_unicode).
        sys.stdin.reconfigure(errors="surrogateescape")
    try:
        check_text_arguments(args)
        apply_threads(args)
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
