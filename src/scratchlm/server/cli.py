"""`scratchlm serve`: flags and entry point. FastAPI and uvicorn are imported only when the
command runs, so the rest of the CLI works without the `serve` extra."""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

from scratchlm.errors import ScratchLMError

API_KEY_ENVIRONMENT = "SCRATCHLM_API_KEY"


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint or run directory")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on (0.0.0.0 for every interface: set --api-key then)",
    )
    parser.add_argument("--port", type=int, default=8000, help="TCP port")
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"require 'Authorization: Bearer KEY' on /v1 and /metrics (default: ${API_KEY_ENVIRONMENT})",
    )
    parser.add_argument(
        "--max-batch", type=int, default=8, help="rows decoded together (continuous batching)"
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=64,
        help="rows allowed to wait for a batch slot; beyond that requests get HTTP 429",
    )
    parser.add_argument(
        "--max-tokens-limit",
        type=int,
        default=None,
        help="the largest max_tokens a request may ask for (default: the model's context)",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        help="allow browser pages from this origin (repeatable; none by default)",
    )
    parser.add_argument(
        "--model-name",
        default=None,
        help="the model id clients see (default: the checkpoint dir name)",
    )
    parser.add_argument(
        "--prefill-chunk",
        type=int,
        default=256,
        help="prompt tokens prefilled per decode step, so long prompts do not stall others",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument(
        "--quantize",
        choices=("none", "int8"),
        default="none",
        help="int8 dynamic quantization of linear layers (CPU)",
    )


def check_arguments(args: argparse.Namespace) -> None:
    for name in ("max_batch", "prefill_chunk"):
        if getattr(args, name) < 1:
            raise ScratchLMError(
                f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}"
            )
    if args.max_queue < 0:
        raise ScratchLMError(f"--max-queue must be >= 0, got {args.max_queue}")
    if args.max_tokens_limit is not None and args.max_tokens_limit < 1:
        raise ScratchLMError(f"--max-tokens-limit must be >= 1, got {args.max_tokens_limit}")
    if not 0 <= args.port <= 65535:
        raise ScratchLMError(f"--port must be in 0..65535, got {args.port}")


def command_serve(args: argparse.Namespace) -> None:
    check_arguments(args)
    try:
        import uvicorn

        from scratchlm.server.app import ServerSettings, create_app
    except ImportError as error:
        raise ScratchLMError(
            f"serving needs FastAPI and uvicorn ({error}); install them with "
            "pip install 'scratchlm[serve]'"
        ) from error
    from scratchlm.cli import load_for_inference

    api_key = args.api_key or os.environ.get(API_KEY_ENVIRONMENT) or None
    # Bind first, so a port in use is one clear line before the model is loaded.
    try:
        family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((args.host, args.port))
    except OSError as error:
        raise ScratchLMError(
            f"cannot listen on {args.host}:{args.port} ({error.strerror}); pick another --port "
            "or --host"
        ) from error
    loaded, _device = load_for_inference(args.checkpoint, args.device, args.quantize)
    context_length = loaded.model.config.context_length
    if args.max_tokens_limit is not None and args.max_tokens_limit > context_length:
        raise ScratchLMError(
            f"--max-tokens-limit {args.max_tokens_limit} is over the model's context "
            f"({context_length} tokens)"
        )
    settings = ServerSettings(
        model_name=args.model_name or Path(args.checkpoint).resolve().name,
        api_key=api_key,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        max_tokens_limit=args.max_tokens_limit,
        cors_origins=list(args.cors_origin),
        prefill_chunk=args.prefill_chunk,
    )
    app = create_app(loaded.model, loaded.tokenizer, settings)
    if api_key is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: listening on {args.host} without --api-key: anyone who can reach it can use it"
        )
    host, port = listener.getsockname()[:2]
    print(
        f"serving {settings.model_name} at http://{host}:{port}/v1 (OpenAI-compatible)", flush=True
    )
    server = uvicorn.Server(uvicorn.Config(app, log_level="info", timeout_graceful_shutdown=5))
    server.run(sockets=[listener])
