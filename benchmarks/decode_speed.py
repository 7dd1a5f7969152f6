"""Decode speed at batch 1, side by side in one process, with ratios.

For each model (random weights are fine for speed):
  - ours (Engine.generate, greedy, KV cache) vs Hugging Face transformers generate() on the same
    weights (LlamaForCausalLM built from our Llama-math model): tokens/s and the ratio;
  - ours vs the memory-bandwidth floor: bytes of weights read per token / measured bandwidth of a
    large tensor copy; the fraction reached;
  - KV cache vs no cache (full recomputation each step) at --long-tokens generated tokens;
  - aggregate tokens/s at larger batches (continuous-batching decoder) vs batch 1.
Runs alternate between the contenders round by round; medians are reported.

    .venv/bin/python benchmarks/decode_speed.py --presets small llama-120m akane-124m
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from scratchlm.config import preset_config
from scratchlm.export.hf import llama_blockers, to_transformers_llama
from scratchlm.inference.bench import time_batch_one, time_batched
from scratchlm.inference.engine import Engine
from scratchlm.inference.quantize import quantize_for_cpu
from scratchlm.inference.sampling import GREEDY
from scratchlm.model import GPT, build_model, count_parameters


def memory_bandwidth_bytes_per_s(megabytes: int = 512, repeats: int = 5) -> float:
    """Copy bandwidth: (read + write) bytes per second of a large tensor copy, best of several."""
    source = torch.ones(megabytes * 2**20 // 4)
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        target.copy_(source)
        best = min(best, time.perf_counter() - started)
    return 2 * source.numel() * 4 / best


@torch.inference_mode()
def ours_tokens_per_s(model: GPT, prompt: list[int], new_tokens: int) -> float:
    started = time.perf_counter()
    count = sum(
        1 for _ in Engine(model).generate(prompt, max_new_tokens=new_tokens, sampling=GREEDY)
    )
    return count / (time.perf_counter() - started)


@torch.inference_mode()
def transformers_tokens_per_s(hf_model: object, prompt: list[int], new_tokens: int) -> float:
    inputs = torch.tensor([prompt])
    started = time.perf_counter()
    output = hf_model.generate(  # type: ignore[attr-defined]
        inputs,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
    )
    return (output.shape[1] - len(prompt)) / (time.perf_counter() - started)


@torch.inference_mode()
def no_cache_tokens_per_s(model: GPT, prompt: list[int], new_tokens: int) -> float:
    ids = list(prompt)
    started = time.perf_counter()
    for _ in range(new_tokens):
        logits = model(torch.tensor([ids]), last_token_only=True)
        ids.append(int(logits[0, -1, : model.config.vocab_size].argmax()))
    return new_tokens / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=["small", "llama-120m", "akane-124m"])
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument(
        "--long-tokens", type=int, default=512, help="generated tokens for cache vs no cache"
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["transformers", "int8", "nocache", "batch"]
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    bandwidth = memory_bandwidth_bytes_per_s()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; copy bandwidth {bandwidth / 1e9:.1f} GB/s"
    )
    for name in args.presets:
        config = (
            preset_config(name, vocab_size=4096)
            if name in ("tiny", "small")
            else preset_config(name)
        )
        model = build_model(config).eval()
        params = count_parameters(model)
        prompt = torch.randint(0, config.vocab_size, (args.prompt_tokens,)).tolist()
        hf_model = None
        if "transformers" not in args.skip and not llama_blockers(config):
            hf_model = to_transformers_llama(model)
        ours, theirs = [], []
        ours_tokens_per_s(model, prompt, 4)  # warm-up
        if hf_model is not None:
            transformers_tokens_per_s(hf_model, prompt, 4)
        for _ in range(args.rounds):
            ours.append(ours_tokens_per_s(model, prompt, args.new_tokens))
            if hf_model is not None:
                theirs.append(transformers_tokens_per_s(hf_model, prompt, args.new_tokens))
        decode_only = statistics.median(
            time_batch_one(model, torch.tensor([prompt]), args.new_tokens)[2]
            for _ in range(args.rounds)
        )
        floor = bandwidth / (params * 4)  # fp32 weights read once per token
        line = (
            f"{name} ({params / 1e6:.1f}M params, fp32): ours {statistics.median(ours):,.1f} tokens/s "
            f"(decode only {decode_only:,.1f})"
        )
        if theirs:
            line += (
                f" | transformers {statistics.median(theirs):,.1f} tokens/s | ratio ours/transformers "
                f"{statistics.median(ours) / statistics.median(theirs):.2f}"
            )
        print(line)
        print(
            f"    bandwidth floor {floor:,.1f} tokens/s -> ours reaches {decode_only / floor:.0%} of it"
        )
        if "int8" not in args.skip:
            quantized = quantize_for_cpu(model, "int8")
            ours_tokens_per_s(quantized, prompt, 4)
            int8_rate = statistics.median(
                ours_tokens_per_s(quantized, prompt, args.new_tokens) for _ in range(args.rounds)
            )
            line = f"    ours int8 (--quantize int8): {int8_rate:,.1f} tokens/s = {int8_rate / statistics.median(ours):.2f}x ours fp32"
            if theirs:
                line += f", {int8_rate / statistics.median(theirs):.2f}x transformers fp32"
            print(line + f"; {int8_rate / (bandwidth / params):.0%} of the int8 bandwidth floor")
        if "nocache" not in args.skip:
            long_tokens = min(args.long_tokens, config.context_length - 1)
            short = [prompt[0]]
            cached = ours_tokens_per_s(model, short, long_tokens)
            uncached = no_cache_tokens_per_s(model, short, long_tokens)
            print(
                f"    {long_tokens} generated tokens: KV cache {cached:,.1f} tokens/s vs no cache "
                f"{uncached:,.1f} tokens/s -> {cached / uncached:.1f}x"
            )
        if "batch" not in args.skip:
            for batch in args.batch_sizes:
                prompts = torch.randint(0, config.vocab_size, (batch, args.prompt_tokens))
                rate = statistics.median(
                    time_batched(model, prompts, args.new_tokens)
                    for _ in range(max(1, args.rounds - 1))
                )
                print(
                    f"    batch {batch}: {rate:,.1f} tokens/s aggregate = {rate / decode_only:.1f}x batch 1"
                )


if __name__ == "__main__":
    main()
