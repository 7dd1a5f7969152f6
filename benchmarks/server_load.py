"""Load test for `scratchlm serve`: N concurrent streaming clients for T seconds each level.

Each client loops: send a streaming /v1/completions request, read it to the end, repeat, until the
level's time is up (requests in flight then finish). Reported per level: completed requests/s,
aggregate generated tokens/s (from the usage the server reports), p50/p95 time to first token,
p50/p95 inter-token latency (the gaps between streamed chunks) and errors. The clients run in this
process and the server in another, over loopback.

    .venv/bin/python benchmarks/server_load.py --url http://127.0.0.1:8000
    .venv/bin/python benchmarks/server_load.py --start-server runs/tiny/ckpt --max-batch 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

import httpx

LAUNCH = "import sys; from scratchlm.cli import main; sys.exit(main(['serve', *sys.argv[1:]]))"


@dataclass
class LevelResult:
    clients: int
    seconds: float
    requests: int = 0
    tokens: int = 0
    errors: int = 0
    first_token: list[float] = field(default_factory=list)
    inter_token: list[float] = field(default_factory=list)


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def one_request(
    client: httpx.AsyncClient, url: str, body: dict[str, object], result: LevelResult
) -> None:
    started = time.perf_counter()
    last: float | None = None
    gaps: list[float] = []
    first: float | None = None
    tokens = 0
    try:
        async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                result.errors += 1
                return
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                payload = json.loads(line[len("data: ") :])
                if "error" in payload:
                    result.errors += 1
                    return
                now = time.perf_counter()
                if payload.get("choices") and payload["choices"][0].get("text"):
                    if first is None:
                        first = now - started
                    elif last is not None:
                        gaps.append(now - last)
                    last = now
                if payload.get("usage"):
                    tokens = int(payload["usage"]["completion_tokens"])
    except httpx.HTTPError:
        result.errors += 1
        return
    result.requests += 1
    result.tokens += tokens
    if first is not None:
        result.first_token.append(first)
    result.inter_token.extend(gaps)


async def run_level(
    url: str, clients: int, seconds: float, args: argparse.Namespace
) -> LevelResult:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    body: dict[str, object] = {
        "prompt": args.prompt,
        "max_tokens": args.max_tokens,
        "temperature": 1.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    result = LevelResult(clients, seconds)
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(
        timeout=args.request_timeout, headers=headers, limits=limits
    ) as client:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                await one_request(client, url, body, result)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        result.seconds = time.perf_counter() - started
    return result


def start_server(
    checkpoint: str, max_batch: int, device: str
) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable,
        "-c",
        LAUNCH,
        "--checkpoint",
        checkpoint,
        "--port",
        str(port),
        "--max-batch",
        str(max_batch),
        "--max-queue",
        "1024",
        "--device",
        device,
    ]
    environment = {key: value for key, value in os.environ.items() if key != "SCRATCHLM_API_KEY"}
    process = subprocess.Popen(
        command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with code {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    process.terminate()
    raise SystemExit("the server did not come up within 120 s")


def report(result: LevelResult) -> str:
    milliseconds = 1000.0
    return (
        f"{result.clients:>7} {result.requests / result.seconds:>10.2f} "
        f"{result.tokens / result.seconds:>10.1f} "
        f"{percentile(result.first_token, 0.5) * milliseconds:>9.1f} "
        f"{percentile(result.first_token, 0.95) * milliseconds:>9.1f} "
        f"{percentile(result.inter_token, 0.5) * milliseconds:>9.1f} "
        f"{percentile(result.inter_token, 0.95) * milliseconds:>9.1f} {result.errors:>7}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000")
    target.add_argument(
        "--start-server", metavar="CHECKPOINT", help="start a server on this checkpoint"
    )
    parser.add_argument("--max-batch", type=int, default=8, help="with --start-server")
    parser.add_argument("--device", default="auto", help="with --start-server")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=60.0, help="per concurrency level")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--prompt", default="Once upon a time")
    parser.add_argument("--api-key", default=os.environ.get("SCRATCHLM_API_KEY"))
    parser.add_argument("--request-timeout", type=float, default=120.0)
    args = parser.parse_args()

    process = None
    url = args.url
    if args.start_server:
        process, url = start_server(args.start_server, args.max_batch, args.device)
        args.api_key = None
    try:
        print(f"server {url}, {args.seconds:g} s per level, max_tokens {args.max_tokens}")
        print(
            f"{'clients':>7} {'req/s':>10} {'tok/s':>10} {'ttft p50':>9} {'ttft p95':>9} "
            f"{'itl p50':>9} {'itl p95':>9} {'errors':>7}   (latencies in ms)"
        )
        for clients in args.clients:
            result = asyncio.run(run_level(url.rstrip("/"), clients, args.seconds, args))
            print(report(result), flush=True)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
