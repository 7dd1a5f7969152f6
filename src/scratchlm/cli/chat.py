"""`scratchlm chat`: a multi-turn chat in the terminal (the app and its views are in `chat/`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scratchlm.cli.options import (
    add_checkpoint_argument,
    add_device_argument,
    add_quantize_argument,
    add_sampling_arguments,
    add_skip_checksums_argument,
    add_threads_argument,
    sampling_from_args,
)
from scratchlm.errors import ScratchLMError


def add_chat(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(parser)
    parser.add_argument("--system-prompt", help="system prompt for the conversation")
    parser.add_argument(
        "--context-file",
        help="load the conversation from this JSON file if it exists; save it after every turn",
    )
    # Small models loop without a repetition penalty, and a reply is shorter than a free
    # continuation.
    add_sampling_arguments(parser, temperature=0.7, repetition_penalty=1.1, max_new_tokens=256)
    add_quantize_argument(parser)
    add_threads_argument(parser)
    add_skip_checksums_argument(parser)
    add_device_argument(parser)
    parser.add_argument(
        "--plain", action="store_true", help="plain text even in a terminal (no panels or colors)"
    )


def command_chat(args: argparse.Namespace) -> None:
    from scratchlm.chat.app import ChatApp, ChatSettings, run_loop
    from scratchlm.chat.conversation import Conversation
    from scratchlm.chat.views import ChatView, PlainView, RichView
    from scratchlm.inference.load import load_for_inference
    from scratchlm.inference.session import DecodeSession

    if args.sampler == "beam":
        raise ScratchLMError("chat samples token by token; --sampler beam is for `generate` only")
    settings = ChatSettings(sampling_from_args(args), args.max_new_tokens, args.seed)
    context_file = Path(args.context_file).expanduser() if args.context_file else None
    conversation = Conversation(system=args.system_prompt or None)
    if context_file is not None and context_file.exists():
        # Flags typed now win over the settings stored in the file; the file keeps the history.
        conversation = Conversation.load(context_file)
        if args.system_prompt:
            conversation.system = args.system_prompt
    loaded, device = load_for_inference(
        args.checkpoint,
        args.device,
        args.quantize,
        verify=not args.skip_checksums,
        kv_cache=args.kv_cache,
    )
    view: ChatView = (
        RichView() if sys.stdin.isatty() and sys.stdout.isatty() and not args.plain else PlainView()
    )
    app = ChatApp(
        DecodeSession(loaded.model),
        loaded.tokenizer,
        view,
        settings=settings,
        conversation=conversation,
        context_file=context_file,
    )
    dtype = str(next(loaded.model.parameters()).dtype).removeprefix("torch.")
    quantized = f", {args.quantize} weights" if args.quantize != "none" else ""
    app.welcome(
        device=f"{device} ({dtype}{quantized})",
        parameters=loaded.config.parameter_counts()["n_params"],
        checkpoint=str(loaded.path),
    )
    run_loop(app, view)
