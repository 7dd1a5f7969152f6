"""Inference speed: prefill tokens/s, decode tokens/s at batch 1 and larger batches, time to first
token and peak memory. The library behind `scratchlm bench`; medians over `num_runs` runs."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from scratchlm.inference.batch import BatchDecoder, GenerationRequest
from scratchlm.inference.decode import Decoder
from scratchlm.inference.settings import GREEDY
from scratchlm.kv_cache import KVCache, cache_dtype
from scratchlm.model import GPT


@dataclass
class BenchResult:
    prefill_tokens_per_s: float
    decode_tokens_per_s: float  # batch 1
    time_to_first_token_s: float
    peak_memory_bytes: int
    batched_decode_tokens_per_s: dict[int, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "prefill_tokens_per_s": self.prefill_tokens_per_s,
            "decode_tokens_per_s": self.decode_tokens_per_s,
            "time_to_first_token_s": self.time_to_first_token_s,
            "peak_memory_bytes": self.peak_memory_bytes,
            "batched_decode_tokens_per_s": {
                str(k): v for k, v in self.batched_decode_tokens_per_s.items()
            },
            **self.settings,
        }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    # Peak resident set size of this process (Linux reports KiB, macOS bytes).
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


@torch.inference_mode()
def time_batch_one(model: GPT, prompt: torch.Tensor, new_tokens: int) -> tuple[float, float, float]:
    """(prefill seconds, time to first token, decode tokens/s) for one greedy sequence."""
    device = prompt.device
    prompt_ids = prompt[0].tolist()
    cache = KVCache.for_model(
        model.config,
        1,
        prompt.shape[1] + new_tokens,
        dtype=cache_dtype(model),
        device=device,
    )
    # The same decode primitive as Engine.generate: the fp32 CPU kernels when they apply.
    decoder = Decoder(model, cache)
    synchronize(device)
    started = time.perf_counter()
    token = decoder.prefill(prompt_ids).argmax(-1)  # (1,)
    synchronize(device)
    first = time.perf_counter()
    for _ in range(new_tokens - 1):
        token = decoder.step(token).argmax(-1)
    synchronize(device)
    done = time.perf_counter()
    decode_rate = (new_tokens - 1) / (done - first) if new_tokens > 1 else 0.0
    return first - started, first - started, decode_rate


@torch.inference_mode()
def time_batched(model: GPT, prompts: torch.Tensor, new_tokens: int) -> float:
    """Aggregate decode tokens/s of a full batch through the BatchDecoder."""
    device = prompts.device
    decoder = BatchDecoder(
        model, max_batch=prompts.shape[0], max_len=prompts.shape[1] + new_tokens, device=device
    )
    for row in prompts.tolist():
        decoder.add(GenerationRequest(row, max_new_tokens=new_tokens, sampling=GREEDY))
    synchronize(device)
    started = time.perf_counter()
    steps = 0
    while decoder.active:
        decoder.step()
        steps += 1
    synchronize(device)
    return prompts.shape[0] * (new_tokens - 1) / (time.perf_counter() - started)


def run_benchmark(
    model: GPT,
    *,
    prompt_tokens: int = 128,
    new_tokens: int = 128,
    batch_sizes: tuple[int, ...] = (1,),
    num_runs: int = 3,
    seed: int = 0,
) -> BenchResult:
    config = model.config
    device = model.token_embedding.weight.device
    if prompt_tokens + new_tokens > config.context_length:
        from scratchlm.errors import ScratchLMError

        raise ScratchLMError(
            f"--prompt-tokens {prompt_tokens} + --new-tokens {new_tokens} exceed the context "
            f"({config.context_length}); lower one of them"
        )
    generator = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, config.vocab_size, (1, prompt_tokens), generator=generator).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    time_batch_one(model, prompt, min(new_tokens, 8))  # warm-up (allocator, kernels)
    prefill, first, decode = [], [], []
    for _ in range(num_runs):
        prefill_s, first_s, decode_rate = time_batch_one(model, prompt, new_tokens)
        prefill.append(prompt_tokens / prefill_s)
        first.append(first_s)
        decode.append(decode_rate)
    batched: dict[int, float] = {}
    for batch in batch_sizes:
        if batch <= 1:
            continue
        prompts = torch.randint(
            0, config.vocab_size, (batch, prompt_tokens), generator=generator
        ).to(device)
        batched[batch] = statistics.median(
            time_batched(model, prompts, new_tokens) for _ in range(num_runs)
        )
    return BenchResult(
        prefill_tokens_per_s=statistics.median(prefill),
        decode_tokens_per_s=statistics.median(decode),
        time_to_first_token_s=statistics.median(first),
        peak_memory_bytes=peak_memory_bytes(device),
        batched_decode_tokens_per_s=batched,
        settings={
            "prompt_tokens": prompt_tokens,
            "new_tokens": new_tokens,
            "num_runs": num_runs,
            "device": str(device),
            "dtype": str(model.token_embedding.weight.dtype).replace("torch.", ""),
            "n_params": sum(p.numel() for p in model.parameters()),
        },
    )
