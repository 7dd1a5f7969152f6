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
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
    # completion_tokens of each finished request, as the server's usage reports them
    token_counts: list[int] = field(default_factory=list)
    error_messages: list[str] = field(default_factory=list)  # the first few, to say what failed

    def fail(self, message: str) -> None:
        self.errors += 1
        if len(self.error_messages) < 5:
            self.error_messages.append(message[:300])


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def sse_lines(response: httpx.Response) -> AsyncIterator[str]:
    """The response's lines, split only where server-sent events end a line (\\n, \\r\\n). Not
    httpx's aiter_lines: it splits like str.splitlines, also at U+0085 or U+2028, which a
    server may send unescaped inside a JSON string (llama-server does; sampled text has them)."""
    buffer = b""
    async for chunk in response.aiter_bytes():
        *lines, buffer = (buffer + chunk).split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r").decode("utf-8", errors="replace")
    if buffer:
        yield buffer.rstrip(b"\r").decode("utf-8", errors="replace")


async def one_request(
    client: httpx.AsyncClient, url: str, body: dict[str, object], result: LevelResult
) -> None:
    """Send one streaming request and read it to the end into `result`. A request whose kept-alive
    connection the server had already closed (no response began: llama-server's HTTP library
    closes a connection after 100 requests) is sent once more on a new one, as the openai client
    does; the time counts from that second try."""
    for attempt in range(2):
        started = time.perf_counter()
        last: float | None = None
        gaps: list[float] = []
        first: float | None = None
        tokens = 0
        responded = False
        try:
            async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
                responded = True
                if response.status_code != 200:
                    await response.aread()
                    result.fail(f"HTTP {response.status_code}: {response.text}")
                    return
                async for line in sse_lines(response):
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    payload = json.loads(line[len("data: ") :])
                    if "error" in payload:
                        result.fail(f"error event: {payload['error']}")
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
        except httpx.HTTPError as error:
            stale = isinstance(error, (httpx.RemoteProtocolError, httpx.ConnectError))
            if stale and not responded and attempt == 0:
                continue
            result.fail(f"{type(error).__name__}: {error}")
            return
        break
    result.requests += 1
    result.tokens += tokens
    result.token_counts.append(tokens)
    if first is not None:
        result.first_token.append(first)
    result.inter_token.extend(gaps)


async def run_clients(
    url: str,
    clients: int,
    seconds: float,
    make_body: Callable[[], dict[str, object]],
    *,
    api_key: str | None = None,
    request_timeout: float = 120.0,
) -> LevelResult:
    """`clients` workers, each sending `make_body()` (a new body per request) to
    `url`/v1/completions back to back until `seconds` are up; requests in flight then finish and
    count, so `result.seconds` is the wall time until the last one ended."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    result = LevelResult(clients, seconds)
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=request_timeout, headers=headers, limits=limits) as client:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                await one_request(client, url, make_body(), result)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        result.seconds = time.perf_counter() - started
    return result


async def run_level(
    url: str, clients: int, seconds: float, args: argparse.Namespace
) -> LevelResult:
    """One level with this script's request: args.prompt, args.max_tokens, temperature 1."""
    body: dict[str, object] = {
        "prompt": args.prompt,
        "max_tokens": args.max_tokens,
        "temperature": 1.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return await run_clients(
        url,
        clients,
        seconds,
        lambda: body,
        api_key=args.api_key,
        request_timeout=args.request_timeout,
    )


def free_port() -> int:
    """A loopback TCP port nobody listens on now (the server binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def last_lines(log: Path | None, count: int = 5) -> str:
    if log is None or not log.exists():
        return ""
    lines = log.read_text(errors="replace").strip().splitlines()
    return " | ".join(lines[-count:])


def wait_until_healthy(
    process: subprocess.Popen[bytes], url: str, timeout: float, log: Path | None = None
) -> None:
    """Poll `url`/health until it answers 200 (both scratchlm and llama-server answer 503 or
    refuse while loading); stop the process and exit with its log's tail if it does not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with code {process.returncode}: {last_lines(log)}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    stop_server(process)
    raise SystemExit(f"the server did not come up within {timeout:.0f} s: {last_lines(log)}")


def launch(
    command: Sequence[str],
    port: int,
    *,
    environment: dict[str, str] | None = None,
    log: Path | None = None,
    timeout: float = 120.0,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start a server process listening on 127.0.0.1:`port` and wait until it is healthy; its
    output goes to `log` (or nowhere)."""
    if log is None:
        process = subprocess.Popen(
            list(command), env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    else:
        with log.open("wb") as out:
            process = subprocess.Popen(
                list(command), env=environment, stdout=out, stderr=subprocess.STDOUT
            )
    url = f"http://127.0.0.1:{port}"
    wait_until_healthy(process, url, timeout, log)
    return process, url


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def start_server(
    checkpoint: str,
    max_batch: int,
    device: str,
    extra: Sequence[str] = (),
    *,
    environment: dict[str, str] | None = None,
    log: Path | None = None,
    timeout: float = 120.0,
) -> tuple[subprocess.Popen[bytes], str]:
    """`scratchlm serve` on `checkpoint` (plus `extra` flags) on a free loopback port, without
    an API key; returns the process and its URL once /health answers."""
    port = free_port()
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
        *extra,
    ]
    base = os.environ if environment is None else environment
    without_key = {key: value for key, value in base.items() if key != "SCRATCHLM_API_KEY"}
    return launch(command, port, environment=without_key, log=log, timeout=timeout)


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
            stop_server(process)


if __name__ == "__main__":
    main()
