"""`scratchlm serve` against llama.cpp's own `llama-server`, side by side in one run: aggregate
generated tokens/s and p50/p95 time to first token at 1, 8 and 32 streaming clients, on the same
weights at the same precision (ours `--quantize none|q8|q4|bf16` against the f32 / q8_0 / q4_0 /
bf16 GGUF that scratchlm's exporter writes from the same checkpoint).

Both servers run with continuous batching and as many batch slots as the largest client count
(ours `--max-batch N`, llama-server `-np N --cont-batching`, its context `-c` = N times what one
request needs, since its slots split it), the same thread count, on loopback, one at a time, the
order alternating across `--rounds` and precisions. One client loop measures both
(benchmarks/server_load.py's `run_clients`): each client sends a streaming /v1/completions
request, reads it to the end and sends the next until the level's time is up. Every request has
its own random prompt of `--prompt-tokens` token ids (so no prompt cache helps either side) and
asks for `--max-tokens` tokens with the end of text banned (ours: `logit_bias` -100 on EOS;
llama-server: `ignore_eos`), sampled from the full distribution at `--temperature` (llama-server:
top_k 0, top_p 1, min_p 0, which turn its default filters off); tokens are counted from the usage
both report in the stream's last chunk. Levels are pooled over the rounds.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/server_vs_llamacpp.py --preset llama-42m \\
        --quantize none q8 q4 --clients 1 8 32 --seconds 20 --max-tokens 64 --threads 2

`--preset` uses random weights (speed does not depend on them); `--checkpoint` a trained model
(copied to a temporary directory first: the quantized files are written beside the copy).
llama-server is built from the llama-cpp-python sdist (see BUILD_HINT).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

from decode_vs_llamacpp import PAIRS, benchmark_checkpoint
from scratchlm.errors import ScratchLMError
from server_load import (
    LevelResult,
    free_port,
    launch,
    one_request,
    percentile,
    run_clients,
    start_server,
    stop_server,
)

SERVERS = ("ours", "llama.cpp")
DEFAULT_BUILD_DIR = Path("/tmp/llama-build")
LLAMA_CPP_PYTHON = "0.3.36"  # the Makefile's pin, when llama-cpp-python is not installed
BUILD_HINT = (
    "pip download llama-cpp-python=={version} --no-binary :all: --no-deps -d /tmp/llama-sdist && "
    "tar xzf /tmp/llama-sdist/llama_cpp_python-{version}.tar.gz -C /tmp/llama-sdist && "
    "cmake -S /tmp/llama-sdist/llama_cpp_python-{version}/vendor/llama.cpp -B /tmp/llama-build "
    "-DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF "
    "-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_USE_PREBUILT_UI=OFF "
    "-DLLAMA_OPENSSL=OFF && cmake --build /tmp/llama-build --target llama-server -j 1"
)
STARTUP_TIMEOUT_S = 600.0  # ours may build its C++ kernels on a cold start


def gguf_name(quantize: str) -> str:
    """The GGUF file llama-server loads for our `--quantize` value (its type per PAIRS)."""
    if quantize not in PAIRS:
        raise ScratchLMError(f"unknown --quantize {quantize!r}; choose from {', '.join(PAIRS)}")
    return f"model-{PAIRS[quantize]}.gguf"


def build_hint() -> str:
    try:
        version = metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        version = LLAMA_CPP_PYTHON
    return BUILD_HINT.format(version=version)


def find_llama_server(given: str | None, build_dir: Path = DEFAULT_BUILD_DIR) -> Path:
    """--llama-server, else `llama-server` on PATH, else build_dir/bin/llama-server."""
    if given is not None:
        path = Path(given)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ScratchLMError(
                f"--llama-server {given} is not an executable file; build it with: {build_hint()}"
            )
        return path
    found = shutil.which("llama-server")
    if found:
        return Path(found)
    built = build_dir / "bin" / "llama-server"
    if built.is_file() and os.access(built, os.X_OK):
        return built
    raise ScratchLMError(
        f"no llama-server on PATH nor in {built.parent}; pass --llama-server PATH or build it "
        f"with: {build_hint()}"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="llama-42m", help="random weights of this preset")
    parser.add_argument(
        "--vocab-size",
        type=int,
        help="random weights: the tokenizer's size (default: the preset's own)",
    )
    parser.add_argument("--checkpoint", help="a trained checkpoint (or run directory) instead")
    parser.add_argument("--quantize", nargs="+", choices=list(PAIRS), default=["none", "q8", "q4"])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=20.0, help="per level, per round")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument(
        "--kv-cache",
        choices=["fp32", "fp16"],
        default="fp32",
        help="our server's KV cache (llama-server keeps its default, f16)",
    )
    parser.add_argument("--temperature", type=float, default=1.0, help="0 = greedy for both")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of each server")
    parser.add_argument("--rounds", type=int, default=2, help="the server order alternates")
    parser.add_argument("--llama-server", help="the binary (default: PATH, then /tmp/llama-build)")
    parser.add_argument(
        "--llama-server-args",
        default="",
        help="more llama-server flags, one string (e.g. '--poll 0': its threads then sleep "
        "instead of spinning while they wait, which matters on a busy machine)",
    )
    parser.add_argument("--request-timeout", type=float, default=300.0)
    parser.add_argument("--json", type=Path, help="also write every number here")
    args = parser.parse_args(argv)
    for name in ("max_tokens", "prompt_tokens", "threads", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if any(clients < 1 for clients in args.clients):
        parser.error(f"--clients must all be >= 1, got {args.clients}")
    if not 0 < args.seconds < float("inf"):
        parser.error(f"--seconds must be > 0, got {args.seconds}")
    if not 0.0 <= args.temperature <= 2.0:
        parser.error(f"--temperature must be in [0, 2], got {args.temperature}")
    args.quantize = list(dict.fromkeys(args.quantize))  # each precision once, in order
    return args


def llama_context(slots: int, prompt_tokens: int, max_tokens: int) -> int:
    """llama-server's -c: its `slots` parallel slots each get -c / slots positions, and one
    request needs its prompt plus its new tokens (+ 1: the last sampled token is never fed)."""
    return slots * (prompt_tokens + max_tokens + 1)


def server_order(round_index: int, precision_index: int) -> tuple[str, str]:
    """Who runs first alternates across rounds and precisions, so neither side always gets the
    machine right after the other's load (caches, clocks, other users)."""
    return SERVERS if (round_index + precision_index) % 2 == 0 else SERVERS[::-1]


def request_body(
    server: str, prompt: list[int], max_tokens: int, temperature: float, eos_id: int
) -> dict[str, object]:
    """One streaming /v1/completions body; the same request for both servers, in each one's
    words for "never stop before max_tokens" and "sample from the whole distribution"."""
    body: dict[str, object] = {
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if server == "ours":
        body["logit_bias"] = {str(eos_id): -100.0}
    else:
        body.update(ignore_eos=True, top_k=0, top_p=1.0, min_p=0.0)
    return body


def prompt_maker(seed: int, prompt_tokens: int, low: int, vocab: int) -> Callable[[], list[int]]:
    """A new random prompt of token ids in [low, vocab) per call; the same sequence for a seed."""
    generator = random.Random(seed)
    return lambda: [generator.randrange(low, vocab) for _ in range(prompt_tokens)]


@dataclass
class Pooled:
    """One server, precision and client count, over all rounds."""

    requests: int = 0
    tokens: int = 0
    errors: int = 0
    seconds: float = 0.0
    first_token: list[float] = field(default_factory=list)
    inter_token: list[float] = field(default_factory=list)
    token_counts: list[int] = field(default_factory=list)

    def add(self, level: LevelResult) -> None:
        self.requests += level.requests
        self.tokens += level.tokens
        self.errors += level.errors
        self.seconds += level.seconds
        self.first_token.extend(level.first_token)
        self.inter_token.extend(level.inter_token)
        self.token_counts.extend(level.token_counts)

    def summary(self) -> dict[str, float]:
        milliseconds = 1000.0
        return {
            "requests": self.requests,
            "errors": self.errors,
            "seconds": self.seconds,
            "tokens_per_s": divide(self.tokens, self.seconds),
            "ttft_p50_ms": percentile(self.first_token, 0.5) * milliseconds,
            "ttft_p95_ms": percentile(self.first_token, 0.95) * milliseconds,
            "itl_p50_ms": percentile(self.inter_token, 0.5) * milliseconds,
            "min_tokens": min(self.token_counts, default=0),
            "max_tokens": max(self.token_counts, default=0),
        }


def divide(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


def compare(ours: dict[str, float], theirs: dict[str, float]) -> dict[str, float]:
    """Speed ratios, > 1 where ours is better: tokens/s ours / llama.cpp; time to first token
    llama.cpp / ours (a shorter wait is better)."""
    return {
        "tokens_per_s": divide(ours["tokens_per_s"], theirs["tokens_per_s"]),
        "ttft_p50": divide(theirs["ttft_p50_ms"], ours["ttft_p50_ms"]),
        "ttft_p95": divide(theirs["ttft_p95_ms"], ours["ttft_p95_ms"]),
    }


def format_table(
    summaries: dict[str, dict[str, dict[int, dict[str, float]]]], max_tokens: int
) -> str:
    """summaries[quantize][server][clients] (Pooled.summary) -> the side-by-side table."""
    lines = [
        "ratio > 1 = ours better (tokens/s: ours / llama.cpp; TTFT: llama.cpp / ours); "
        "latencies in ms",
        f"{'ours':>5} {'llama.cpp':>9} {'clients':>7} | {'tok/s ours':>10} {'llama':>8} "
        f"{'ratio':>6} | {'ttft p50 ours':>13} {'llama':>7} {'ratio':>6} | "
        f"{'ttft p95 ours':>13} {'llama':>7} {'ratio':>6} | {'requests':>11} {'errors':>7}",
    ]
    short = []
    for quantize, servers in summaries.items():
        for clients in sorted(servers["ours"]):
            ours, theirs = servers["ours"][clients], servers["llama.cpp"][clients]
            ratio = compare(ours, theirs)
            lines.append(
                f"{quantize:>5} {PAIRS[quantize]:>9} {clients:>7} | "
                f"{ours['tokens_per_s']:>10.1f} {theirs['tokens_per_s']:>8.1f} "
                f"{ratio['tokens_per_s']:>5.2f}x | "
                f"{ours['ttft_p50_ms']:>13.1f} {theirs['ttft_p50_ms']:>7.1f} "
                f"{ratio['ttft_p50']:>5.2f}x | "
                f"{ours['ttft_p95_ms']:>13.1f} {theirs['ttft_p95_ms']:>7.1f} "
                f"{ratio['ttft_p95']:>5.2f}x | "
                f"{int(ours['requests']):>5}/{int(theirs['requests']):<5} "
                f"{int(ours['errors'] + theirs['errors']):>7}"
            )
            for server, values in (("ours", ours), ("llama.cpp", theirs)):
                if values["requests"] and values["min_tokens"] != max_tokens:
                    short.append(
                        f"{server} {quantize} at {clients} clients: some requests got "
                        f"{int(values['min_tokens'])} tokens, not {max_tokens}"
                    )
    return "\n".join(lines + [f"WARNING: {line}" for line in short])


def machine_line(threads: int) -> str:
    model = ""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return (
        f"machine: {model or 'unknown CPU'}, nproc {os.cpu_count()}, {threads} threads per "
        f"server, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )


@dataclass
class Prepared:
    checkpoint: Path
    name: str
    vocab_size: int
    context_length: int
    eos_id: int


def prepare_checkpoint(args: argparse.Namespace, work: Path) -> Prepared:
    """The checkpoint both servers read (and what the requests need to know of it), our packed
    weights for each --quantize written beside it (so no start-up of ours packs them while a
    level runs), and one GGUF per precision from our exporter."""
    from scratchlm.export.gguf import export_gguf
    from scratchlm.inference.load import load_for_inference

    checkpoint, name = benchmark_checkpoint(work, args.checkpoint, args.preset, args.vocab_size)
    prepared = None
    for quantize in args.quantize:
        loaded, _ = load_for_inference(str(checkpoint), "cpu", quantize, verify=False)
        prepared = Prepared(
            checkpoint,
            name,
            loaded.tokenizer.vocab_size,
            loaded.model.config.context_length,
            loaded.tokenizer.eos_id,
        )
        del loaded
        export_gguf(str(checkpoint), work / gguf_name(quantize), dtype=PAIRS[quantize])
    assert prepared is not None  # parse_args: --quantize takes at least one value
    return prepared


def start(
    server: str, quantize: str, args: argparse.Namespace, checkpoint: Path, llama_server: Path
) -> tuple[subprocess.Popen[bytes], str]:
    work = checkpoint.parent
    slots = max(args.clients)
    log = work / f"{server}-{quantize}.log"
    if server == "ours":
        extra = ["--quantize", quantize, "--skip-checksums", "--threads", str(args.threads)]
        extra += ["--kv-cache", args.kv_cache]
        return start_server(
            str(checkpoint), slots, "cpu", extra, log=log, timeout=STARTUP_TIMEOUT_S
        )
    port = free_port()
    command = [
        str(llama_server),
        "-m",
        str(work / gguf_name(quantize)),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "-t",
        str(args.threads),
        "-tb",
        str(args.threads),
        "-c",
        str(llama_context(slots, args.prompt_tokens, args.max_tokens)),
        "-np",
        str(slots),
        "--cont-batching",
        "--no-webui",
        *shlex.split(args.llama_server_args),
    ]
    return launch(command, port, log=log, timeout=STARTUP_TIMEOUT_S)


def run_levels(
    server: str,
    url: str,
    round_index: int,
    args: argparse.Namespace,
    prepared: Prepared,
) -> list[LevelResult]:
    """One warm-up request, then each of args.clients for args.seconds, against a running
    server; the prompts of a (round, level) are the same for both servers."""
    from scratchlm.tokenizer import SPECIAL_TOKENS

    results = []
    for level_index, clients in enumerate([1, *args.clients]):
        seed = 1000 * round_index + level_index
        prompts = prompt_maker(seed, args.prompt_tokens, len(SPECIAL_TOKENS), prepared.vocab_size)

        def body(prompts: Callable[[], list[int]] = prompts) -> dict[str, object]:
            return request_body(
                server, prompts(), args.max_tokens, args.temperature, prepared.eos_id
            )

        if level_index == 0:
            level = asyncio.run(warm_up(url, body(), args.request_timeout))
            if level.errors or not level.tokens:
                raise SystemExit(f"{server}: the warm-up request failed: {level.error_messages}")
            continue
        results.append(
            asyncio.run(
                run_clients(url, clients, args.seconds, body, request_timeout=args.request_timeout)
            )
        )
    return results


async def warm_up(url: str, body: dict[str, object], timeout: float) -> LevelResult:
    """One request, unmeasured: first-call costs (allocations, lazy set-up) are not the load's."""
    result = LevelResult(1, 0.0)
    async with httpx.AsyncClient(timeout=timeout) as client:
        await one_request(client, url, body, result)
    return result


def measure(
    args: argparse.Namespace,
    prepared: Prepared,
    llama_server: Path,
    log: Callable[[str], None],
) -> tuple[dict[str, dict[str, dict[int, Pooled]]], list[dict[str, Any]]]:
    """Every (round, precision, server): start it, run the levels, stop it. Returns the levels
    pooled over rounds, [quantize][server][clients], and one record per level and round."""
    pooled = {
        quantize: {server: {clients: Pooled() for clients in args.clients} for server in SERVERS}
        for quantize in args.quantize
    }
    raw: list[dict[str, Any]] = []
    for round_index in range(args.rounds):
        for precision_index, quantize in enumerate(args.quantize):
            for server in server_order(round_index, precision_index):
                started = time.perf_counter()
                try:
                    process, url = start(server, quantize, args, prepared.checkpoint, llama_server)
                    startup = time.perf_counter() - started
                    try:
                        levels = run_levels(server, url, round_index, args, prepared)
                    finally:
                        stop_server(process)
                except (SystemExit, Exception) as error:
                    # one failed start or level must not lose the rest of a long run: it is
                    # reported here and in the JSON, and its cells stay empty (nan in the table)
                    message = f"{type(error).__name__}: {error}"
                    log(f"  round {round_index + 1} {server} {quantize}: FAILED: {message}")
                    raw.append(
                        {"round": round_index, "quantize": quantize, "server": server,
                         "failed": message}
                    )  # fmt: skip
                    continue
                load = os.getloadavg()[0]  # other users of the machine show here
                for level in levels:
                    pooled[quantize][server][level.clients].add(level)
                    alone = Pooled()
                    alone.add(level)
                    values = alone.summary()
                    raw.append(
                        {
                            "round": round_index,
                            "quantize": quantize,
                            "server": server,
                            "clients": level.clients,
                            "startup_s": startup,
                            "load_average_after": load,
                            **values,
                            "error_messages": level.error_messages,
                        }
                    )
                    log(
                        f"  round {round_index + 1} {server:>9} {quantize:>4} "
                        f"{level.clients:>3} clients: {values['tokens_per_s']:8.1f} tok/s, "
                        f"TTFT p50 {values['ttft_p50_ms']:7.1f} ms, p95 "
                        f"{values['ttft_p95_ms']:7.1f} ms, {level.requests} requests, "
                        f"{level.errors} errors"
                        + (f" (first: {level.error_messages[0]})" if level.error_messages else "")
                    )
                log(f"  (load average {load:.2f} after {server} {quantize})")
    return pooled, raw


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        llama_server = find_llama_server(args.llama_server)
    except ScratchLMError as error:
        raise SystemExit(f"error: {error}") from None
    work = Path(tempfile.mkdtemp(prefix="scratchlm-serve-bench-"))
    try:
        try:
            prepared = prepare_checkpoint(args, work)
        except ScratchLMError as error:
            raise SystemExit(f"error: {error}") from None
        need = args.prompt_tokens + args.max_tokens
        if need > prepared.context_length:
            raise SystemExit(
                f"error: --prompt-tokens + --max-tokens ({need}) is over the model's context "
                f"({prepared.context_length}); ask for fewer"
            )
        print(
            f"{prepared.name}: scratchlm serve --max-batch {max(args.clients)} vs {llama_server} -np "
            f"{max(args.clients)} --cont-batching -c "
            f"{llama_context(max(args.clients), args.prompt_tokens, args.max_tokens)} "
            f"{args.llama_server_args}; "
            f"{args.prompt_tokens} prompt tokens, {args.max_tokens} new tokens per request, "
            f"temperature {args.temperature:g}, {args.seconds:g} s per level x {args.rounds} "
            f"rounds (pooled)",
            flush=True,
        )
        print(machine_line(args.threads), flush=True)
        pooled, raw = measure(args, prepared, llama_server, lambda line: print(line, flush=True))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summaries = {
        quantize: {
            server: {clients: cell.summary() for clients, cell in cells.items()}
            for server, cells in servers.items()
        }
        for quantize, servers in pooled.items()
    }
    print(format_table(summaries, args.max_tokens), flush=True)
    if args.json:
        from scratchlm.io_utils import atomic_write_json

        atomic_write_json(
            args.json,
            {
                "model": prepared.name,
                "command": [sys.executable, __file__, *(sys.argv[1:] if argv is None else argv)],
                "machine": machine_line(args.threads),
                "settings": {
                    key: str(value) if isinstance(value, Path) else value
                    for key, value in vars(args).items()
                },
                "summary": {
                    quantize: {
                        server: {str(clients): values for clients, values in cells.items()}
                        for server, cells in servers.items()
                    }
                    for quantize, servers in summaries.items()
                },
                "ratios": {
                    quantize: {
                        str(clients): compare(
                            servers["ours"][clients], servers["llama.cpp"][clients]
                        )
                        for clients in servers["ours"]
                    }
                    for quantize, servers in summaries.items()
                },
                "rounds": raw,
            },
        )


if __name__ == "__main__":
    # `kill` (SIGTERM) unwinds like Ctrl-C, so the running server is stopped and the files removed
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    main()
