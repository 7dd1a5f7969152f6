"""The GPU check: every GPU path of scratchlm run once, timed, in one command of at most 10 minutes
on one GPU (issue 20, item 6). Record what it prints in docs/benchmarks.md.

Parts, each timed and given a fair share of --budget-s (skipped with a note once it is spent); a
failing part is reported with the last line of its error and the check goes on to the next; the
exit code is 1 if any part failed:
  environment  torch and CUDA versions, the GPU, its capability, memory, bf16 support, nvidia-smi
  train        `scratchlm train --precision bf16` on the synthetic corpus: steps/s, tokens/s and
               MFU from the trainer's own metrics.jsonl (hardware.py's peak table), loss finite
  compile      the same with --compile, and its first (compiling) step's time
  flash        the SDPA kernel the training forward dispatches to, and which backends
               (flash-only, efficient, cuDNN, math) can serve the model's shapes and dtype
  memory       training/memory.py's estimate (what --micro-batch auto uses) against
               torch.cuda.max_memory_allocated() over real training steps, same micro-batch
  resume       N steps against N/2 + --resume (deterministic algorithms on): final weights
  decode       batch-1 tokens/s of our Engine (bf16 on CUDA) against transformers generate on
               the `export hf` of the same checkpoint, greedy, and whether the tokens match
  server       `scratchlm serve` on loopback with 32 concurrent streaming clients
               (benchmarks/server_load.py's client): tokens/s, p50/p95 time to first token
Training runs as a user runs it (the CLI, in child processes with a timeout); the checks of
kernels and memory run in this process. Without CUDA the GPU-only parts say "skipped: no CUDA";
on CPU training uses fp32 (CPU bf16 autocast is slow) and --quick skips --compile (inductor takes
minutes on a CPU).

    .venv/bin/python benchmarks/gpu_check.py --json gpu_check.json
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gpu_check.py --device cpu --quick
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from scratchlm.config import ModelConfig, preset_config
from scratchlm.device import autocast_context, select_device
from scratchlm.io_utils import atomic_write_json, read_jsonl
from scratchlm.training.run_config import parse_model_overrides

PROMPT = "Once upon a time"
VOCAB = 4096  # the BPE tokenizer `train` builds by default; the in-process parts use it too


@dataclass(frozen=True)
class Sizes:
    """How big each part runs: the full check (a GPU) or --quick (a tiny model, a few steps)."""

    overrides: tuple[str, ...]  # --set FIELD=VALUE on the preset
    data: str
    batch: int
    train_steps: int
    compile_steps: int
    resume_steps: int
    warmup: int  # logged steps left out of the throughput median (CUDA init, compilation)
    new_tokens: int
    rounds: int
    server_tokens: int
    server_seconds: float
    clients: int = 32


FULL = Sizes((), "synthetic:10", 32, 30, 40, 10, 5, 256, 3, 128, 30.0)
TINY = ("n_layer=2", "d_model=64", "n_head=4", "n_kv_head=2", "ffn_hidden=128",
        "context_length=128")  # fmt: skip
QUICK = Sizes(TINY, "synthetic:0.3", 4, 6, 6, 4, 2, 24, 1, 16, 2.0)
MIN_PART_S = 5.0  # a part with less time than this left is skipped


class PartError(Exception):
    """A part's failure whose message is the whole story (a child's last log line)."""


@dataclass
class Check:
    args: argparse.Namespace
    device: torch.device
    sizes: Sizes
    work: Path
    precision: str
    checkpoint: Path | None = None  # the trained checkpoint decode and server read
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def model_config(self) -> ModelConfig:
        overrides = parse_model_overrides(list(self.sizes.overrides))
        return preset_config(self.args.preset, vocab_size=VOCAB, **overrides)

    def train_flags(self, out: Path, steps: int) -> list[str]:
        """`scratchlm train` as a user runs it; evaluation, samples and saves kept to the end."""
        context = self.model_config().context_length
        flags = ["train", "--preset", self.args.preset, "--precision", self.precision]
        for assignment in self.sizes.overrides:
            flags += ["--set", assignment]
        return [
            *flags,
            *("--device", str(self.device), "--data", self.sizes.data, "--out", str(out)),
            *("--batch-size", str(self.sizes.batch), "--max-steps", str(steps)),
            *("--log-every", "1", "--eval-every", "1000000", "--save-every", "1000000"),
            *("--eval-tokens", str(self.sizes.batch * context), "--sample-tokens", "0"),
            # no step-0 checkpoint for spike backtracking: these runs are short
            *("--spike-factor", "0", "--quiet"),
            *(["--data-workers", "1"] if self.args.quick else []),
        ]


# --- helpers --------------------------------------------------------------------------------------
def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def fair_share(remaining: float, pending: list[str]) -> float:
    """The first of `pending`'s weighted share of the time left to it and the parts after it."""
    return remaining * PARTS[pending[0]][1] / sum(PARTS[name][1] for name in pending)


def time_limit(remaining: float, pending: list[str]) -> float:
    """The seconds the first of `pending` may take: up to twice its fair share (time a part does
    not use flows to the later ones), minus the minimum each later part needs to start."""
    return min(2 * fair_share(remaining, pending), remaining - MIN_PART_S * (len(pending) - 1))


def first_difference(ours: list[int], theirs: list[int]) -> int | None:
    """The first position where two token lists differ (a length difference counts), else None."""
    for position, (a, b) in enumerate(zip(ours, theirs, strict=False)):
        if a != b:
            return position
    return None if len(ours) == len(theirs) else min(len(ours), len(theirs))


def run_training(check: Check, runs: list[list[str]], name: str, timeout: float, **kw: Any) -> None:
    """`scratchlm train` runs, one after the other, in one child process (`--child-train`)."""
    log = check.work / f"{name}.log"
    spec = {"runs": runs, "deterministic": kw.get("deterministic", False)}
    env = {**os.environ, "SCRATCHLM_CACHE": str(check.work / "cache")}
    if spec["deterministic"]:
        env["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"  # cuBLAS' deterministic workspace
    command = [sys.executable, __file__, "--child-train", json.dumps(spec)]
    with log.open("w") as out:
        # Own session: a timeout kills inductor's compile workers too.
        child = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            code = child.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            raise PartError(
                f"timed out after {timeout:.0f} s: {name}.log (kept with --work-dir)"
            ) from None
    if code != 0:
        raise PartError(f"exit code {code}: {last_line(log.read_text(errors='replace'))}")


def child_train(spec: dict[str, Any]) -> int:
    if spec["deterministic"]:
        # warn_only: an op without a deterministic kernel runs anyway, with a warning in the log
        torch.use_deterministic_algorithms(True, warn_only=True)
    from scratchlm.cli import main as cli_main

    for argv in spec["runs"]:
        code = cli_main(argv)
        if code:
            return code
    return 0


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    from scratchlm.checkpoint import latest_valid_checkpoint

    checkpoint = latest_valid_checkpoint(run_dir, log=lambda line: None)
    if checkpoint is None:
        raise PartError(f"{run_dir} has no valid checkpoint")
    return load_file(str(checkpoint / "model.safetensors"))


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    if a.keys() != b.keys():
        raise PartError("the two checkpoints hold different tensors")
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def throughput(run_dir: Path, warmup: int) -> dict[str, Any]:
    """Median tokens/s and MFU of the logged steps after `warmup`, from metrics.jsonl."""
    records = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("kind") == "train"]
    if not records:
        raise PartError(f"no training steps logged in {run_dir / 'metrics.jsonl'}")
    losses = [float(r["loss"]) for r in records]
    if not all(math.isfinite(loss) for loss in losses):
        raise PartError(f"non-finite training loss: {losses}")
    timed = records[warmup:]
    if not timed:  # the budget (--max-time) ran out during compilation or warm-up
        raise PartError(f"only {len(records)} steps ran in time; {warmup} are warm-up")
    tokens_per_s = statistics.median(r["tokens_per_s"] for r in timed)
    mfus = [r["mfu"] for r in timed if r.get("mfu") is not None]
    tokens_per_step = records[0]["tokens"] / records[0]["step"]
    return {
        "steps": records[-1]["step"],
        "tokens_per_step": tokens_per_step,
        "tokens_per_s": tokens_per_s,
        "steps_per_s": tokens_per_s / tokens_per_step,
        "mfu": statistics.median(mfus) if mfus else None,
        "first_step_s": records[0]["elapsed_s"],
        "loss_first_last": [losses[0], losses[-1]],
    }


def training_summary(result: dict[str, Any]) -> str:
    mfu = f"{result['mfu']:.1%}" if result["mfu"] is not None else "n/a"
    return (
        f"{result['tokens_per_s']:,.0f} tok/s, {result['steps_per_s']:.2f} steps/s, MFU {mfu}, "
        f"first step {result['first_step_s']:.1f} s, loss {result['loss_first_last'][1]:.3f}"
    )


def release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- the parts ------------------------------------------------------------------------------------
def part_environment(check: Check, budget: float) -> dict[str, Any]:
    from scratchlm.training.hardware import describe_hardware, peak_flops

    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda}
    info["hardware"] = describe_hardware(check.device)
    peak, source = peak_flops(check.device, check.precision)
    info.update(peak_flops=peak, peak_flops_source=source, precision=check.precision)
    if check.device.type != "cuda":
        info["summary"] = f"no CUDA: {info['hardware']['cpu_model']}, torch {torch.__version__}"
        return info
    properties = torch.cuda.get_device_properties(check.device)
    info.update(
        gpu=properties.name,
        capability=f"{properties.major}.{properties.minor}",
        memory_gib=round(properties.total_memory / 2**30, 1),
        multiprocessors=properties.multi_processor_count,
        bf16=torch.cuda.is_bf16_supported(),
    )
    if shutil.which("nvidia-smi"):
        query = "--query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm"
        command = ["nvidia-smi", query, "--format=csv,noheader"]
        smi = subprocess.run(command, text=True, capture_output=True, timeout=min(budget, 20))
        info["nvidia_smi"] = last_line(smi.stdout or smi.stderr)
    info["summary"] = (
        f"{properties.name} (sm {info['capability']}, {info['memory_gib']} GiB, bf16 "
        f"{info['bf16']}), torch {torch.__version__}, CUDA {torch.version.cuda}"
    )
    return info


def part_train(check: Check, budget: float) -> dict[str, Any]:
    out = check.work / "train-eager"
    run_training(check, [check.train_flags(out, check.sizes.train_steps)], "train-eager", budget)
    result = throughput(out, check.sizes.warmup)
    check.checkpoint = out
    return {**result, "summary": training_summary(result)}


def part_compile(check: Check, budget: float) -> dict[str, Any]:
    if check.device.type == "cpu" and check.args.quick:
        return {"status": "skipped", "summary": "--quick on CPU: inductor compiles for minutes"}
    out = check.work / "train-compile"
    # --max-time stops the steps (not the compilation) in time for the final save
    flags = [*check.train_flags(out, check.sizes.compile_steps), "--compile"]
    flags += ["--max-time", f"{max(10, int(budget - 60))}s"]
    run_training(check, [flags], "train-compile", budget)
    result = throughput(out, check.sizes.warmup)
    check.checkpoint = check.checkpoint or out
    eager = check.results.get("train", {}).get("tokens_per_s")
    if eager:
        result["speedup_over_eager"] = result["tokens_per_s"] / eager
    speedup = f", {result['speedup_over_eager']:.2f}x eager" if eager else ""
    return {**result, "summary": training_summary(result) + speedup}


def training_step(model: Any, inputs: torch.Tensor, check: Check) -> None:
    with autocast_context(check.precision, check.device):
        logits = model(inputs)  # (B, T, padded_vocab)
    logits.float().mean().backward()
    model.zero_grad(set_to_none=True)


def part_flash(check: Check, budget: float) -> dict[str, Any]:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.profiler import ProfilerActivity, profile

    from scratchlm.model import build_model

    config = check.model_config()
    model = build_model(config, check.device).train()
    inputs = torch.randint(0, VOCAB, (2, config.context_length), device=check.device)
    training_step(model, inputs, check)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        training_step(model, inputs, check)
    # the kernels SDPA dispatched to, e.g. aten::_scaled_dot_product_flash_attention(_backward)
    events = {event.key for event in profiler.key_averages()}
    dispatched = sorted(key for key in events if "_scaled_dot_product_" in key)
    backends: dict[str, str] = {}
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                    SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH):  # fmt: skip
        with warnings.catch_warnings(record=True) as caught:  # why a kernel refused the call
            warnings.simplefilter("always")
            try:
                with sdpa_kernel(backend):
                    training_step(model, inputs, check)
                backends[backend.name] = "ok"
            except RuntimeError as error:
                reasons = "; ".join(last_line(str(w.message)) for w in caught)
                backends[backend.name] = last_line(str(error)) + (f" ({reasons})" * bool(reasons))
    working = [name for name, verdict in backends.items() if verdict == "ok"]
    result: dict[str, Any] = {"dispatched": dispatched, "backends": backends}
    result["summary"] = f"dispatched {', '.join(dispatched)}; backends that serve it: {working}"
    if check.device.type != "cuda":
        return {**result, "status": "skipped", "summary": "no CUDA; CPU: " + result["summary"]}
    if backends["FLASH_ATTENTION"] != "ok":
        raise PartError(f"flash-only attention fails: {backends['FLASH_ATTENTION']}")
    if not any("flash" in name for name in dispatched):
        raise PartError(f"the default dispatch does not run flash attention: {dispatched}")
    return result


def measured_peak_bytes(check: Check, config: ModelConfig, batch: int) -> int:
    """Peak allocated bytes of 3 training steps as the trainer runs them (fp32 master weights,
    autocast, float logits into the loss), with AdamW as the estimate assumes."""
    from scratchlm.model import build_model
    from scratchlm.training.optim import build_optimizer
    from scratchlm.training.token_weights import weighted_cross_entropy

    release_memory()
    baseline = torch.cuda.memory_allocated(check.device)
    torch.cuda.reset_peak_memory_stats(check.device)
    model = build_model(config, check.device).train()
    hyper: dict[str, Any] = {"learning_rate": 1e-4, "weight_decay": 0.1, "betas": (0.9, 0.95)}
    optimizer = build_optimizer(model, **hyper, device=check.device, kind="adamw")
    inputs, targets = torch.randint(
        0, VOCAB, (2, batch, config.context_length), device=check.device
    )
    for _ in range(3):
        with autocast_context(check.precision, check.device):
            logits = model(inputs)  # (B, T, padded_vocab), held through backward
        loss = weighted_cross_entropy(logits.float().flatten(0, 1), targets.flatten(), None)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        del logits, loss
    torch.cuda.synchronize(check.device)
    return int(torch.cuda.max_memory_allocated(check.device) - baseline)


def part_memory(check: Check, budget: float) -> dict[str, Any]:
    from scratchlm.training.memory import estimate_training_bytes

    config, cuda = check.model_config(), check.device.type == "cuda"
    rows: dict[str, dict[str, float]] = {}
    for batch in sorted({max(1, check.sizes.batch // 4), check.sizes.batch}):
        parts = estimate_training_bytes(config, batch, precision=check.precision,
                                        activation_checkpointing=False,
                                        device_type=check.device.type)  # fmt: skip
        rows[str(batch)] = row = {"estimate_gib": parts["total"] / 2**30}
        if cuda:
            row["measured_gib"] = measured_peak_bytes(check, config, batch) / 2**30
            row["ratio"] = row["estimate_gib"] / row["measured_gib"]
    if not cuda:
        text = ", ".join(f"b{b} {r['estimate_gib']:.2f} GiB" for b, r in rows.items())
        return {"micro_batches": rows, "status": "skipped", "summary": f"no CUDA; estimate {text}"}
    text = ", ".join(f"b{b}: estimate {r['estimate_gib']:.2f} / peak {r['measured_gib']:.2f} GiB"
                     f" = {r['ratio']:.2f}" for b, r in rows.items())  # fmt: skip
    return {"micro_batches": rows, "summary": text}


def part_resume(check: Check, budget: float) -> dict[str, Any]:
    steps, started = check.sizes.resume_steps, time.perf_counter()
    whole, paused = check.work / "resume-whole", check.work / "resume-paused"
    runs = [check.train_flags(whole, steps),
            [*check.train_flags(paused, steps), "--stop-after-steps", str(steps // 2)],
            [*check.train_flags(paused, steps), "--resume"]]  # fmt: skip
    run_training(check, runs, "resume", budget, deterministic=True)
    difference = max_difference(final_weights(whole), final_weights(paused))
    result: dict[str, Any] = {"steps": steps, "paused_at": steps // 2, "max_abs_diff": difference}
    result["bit_identical"] = difference == 0.0
    if difference == 0.0:
        return {**result, "summary": f"{steps} steps = {steps // 2} + resume: bit-identical"}
    # Not identical: is it the resume, or do two uninterrupted runs differ as well?
    again, left = check.work / "resume-again", budget - (time.perf_counter() - started)
    run_training(check, [check.train_flags(again, steps)], "resume-again", left, deterministic=True)
    noise = max_difference(final_weights(whole), final_weights(again))
    result["uninterrupted_runs_max_abs_diff"] = noise
    if noise == 0.0 or difference > 10 * noise:
        raise PartError(f"resumed weights differ by {difference:.3g}; reruns by {noise:.3g}")
    result["summary"] = (
        f"not bit-identical (max |diff| {difference:.3g}), but two uninterrupted runs differ by "
        f"{noise:.3g} too: GPU kernels are not deterministic here"
    )
    return result


def part_decode(check: Check, budget: float) -> dict[str, Any]:
    from scratchlm.export.hf import export_hf
    from scratchlm.inference.engine import Engine
    from scratchlm.inference.load import load_for_inference
    from scratchlm.inference.settings import GREEDY

    if check.checkpoint is None:
        raise PartError("no trained checkpoint (the train and compile parts failed)")
    loaded, device = load_for_inference(str(check.checkpoint), str(check.device))
    engine, dtype = Engine(loaded.model), loaded.model.token_embedding.weight.dtype
    prompt, new = loaded.tokenizer.encode(PROMPT), check.sizes.new_tokens

    def ours(count: int) -> tuple[list[int], float]:
        started = time.perf_counter()
        ids = list(engine.generate(prompt, max_new_tokens=count, sampling=GREEDY))
        return ids, len(ids) / (time.perf_counter() - started)

    ours(8)  # warm-up
    ours_ids, rate = ours(new)
    try:
        from transformers import AutoModelForCausalLM
    except ImportError:
        raise PartError(f"ours {rate:,.1f} tok/s; transformers is not installed") from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: never wait for the Hub
    hf_model: Any = AutoModelForCausalLM.from_pretrained(
        export_hf(str(check.checkpoint), check.work / "hf"), dtype=dtype
    )
    hf_model = hf_model.to(device).eval()
    hf_model.generation_config.eos_token_id = None  # exactly `count` tokens, as ours

    @torch.inference_mode()
    def theirs(count: int) -> tuple[list[int], float]:
        started = time.perf_counter()
        output = hf_model.generate(torch.tensor([prompt], device=device), do_sample=False,
                                   max_new_tokens=count, pad_token_id=0)  # fmt: skip
        ids = output[0, len(prompt) :].tolist()
        return ids, len(ids) / (time.perf_counter() - started)

    theirs(8)  # warm-up
    hf_ids, _ = theirs(new)
    rates: dict[str, list[float]] = {"ours": [], "transformers": []}
    for _ in range(check.sizes.rounds):  # alternating, so that machine noise hits both alike
        rates["ours"].append(ours(new)[1])
        rates["transformers"].append(theirs(new)[1])
    result: dict[str, Any] = {"dtype": str(dtype).removeprefix("torch."), "new_tokens": new}
    result["ours_tokens_per_s"] = statistics.median(rates["ours"])
    result["transformers_tokens_per_s"] = statistics.median(rates["transformers"])
    result["ratio"] = result["ours_tokens_per_s"] / result["transformers_tokens_per_s"]
    position = first_difference(ours_ids, hf_ids)
    result.update(greedy_match=position is None, first_difference=position)
    result["summary"] = (
        f"ours {result['ours_tokens_per_s']:,.1f} tok/s, transformers "
        f"{result['transformers_tokens_per_s']:,.1f} ({result['dtype']}) -> {result['ratio']:.2f}x"
        f"; greedy {'tokens match' if position is None else f'differs at token {position}'}"
    )
    if position is not None:
        result["ours_text"] = loaded.tokenizer.decode(ours_ids)
        result["transformers_text"] = loaded.tokenizer.decode(hf_ids)
        if dtype == torch.float32:  # the export is exact: in fp32 the two must agree
            raise PartError(result["summary"])
    return result


def part_server(check: Check, budget: float) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import httpx

    from server_load import percentile, run_level

    if check.checkpoint is None:
        raise PartError("no trained checkpoint (the train and compile parts failed)")
    started = time.perf_counter()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "scratchlm", "serve", "--checkpoint", str(check.checkpoint),
               "--port", str(port), "--max-batch", str(check.sizes.clients),
               "--max-queue", "1024", "--device", str(check.device)]  # fmt: skip
    env = {key: value for key, value in os.environ.items() if key != "SCRATCHLM_API_KEY"}
    log, url = check.work / "server.log", f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        while True:
            if server.poll() is not None:
                output = last_line(log.read_text(errors="replace"))
                raise PartError(f"the server exited ({server.returncode}): {output}")
            if time.perf_counter() - started > budget / 2:
                raise PartError(f"the server did not answer /health within {budget / 2:.0f} s")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        startup = time.perf_counter() - started
        # a request that hangs fails within the part's budget
        timeout = min(120.0, max(10.0, budget / 2))
        options = argparse.Namespace(prompt=PROMPT, max_tokens=check.sizes.server_tokens,
                                     api_key=None, request_timeout=timeout)  # fmt: skip
        asyncio.run(run_level(url, 1, 0.01, options))  # warm-up: one request
        seconds = min(check.sizes.server_seconds, max(2.0, budget - startup - 15))
        level = asyncio.run(run_level(url, check.sizes.clients, seconds, options))
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    result: dict[str, Any] = {"clients": level.clients, "seconds": level.seconds,
                              "startup_s": startup, "requests": level.requests,
                              "errors": level.errors,
                              "tokens_per_s": level.tokens / level.seconds}  # fmt: skip
    for name, values in (("ttft", level.first_token), ("itl", level.inter_token)):
        for fraction in (0.5, 0.95):
            result[f"{name}_p{fraction * 100:.0f}_ms"] = percentile(values, fraction) * 1000
    result["summary"] = (
        f"{level.clients} clients: {result['tokens_per_s']:,.0f} tok/s, TTFT p50 "
        f"{result['ttft_p50_ms']:.0f} ms / p95 {result['ttft_p95_ms']:.0f} ms, "
        f"{level.requests} requests, {level.errors} errors"
    )
    if level.errors or not level.requests:
        raise PartError(result["summary"])
    return result


# name -> (the part, its weight in the budget's fair shares)
PARTS: dict[str, tuple[Callable[[Check, float], dict[str, Any]], int]] = {
    "environment": (part_environment, 1),
    "train": (part_train, 15),
    "compile": (part_compile, 28),
    "flash": (part_flash, 3),
    "memory": (part_memory, 4),
    "resume": (part_resume, 10),
    "decode": (part_decode, 8),
    "server": (part_server, 12),
}


# --- the run --------------------------------------------------------------------------------------
def run_part(check: Check, name: str, limit: float) -> dict[str, Any]:
    if limit < MIN_PART_S:
        return {"status": "skipped", "summary": f"budget spent ({limit:.0f} s left for it)"}
    try:
        return {"status": "ok", "limit_s": round(limit), **PARTS[name][0](check, limit)}
    except Exception as error:  # a failing part is reported and the next one runs
        message = str(error) if isinstance(error, PartError) else last_line(traceback.format_exc())
        return {"status": "failed", "summary": message, "traceback": traceback.format_exc()}
    finally:
        release_memory()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu (default: auto)")
    parser.add_argument("--preset", default="akane-124m", help="(default: akane-124m)")
    parser.add_argument("--quick", action="store_true", help="a tiny model, a few steps")
    parser.add_argument("--budget-s", type=float, default=540.0, help="(default: 540)")
    parser.add_argument("--json", type=Path, help="write every measurement here, part by part")
    parser.add_argument("--work-dir", type=Path, help="keep runs and logs here (default: temp)")
    parser.add_argument("--child-train", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_train:
        return child_train(json.loads(args.child_train))
    device = select_device(args.device)
    precision = "bf16" if device.type == "cuda" else "fp32"
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    report = {"command": " ".join(sys.argv), "date": date, "preset": args.preset,
              "quick": args.quick, "budget_s": args.budget_s, "precision": precision}  # fmt: skip
    print(f"gpu_check: {device}, {precision}, {args.preset}{' --quick' if args.quick else ''}, "
          f"budget {args.budget_s:.0f} s", flush=True)  # fmt: skip
    deadline = time.perf_counter() + args.budget_s
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as temporary:
        work = args.work_dir or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        check = Check(args, device, QUICK if args.quick else FULL, work, precision)
        report["parts"] = check.results
        names = list(PARTS)
        for index, name in enumerate(names):
            started = time.perf_counter()
            result = run_part(check, name, time_limit(deadline - started, names[index:]))
            result["seconds"] = round(time.perf_counter() - started, 1)
            check.results[name] = result
            print(f"[{name}] {result['status']} in {result['seconds']:.0f} s: {result['summary']}",
                  flush=True)  # fmt: skip
            if args.json:  # after every part: a check cut short still leaves what it measured
                atomic_write_json(args.json, report)
    report["failed"] = failed = [name for name, part in check.results.items()
                                 if part["status"] == "failed"]  # fmt: skip
    if args.json:
        atomic_write_json(args.json, report)
    print(f"\n{'part':<12} {'status':<8} {'seconds':>7}  result")
    for name, result in check.results.items():
        print(f"{name:<12} {result['status']:<8} {result['seconds']:>7.1f}  {result['summary']}")
    print(f"failed: {', '.join(failed)}" if failed else "every part passed or was skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
