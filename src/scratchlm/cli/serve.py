"""`scratchlm serve`: flags, their checks and start-up (bind, load, run uvicorn). FastAPI and
uvicorn are imported only when the command runs, so the rest of the CLI works without the `serve`
extra."""

from __future__ import annotations

import argparse
import gc
import ipaddress
import os
import socket
import sys
from pathlib import Path

from scratchlm.cli.options import (
    add_checkpoint_argument,
    add_device_argument,
    add_quantize_argument,
    add_skip_checksums_argument,
    add_threads_argument,
)
from scratchlm.errors import ScratchLMError

API_KEY_ENVIRONMENT = "SCRATCHLM_API_KEY"


def add_serve(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(parser)
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on (beyond loopback, e.g. 0.0.0.0, needs --api-key)",
    )
    parser.add_argument("--port", type=int, default=8000, help="TCP port")
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"require 'Authorization: Bearer KEY' on /v1 and /metrics (default: ${API_KEY_ENVIRONMENT})",
    )
    parser.add_argument(
        "--allow-public-without-key",
        action="store_true",
        help="listen beyond loopback without an API key (refused otherwise): anyone who can "
        "reach the port can use the model",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=None,
        metavar="NAME",
        help="a Host name to answer besides 127.0.0.1, localhost and [::1] (repeatable; '*' for "
        "any). Default: loopback names only without a key, any name with one",
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
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds a client has to send a request's line and headers",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        help="seconds a client has to send a request's body (then HTTP 408)",
    )
    parser.add_argument(
        "--keep-alive-timeout",
        type=int,
        default=5,
        help="seconds an idle kept-alive connection stays open",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=256,
        help="open connections at once; beyond that new requests get HTTP 503",
    )
    add_device_argument(parser)
    add_quantize_argument(parser)
    add_threads_argument(parser)
    add_skip_checksums_argument(parser)


def resolve_api_key(args: argparse.Namespace) -> str | None:
    """--api-key, else $SCRATCHLM_API_KEY, else None. An empty or blank key is an error, never
    "no authentication": `--api-key "$UNSET"` must not quietly open the server."""
    if args.api_key is not None:
        key, source = args.api_key, "--api-key"
    elif API_KEY_ENVIRONMENT in os.environ:
        key, source = os.environ[API_KEY_ENVIRONMENT], f"${API_KEY_ENVIRONMENT}"
    else:
        return None
    key = key.strip()
    if not key:
        raise ScratchLMError(
            f'{source} is empty; give a key (e.g. python -c "import secrets; '
            f'print(secrets.token_urlsafe(32))"), or leave {source} out to serve without one'
        )
    if not (key.isascii() and key.isprintable()):
        raise ScratchLMError(
            f"{source} must be printable ASCII (it travels in an HTTP header); "
            "use letters, digits and punctuation"
        )
    return key


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost, or "" (every interface)


def check_arguments(args: argparse.Namespace) -> str | None:
    """Validate the flags before anything is bound or loaded; returns the API key (or None)."""
    for name in ("max_batch", "prefill_chunk", "keep_alive_timeout", "max_connections"):
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
    for name in ("header_timeout", "body_timeout"):
        value = getattr(args, name)
        if not 0 < value < float("inf"):
            raise ScratchLMError(
                f"--{name.replace('_', '-')} must be a number of seconds > 0, got {value}"
            )
    for name in args.allowed_host or []:
        if not name.strip():
            raise ScratchLMError("--allowed-host needs a name (or '*' for any), got ''")
    api_key = resolve_api_key(args)
    if api_key is None and not is_loopback(args.host) and not args.allow_public_without_key:
        raise ScratchLMError(
            f"--host {args.host or '(every interface)'} listens beyond loopback without an API "
            f"key; set --api-key (or ${API_KEY_ENVIRONMENT}), or pass --allow-public-without-key "
            "to let anyone who can reach the port use the model"
        )
    return api_key


def command_serve(args: argparse.Namespace) -> None:
    api_key = check_arguments(args)
    try:
        import uvicorn

        from scratchlm.server.app import ServerSettings, create_app
        from scratchlm.server.protocol import uvicorn_config
    except ImportError as error:
        raise ScratchLMError(
            f"serving needs FastAPI and uvicorn ({error}); install them with "
            "pip install 'scratchlm[serve]'"
        ) from error
    from scratchlm.inference.load import load_for_inference

    # Bind first, so a port in use is one clear line before the model is loaded.
    try:
        bind_host = args.host.strip("[]")  # "[::1]" as in a URL
        family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((bind_host, args.port))
    except OSError as error:
        raise ScratchLMError(
            f"cannot listen on {args.host}:{args.port} ({error.strerror}); pick another --port "
            "or --host"
        ) from error
    loaded, _device = load_for_inference(
        args.checkpoint,
        args.device,
        args.quantize,
        verify=not args.skip_checksums,
        kv_cache=args.kv_cache,
    )
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
        allowed_hosts=args.allowed_host,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        keep_alive_timeout=args.keep_alive_timeout,
        max_connections=args.max_connections,
    )
    app = create_app(loaded.model, loaded.tokenizer, settings)
    if api_key is None and not is_loopback(args.host):
        names = ", ".join(args.allowed_host or ["127.0.0.1", "localhost", "[::1]"])
        print(
            f"WARNING: listening on {args.host or 'every interface'} WITHOUT AN API KEY "
            "(--allow-public-without-key): anyone who can reach this port can use the model. "
            f"Requests are answered only for the Host names {names} (--allowed-host).",
            file=sys.stderr,
            flush=True,
        )
    host, port = listener.getsockname()[:2]
    print(
        f"serving {settings.model_name} at http://{host}:{port}/v1 (OpenAI-compatible)", flush=True
    )
    server = uvicorn.Server(uvicorn_config(app))
    # Start-up leaves ~330,000 objects (PyTorch, FastAPI, the model's modules) that live as long
    # as the server. A full garbage collection walks every one of them: 170-190 ms (llama-42m,
    # measured) during which no request moves. Frozen, the collector skips them; what requests
    # allocate is collected as before.
    gc.collect()
    gc.freeze()
    server.run(sockets=[listener])
