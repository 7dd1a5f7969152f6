"""benchmarks/server_vs_llamacpp.py: its pure parts (flags, the GGUF type of each --quantize,
the pooling and ratios of the table) against direct computations, and, where a llama-server
binary is found, one 1-client level against both servers on the tiny preset."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from scratchlm.errors import ScratchLMError
from scratchlm.export.gguf import check_dtype

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO_ROOT / "benchmarks"
SCRIPT = BENCHMARKS / "server_vs_llamacpp.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    # The script imports its siblings (server_load, decode_vs_llamacpp) as a script run would.
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("server_vs_llamacpp", SCRIPT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["server_vs_llamacpp"] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def test_flags_default_to_the_issue_levels_and_refuse_nonsense(bench: ModuleType) -> None:
    args = bench.parse_args([])
    assert args.clients == [1, 8, 32] and args.threads == 2 and args.preset == "llama-42m"
    assert args.quantize == ["none", "q8", "q4"] and args.max_tokens == 64
    assert bench.parse_args(["--quantize", "q4", "none", "q4"]).quantize == ["q4", "none"]
    for bad in (
        ["--clients", "1", "0"],
        ["--quantize", "q5"],
        ["--seconds", "0"],
        ["--max-tokens", "0"],
        ["--rounds", "0"],
        ["--temperature", "3"],
    ):
        with pytest.raises(SystemExit) as raised:
            bench.parse_args(bad)
        assert raised.value.code == 2


def test_each_quantize_is_paired_with_the_gguf_type_of_the_same_format(bench: ModuleType) -> None:
    expected = {"none": "f32", "q8": "q8_0", "q4": "q4_0", "bf16": "bf16"}
    assert {quantize: bench.gguf_name(quantize) for quantize in expected} == {
        quantize: f"model-{gguf}.gguf" for quantize, gguf in expected.items()
    }
    for gguf in expected.values():
        check_dtype(gguf)  # our exporter writes every one of them
    with pytest.raises(ScratchLMError, match="unknown --quantize"):
        bench.gguf_name("int8")


def test_llama_context_gives_every_slot_one_whole_request(bench: ModuleType) -> None:
    context = bench.llama_context(32, 32, 64)
    assert context // 32 >= 32 + 64  # each slot's share holds the prompt and all new tokens
    assert context == 32 * 97


def test_server_order_alternates_across_rounds_and_precisions(bench: ModuleType) -> None:
    firsts = [bench.server_order(r, p)[0] for r in range(2) for p in range(3)]
    assert firsts == ["ours", "llama.cpp", "ours", "llama.cpp", "ours", "llama.cpp"]
    assert sorted(bench.server_order(1, 0)) == sorted(bench.SERVERS)


def test_request_bodies_ask_both_servers_for_the_same_work(bench: ModuleType) -> None:
    prompts = bench.prompt_maker(7, 5, 8, 50)
    first = prompts()
    assert len(first) == 5 and all(8 <= token < 50 for token in first)
    assert bench.prompt_maker(7, 5, 8, 50)() == first and prompts() != first
    ours = bench.request_body("ours", first, 16, 1.0, eos_id=2)
    theirs = bench.request_body("llama.cpp", first, 16, 1.0, eos_id=2)
    shared = ("prompt", "max_tokens", "temperature", "stream", "stream_options")
    assert {key: ours[key] for key in shared} == {key: theirs[key] for key in shared}
    assert ours["logit_bias"] == {"2": -100.0} and "ignore_eos" not in ours
    # llama-server's defaults filter (top_k 40, top_p 0.95, min_p 0.05); ours samples all
    assert theirs["ignore_eos"] is True and "logit_bias" not in theirs
    assert (theirs["top_k"], theirs["top_p"], theirs["min_p"]) == (0, 1.0, 0.0)


def level(
    bench: ModuleType, clients: int, seconds: float, counts: list[int], ttft: list[float]
) -> Any:
    """A server_load.LevelResult with these finished requests."""
    result = bench.LevelResult(clients, seconds)
    result.requests, result.tokens = len(counts), sum(counts)
    result.token_counts, result.first_token = list(counts), list(ttft)
    return result


def test_levels_pool_over_rounds_and_ratios_say_who_is_faster(bench: ModuleType) -> None:
    ours, theirs = bench.Pooled(), bench.Pooled()
    ours.add(level(bench, 8, 2.0, [4, 4, 4], [0.1, 0.3, 0.2]))
    ours.add(level(bench, 8, 3.0, [4, 4], [0.4, 0.5]))
    theirs.add(level(bench, 8, 5.0, [4, 4, 4, 4, 4, 3], [0.2, 0.2, 0.2, 0.2, 0.2, 0.2]))
    mine, peer = ours.summary(), theirs.summary()
    assert mine["tokens_per_s"] == pytest.approx(20 / 5.0)  # all tokens over all seconds
    assert peer["tokens_per_s"] == pytest.approx(23 / 5.0)
    ordered = sorted([0.1, 0.3, 0.2, 0.4, 0.5])  # nearest-rank: index int(q * n)
    assert mine["ttft_p50_ms"] == pytest.approx(ordered[2] * 1000)
    assert mine["ttft_p95_ms"] == pytest.approx(ordered[4] * 1000)
    ratio = bench.compare(mine, peer)
    assert ratio["tokens_per_s"] == pytest.approx(20 / 23)  # ours slower: below 1
    assert ratio["ttft_p50"] == pytest.approx(0.2 / 0.3)  # ours waits longer: below 1
    table = bench.format_table({"q8": {"ours": {8: mine}, "llama.cpp": {8: peer}}}, 4)
    row = next(line for line in table.splitlines() if line.split()[:3] == ["q8", "q8_0", "8"])
    assert f"{20 / 23:.2f}x" in row and f"{0.2 / 0.3:.2f}x" in row and "5/6" in row
    # llama.cpp's short request is reported, not hidden in the average
    assert "WARNING: llama.cpp q8 at 8 clients: some requests got 3 tokens" in table
    assert "WARNING: ours" not in table
    assert math.isnan(bench.compare(mine, bench.Pooled().summary())["tokens_per_s"])


def test_a_missing_llama_server_is_one_line_that_says_how_to_build_it(
    bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ScratchLMError) as raised:
        bench.find_llama_server(None, tmp_path / "build")
    message = str(raised.value)
    assert "\n" not in message and "--target llama-server" in message and "cmake -S" in message
    binary = tmp_path / "build" / "bin" / "llama-server"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    assert bench.find_llama_server(None, tmp_path / "build") == binary
    with pytest.raises(SystemExit, match=r"^error: --llama-server .* is not an executable"):
        bench.main(["--llama-server", str(tmp_path / "missing")])


def llama_server_binary() -> str | None:
    found = shutil.which("llama-server")
    built = Path("/tmp/llama-build/bin/llama-server")
    if found:
        return found
    return str(built) if built.is_file() and os.access(built, os.X_OK) else None


@pytest.mark.slow
def test_one_client_level_against_both_servers(bench: ModuleType, tmp_path: Path) -> None:
    binary = llama_server_binary()
    if binary is None:
        pytest.skip("no llama-server binary (build it: see benchmarks/server_vs_llamacpp.py)")
    out = tmp_path / "result.json"
    flags = ["--preset", "tiny", "--quantize", "none", "--clients", "1", "--seconds", "2",
             "--max-tokens", "8", "--prompt-tokens", "8", "--threads", "1", "--rounds", "1",
             "--llama-server", binary, "--json", str(out)]  # fmt: skip
    bench.main(flags)
    result = json.loads(out.read_text())
    cells = result["summary"]["none"]
    for server in ("ours", "llama.cpp"):
        cell = cells[server]["1"]
        # every request streamed exactly max_tokens tokens (EOS banned on both sides)
        assert cell["requests"] >= 1 and cell["errors"] == 0, (server, cell)
        assert cell["min_tokens"] == cell["max_tokens"] == 8, (server, cell)
        assert cell["tokens_per_s"] > 0 and cell["ttft_p50_ms"] > 0
    ratio = result["ratios"]["none"]["1"]["tokens_per_s"]
    assert ratio == pytest.approx(
        cells["ours"]["1"]["tokens_per_s"] / cells["llama.cpp"]["1"]["tokens_per_s"]
    )
    assert [row["server"] for row in result["rounds"]] == ["ours", "llama.cpp"]


class Chunks(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


def test_stream_lines_split_only_where_server_sent_events_end_them(bench: ModuleType) -> None:
    # llama-server writes U+0085 and U+2028 unescaped in its JSON; chunks cut UTF-8 sequences
    payloads = [{"text": "a\u0085b\u2028c"}, {"text": "é\r"}, {"usage": {"completion_tokens": 2}}]
    body = "".join(f"data: {json.dumps(p, ensure_ascii=False)}\r\n\r\n" for p in payloads)
    raw = body.encode() + b"data: [DONE]"  # the last line without its end
    chunks = [raw[start : start + 5] for start in range(0, len(raw), 5)]

    async def read() -> list[str]:
        response = httpx.Response(200, stream=Chunks(chunks))
        server_load = sys.modules["server_load"]  # imported by the script, its client
        return [line async for line in server_load.sse_lines(response)]

    lines = asyncio.run(read())
    events = [line[len("data: ") :] for line in lines if line]
    assert [json.loads(event) for event in events[:-1]] == payloads
    assert events[-1] == "[DONE]" and lines.count("") == len(payloads)
