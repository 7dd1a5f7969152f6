"""Decode speed at batch 1, side by side in one process, with ratios.

For each model (random weights are fine for speed):
  - ours (Engine.generate, greedy, KV cache) with the fp32 decode kernels (the default,
    scratchlm.inference.kernels) and without them (SCRATCHLM_KERNELS=0: PyTorch ops) vs Hugging
    Face transformers generate() on the same weights (LlamaForCausalLM built from our Llama-math
    model): tokens/s and the ratios;
  - ours vs the memory-bandwidth floor: bytes of weights read per token / measured bandwidth of a
    large tensor copy; the fraction reached (the bytes read are every weight except the input
    embedding of an untied model, of which one row is read);
  - KV cache vs no cache (full recomputation each step) at --long-tokens generated tokens;
  - aggregate tokens/s of the continuous-batching decoder (the server's BatchDecoder.step) at
    --batch-sizes rows, with the kernels' batched step (each weight block read once for all rows)
    and without (SCRATCHLM_KERNELS=0: the model's batched forward), per --quantize weight format
    (none = fp32, q8, q4, bf16); batch 1 is the lone-row kernel step.
Runs alternate between the contenders round by round; medians are reported.

    .venv/bin/python benchmarks/decode_speed.py --presets small llama-120m akane-124m
    # the batched step alone, fp32 and q4:
    .venv/bin/python benchmarks/decode_speed.py --presets llama-42m --skip transformers int8 \
        nocache --batch-sizes 1 8 32 --quantize none q4
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from scratchlm.config import preset_config
from scratchlm.export.hf import llama_blockers, to_transformers_llama
from scratchlm.inference.bench import time_batch_one, time_batched
from scratchlm.inference.engine import Engine
from scratchlm.inference.kernels import loader as kernels
from scratchlm.inference.quantize import quantize_for_cpu
from scratchlm.inference.settings import GREEDY
from scratchlm.model import GPT, build_model, count_parameters


def memory_bandwidth_bytes_per_s(megabytes: int = 512, repeats: int = 5) -> float:
    """Copy bandwidth: (read + write) bytes per second of a large tensor copy, best of several.

    On a shared machine one sample can be far below what the memory system delivers (other
    processes' traffic), which would inflate the fraction of the floor; main() samples it again in
    every round and uses the best seen."""
    source = torch.ones(megabytes * 2**20 // 4)
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        target.copy_(source)
        best = min(best, time.perf_counter() - started)
    return 2 * source.numel() * 4 / best


@contextmanager
def kernels_switch(enabled: bool) -> Iterator[None]:
    """Run the block with the fp32 decode kernels on or off (the SCRATCHLM_KERNELS opt-out)."""
    saved = os.environ.get(kernels.ENV_SWITCH)
    os.environ[kernels.ENV_SWITCH] = "1" if enabled else "0"
    try:
        yield
    finally:
        if saved is None:
            del os.environ[kernels.ENV_SWITCH]
        else:
            os.environ[kernels.ENV_SWITCH] = saved


def weight_bytes_per_token(model: GPT) -> int:
    """fp32 bytes of weights one decode step reads: all but the token embedding's unused rows
    (tied: the embedding is the lm_head and is read whole) and the position table."""
    total = count_parameters(model)
    if not model.config.tie_embeddings:
        total -= model.token_embedding.weight.numel()
    if model.position_embedding is not None:
        total -= model.position_embedding.weight.numel()
    return total * 4


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
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument(
        "--quantize",
        nargs="+",
        default=["none"],
        choices=["none", "q8", "q4", "bf16"],
        help="weight formats of the batched-step table",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["transformers", "int8", "nocache", "batch"]
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    bandwidth = memory_bandwidth_bytes_per_s()
    first_bandwidth = bandwidth
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; copy bandwidth {bandwidth / 1e9:.1f} GB/s"
    )
    started = time.perf_counter()
    library = kernels.load_library()
    print(
        f"fp32 decode kernels: {'loaded' if library else 'UNAVAILABLE: ' + str(kernels.unavailable_reason())}"
        f" in {time.perf_counter() - started:.1f} s (build included unless cached)"
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
        # Warm-up of every contender (the kernels' library was built or loaded above).
        for enabled in (True, False):
            with kernels_switch(enabled):
                ours_tokens_per_s(model, prompt, 4)
        if hf_model is not None:
            transformers_tokens_per_s(hf_model, prompt, 4)
        # Round by round: ours with kernels, ours with PyTorch ops, transformers; then decode-only
        # rates (time_batch_one: no prefill, no sampling) with and without the kernels.
        paths = {"kernels": True, "pytorch": False}
        rates: dict[str, list[float]] = {"kernels": [], "pytorch": [], "transformers": []}
        decode: dict[str, list[float]] = {"kernels": [], "pytorch": []}
        for _ in range(args.rounds):
            for label, enabled in paths.items():
                with kernels_switch(enabled):
                    rates[label].append(ours_tokens_per_s(model, prompt, args.new_tokens))
            if hf_model is not None:
                rates["transformers"].append(
                    transformers_tokens_per_s(hf_model, prompt, args.new_tokens)
                )
            for label, enabled in paths.items():
                with kernels_switch(enabled):
                    decode[label].append(
                        time_batch_one(model, torch.tensor([prompt]), args.new_tokens)[2]
                    )
            bandwidth = max(bandwidth, memory_bandwidth_bytes_per_s(repeats=3))
        median = {label: statistics.median(values) for label, values in rates.items() if values}
        decode_only = {label: statistics.median(values) for label, values in decode.items()}
        print(
            f"{name} ({params / 1e6:.1f}M params, fp32): ours {median['kernels']:,.1f} tokens/s "
            f"(decode only {decode_only['kernels']:,.1f}) | ours without kernels "
            f"{median['pytorch']:,.1f} (decode only {decode_only['pytorch']:,.1f}) -> kernels "
            f"{median['kernels'] / median['pytorch']:.2f}x"
        )
        if "transformers" in median:
            print(
                f"    transformers {median['transformers']:,.1f} tokens/s | ours/transformers "
                f"{median['kernels'] / median['transformers']:.2f} with kernels, "
                f"{median['pytorch'] / median['transformers']:.2f} without"
            )
        print(
            f"    copy bandwidth: best {bandwidth / 1e9:.1f} GB/s so far (first sample "
            f"{first_bandwidth / 1e9:.1f})"
        )
        read = weight_bytes_per_token(model)
        floor = bandwidth / read  # every weight read once per token
        print(
            f"    bandwidth floor {floor:,.1f} tokens/s ({read / 1e6:,.0f} MB of weights per token)"
            f" -> ours reaches {decode_only['kernels'] / floor:.0%} with kernels, "
            f"{decode_only['pytorch'] / floor:.0%} without; against all parameters' bytes "
            f"({params * 4 / 1e6:,.0f} MB: floor {bandwidth / (params * 4):,.1f} tokens/s) "
            f"{decode_only['kernels'] / (bandwidth / (params * 4)):.0%} and "
            f"{decode_only['pytorch'] / (bandwidth / (params * 4)):.0%}"
        )
        if "int8" not in args.skip:
            quantized = quantize_for_cpu(model, "int8")
            ours_tokens_per_s(quantized, prompt, 4)
            int8_rate = statistics.median(
                ours_tokens_per_s(quantized, prompt, args.new_tokens) for _ in range(args.rounds)
            )
            line = f"    ours int8 (--quantize int8): {int8_rate:,.1f} tokens/s = {int8_rate / median['kernels']:.2f}x ours fp32"
            if "transformers" in median:
                line += f", {int8_rate / median['transformers']:.2f}x transformers fp32"
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
            for method in args.quantize:
                subject = model if method == "none" else quantize_for_cpu(model, method)
                for batch in args.batch_sizes:
                    prompts = torch.randint(0, config.vocab_size, (batch, args.prompt_tokens))
                    on, off = batched_rates(subject, prompts, args.new_tokens, args.rounds)
                    print(
                        f"    batch {batch} ({method}): kernels {on:,.1f} tokens/s aggregate | "
                        f"without {off:,.1f} -> {on / off:.2f}x"
                    )


def batched_rates(
    model: GPT, prompts: torch.Tensor, new_tokens: int, rounds: int
) -> tuple[float, float]:
    """Median aggregate decode tokens/s of the BatchDecoder over `prompts` (rows, T), with the
    kernels and without, alternating round by round (after one warm-up each)."""
    rates: dict[bool, list[float]] = {True: [], False: []}
    for round_index in range(rounds + 1):
        for enabled in (True, False):
            with kernels_switch(enabled):
                rate = time_batched(model, prompts, new_tokens)
            if round_index:  # round 0 warms up
                rates[enabled].append(rate)
    return statistics.median(rates[True]), statistics.median(rates[False])


if __name__ == "__main__":
    main()
