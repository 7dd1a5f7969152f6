"""Decode tokens/s at batch 1 on the same weights, side by side in one run, per precision: ours
(`--quantize none|q8|q4|bf16`, the fused CPU kernels) against llama.cpp (llama-cpp-python on the
f32 / q8_0 / q4_0 / bf16 GGUF that scratchlm's exporter writes from the same checkpoint), with the
ratio and each one's fraction of the bandwidth floor (bytes of weights read per token over the
memory read bandwidth measured in the same run). Then prefill tokens/s of the same pairs: a prompt
of `--prefill-tokens` tokens processed from an empty cache in one forward (ours: the Decoder's
prefill that Engine.generate runs: the kernels for short prompts, the model's forward past
decode.KERNEL_PREFILL_MAX_TOKENS;
llama.cpp: `Llama.reset()` then `Llama.eval`, one batch), with each one's GFLOP/s and its fraction
of the machine's fp32 compute ceiling (the best fp32 matmul FLOP/s at the same thread count,
measured in the same run, as training's MFU measures it: `measure_cpu_peak_flops`): a long
prefill is bound by multiply-adds, not by bytes.

    .venv/bin/python benchmarks/decode_vs_llamacpp.py --preset llama-42m --new-tokens 64 --rounds 3
    .venv/bin/python benchmarks/decode_vs_llamacpp.py --checkpoint RUN_OR_CHECKPOINT_DIR
    .venv/bin/python benchmarks/decode_vs_llamacpp.py --int8   # also the retired fbgemm int8 path

`--preset` uses random weights (speed does not depend on them); `--checkpoint` a trained model
(copied to a temporary directory first: the quantized files are written beside the copy).
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import random
import shutil
import statistics
import string
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from scratchlm.checkpoint import resolve_checkpoint, save_checkpoint
from scratchlm.config import preset_config
from scratchlm.export.gguf import export_gguf
from scratchlm.inference.decode import Decoder
from scratchlm.inference.engine import Engine
from scratchlm.inference.load import load_for_inference
from scratchlm.inference.settings import GREEDY
from scratchlm.kv_cache import KVCache
from scratchlm.model import GPT, build_model
from scratchlm.tokenizer import Tokenizer, train_bpe
from scratchlm.training.hardware import measure_cpu_peak_flops

# ours --quantize -> the GGUF type llama.cpp decodes; bytes per weight of each format
PAIRS = {"none": "f32", "q8": "q8_0", "q4": "q4_0", "bf16": "bf16"}
BYTES_PER_WEIGHT = {"none": 4.0, "q8": 34 / 32, "q4": 18 / 32, "bf16": 2.0, "int8": 1.0}


def read_bandwidth(threads: int) -> float:
    """GB/s of a plain streaming read (a sum over 256 MB, far past the caches), best of 5."""
    torch.set_num_threads(threads)
    data = torch.ones(64 * 1024 * 1024, dtype=torch.float32)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        float(data.sum())
        best = min(best, time.perf_counter() - started)
    return data.numel() * 4 / best / 1e9


def prefill_flops(model: GPT, tokens: int) -> float:
    """Multiply-adds (x2) of a `tokens`-token prefill from an empty cache: every block's linear
    layers for every token, the attention over the causal triangle (scores and weighted sum), and
    the output layer for the last token only (what both engines compute)."""
    config = model.config
    assert config.head_dim is not None  # resolved by ModelConfig
    block_weights = linear_weights(model) - model.lm_head.weight.numel()
    attention_width = config.n_head * config.head_dim
    attended = tokens * (tokens + 1) // 2  # key positions summed over the queries
    attention = 2 * 2 * config.n_layer * attention_width * attended
    return 2.0 * block_weights * tokens + attention + 2.0 * model.lm_head.weight.numel()


def linear_weights(model: GPT) -> int:
    """Weights of the matrices a decode step reads in full: every linear layer (lm_head included,
    also when tied)."""
    total = model.lm_head.weight.numel()
    for block in model.blocks:
        for module in block.modules():
            if isinstance(module, torch.nn.Linear):
                total += module.weight.numel()
    return total


def random_tokenizer(vocab_size: int) -> Tokenizer:
    """A byte-level BPE of exactly `vocab_size` tokens, trained in ~2 s on random words (60,000
    distinct ones: enough pairs to merge up to 32k-50k tokens)."""
    rng = random.Random(0)
    words = [
        "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 9)))
        for _ in range(60_000)
    ]
    texts = [" ".join(rng.choice(words) for _ in range(2_000)) for _ in range(300)]
    tokenizer = train_bpe(texts, vocab_size)
    assert tokenizer.vocab_size == vocab_size, (tokenizer.vocab_size, vocab_size)
    return tokenizer


def benchmark_checkpoint(
    work: Path, given: str | None, preset: str, vocab_size: int | None = None
) -> tuple[Path, str]:
    """A copy of the checkpoint `given` (a run or checkpoint directory) in `work`, or a `preset`
    with random weights (speed does not depend on the weights) and a tokenizer of `vocab_size`
    tokens (default: the preset's own, so that the output layer and the sampler cost what they
    cost in a real model of that shape), and its name for the report."""
    if given:
        source = resolve_checkpoint(given)
        checkpoint = work / "ckpt"
        shutil.copytree(source, checkpoint)
        return checkpoint, f"{source} (trained)"
    vocab_size = vocab_size or preset_config(preset).vocab_size
    tokenizer = random_tokenizer(vocab_size)
    torch.manual_seed(0)
    config = preset_config(preset, vocab_size=tokenizer.vocab_size)
    return save_checkpoint(work / "ckpt", build_model(config).eval(), tokenizer), (
        f"{preset} (random weights, vocabulary {vocab_size})"
    )


# A pause before each timed run: both sides' worker threads spin for a while after their last
# job (ours ~200 us, llama.cpp's ggml pool longer), and without it one side's spinning threads
# took cores from the other. llama.cpp's 256-token bf16 prefill measured 2,140 tokens/s right
# after our kernel's prefill and 3,000 after PyTorch's (2026-12-03).
SETTLE_S = 0.3


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="llama-42m")
    parser.add_argument(
        "--vocab-size",
        type=int,
        help="random weights: the tokenizer's size (default: the preset's own)",
    )
    parser.add_argument("--checkpoint", help="a trained checkpoint (or run directory) instead")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument(
        "--prefill-tokens", type=int, default=256, help="prompt length of the prefill table"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--precisions", default="none,q8,q4,bf16", help="ours, comma-separated (paired as PAIRS)"
    )
    parser.add_argument("--int8", action="store_true", help="also the fbgemm int8 path (retired)")
    args = parser.parse_args()
    import llama_cpp

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="scratchlm-bench-"))
    checkpoint, name = benchmark_checkpoint(work, args.checkpoint, args.preset, args.vocab_size)
    precisions = args.precisions.split(",")
    ours = {
        method: load_for_inference(str(checkpoint), "cpu", method, verify=False)[0].model.eval()
        for method in precisions
    }
    reference = ours.get("none") or load_for_inference(str(checkpoint), "cpu")[0].model.eval()
    context = reference.config.context_length
    if not 1 <= args.prefill_tokens <= context:
        parser.error(f"--prefill-tokens must be between 1 and the context ({context})")
    # The prefill must fit llama.cpp's context and run as one batch (n_batch, n_ubatch >= N);
    # for N <= 512 these are llama-cpp-python's defaults, so the decode runs as before.
    n_ctx = min(max(512, args.prefill_tokens), context)
    llamas = {}
    for method in precisions:
        path = export_gguf(
            str(checkpoint), work / f"model-{PAIRS[method]}.gguf", dtype=PAIRS[method]
        )
        llamas[method] = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_batch=n_ctx,
            n_ubatch=n_ctx,
            n_threads=args.threads,
            verbose=False,
        )
    contenders: dict[str, tuple[str, Callable[[], float]]] = {}
    torch.manual_seed(1)
    prompt = torch.randint(8, reference.config.vocab_size, (args.prompt_tokens,)).tolist()

    def rate_ours(model: GPT) -> float:
        started = time.perf_counter()
        tokens = Engine(model).generate(prompt, max_new_tokens=args.new_tokens, sampling=GREEDY)
        count = len(list(tokens))
        return count / (time.perf_counter() - started)

    def rate_llamacpp(llm: llama_cpp.Llama) -> float:
        llm.reset()
        started = time.perf_counter()
        count = 0
        for _ in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
            count += 1
            if count == args.new_tokens:
                break
        return count / (time.perf_counter() - started)

    for method in precisions:
        contenders[f"ours {method}"] = (method, functools.partial(rate_ours, ours[method]))
        contenders[f"llama.cpp {PAIRS[method]}"] = (
            method,
            functools.partial(rate_llamacpp, llamas[method]),
        )
    if args.int8:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao's deprecation notice
            int8 = torch.ao.quantization.quantize_dynamic(
                copy.deepcopy(reference), {torch.nn.Linear}, dtype=torch.qint8
            )
        contenders["ours int8 (fbgemm)"] = ("int8", lambda: rate_ours(int8))

    bandwidth_before = read_bandwidth(args.threads)
    for _, run in contenders.values():
        run()  # warm-up
    rates: dict[str, list[float]] = {label: [] for label in contenders}
    for _ in range(args.rounds):
        for label, (_, run) in contenders.items():
            time.sleep(SETTLE_S)
            rates[label].append(run())
    bandwidth = max(bandwidth_before, read_bandwidth(args.threads))
    medians = {label: statistics.median(values) for label, values in rates.items()}
    weights = linear_weights(reference)
    print(
        f"{name}: {weights / 1e6:.1f}M weights in linear layers; prompt {args.prompt_tokens}, "
        f"{args.new_tokens} new tokens, {args.threads} threads, median of {args.rounds}; "
        f"read bandwidth {bandwidth:.1f} GB/s (cpu count {os.cpu_count()}, load "
        f"{os.getloadavg()[0]:.2f})"
    )
    print(f"  {'':>22}  {'tokens/s':>9}  {'vs llama.cpp':>12}  {'of floor':>8}")
    for label, (method, _) in contenders.items():
        value = medians[label]
        floor = bandwidth * 1e9 / (weights * BYTES_PER_WEIGHT[method])  # tokens/s
        peer = f"llama.cpp {PAIRS.get(method, 'q8_0')}"
        ratio = f"{value / medians[peer]:.2f}x" if peer in medians and label != peer else ""
        print(f"  {label:>22}  {value:9.1f}  {ratio:>12}  {value / floor:8.0%}")

    prefill_prompt = torch.randint(8, reference.config.vocab_size, (args.prefill_tokens,)).tolist()

    @torch.inference_mode()
    def prefill_ours(model: GPT) -> float:
        # The cache Engine.generate would allocate, outside the timing (llama.cpp's is allocated
        # once, at load); then the same Decoder.prefill it runs on the prompt.
        dtype = model.token_embedding.weight.dtype
        cache = KVCache.for_model(model.config, 1, args.prefill_tokens, dtype=dtype)
        decoder = Decoder(model, cache)
        started = time.perf_counter()
        decoder.prefill(prefill_prompt)  # logits (1, vocab) of the token after the prompt
        return args.prefill_tokens / (time.perf_counter() - started)

    def prefill_llamacpp(llm: llama_cpp.Llama) -> float:
        llm.reset()  # n_tokens = 0: eval drops the cache from position 0 on
        started = time.perf_counter()
        llm.eval(prefill_prompt)
        llama_cpp.llama_synchronize(llm.ctx)  # the CPU backend is synchronous; to be sure
        return args.prefill_tokens / (time.perf_counter() - started)

    prefills: dict[str, Callable[[], float]] = {}
    for method in precisions:
        prefills[f"ours {method}"] = functools.partial(prefill_ours, ours[method])
        prefills[f"llama.cpp {PAIRS[method]}"] = functools.partial(prefill_llamacpp, llamas[method])
    for run in prefills.values():
        run()  # warm-up
    prefill_rates: dict[str, list[float]] = {label: [] for label in prefills}
    for _ in range(args.rounds):
        for label, run in prefills.items():
            time.sleep(SETTLE_S)
            prefill_rates[label].append(run())
    prefill_medians = {label: statistics.median(values) for label, values in prefill_rates.items()}
    ceiling = measure_cpu_peak_flops(torch.float32) / 1e9  # at args.threads (set above)
    flops_per_token = prefill_flops(reference, args.prefill_tokens) / args.prefill_tokens
    print(
        f"prefill of {args.prefill_tokens} tokens from an empty cache, {args.threads} threads, "
        f"median of {args.rounds} (load {os.getloadavg()[0]:.2f}); "
        f"{flops_per_token / 1e6:.1f} MFLOP per token; fp32 GEMM ceiling {ceiling:.1f} GFLOP/s"
    )
    print(
        f"  {'ours':>10}  {'tokens/s':>9}  {'of fp32':>7}  {'llama.cpp':>10}  {'tokens/s':>9}  "
        f"{'of fp32':>7}  {'ratio':>6}"
    )
    for method in precisions:
        mine = prefill_medians[f"ours {method}"]
        theirs = prefill_medians[f"llama.cpp {PAIRS[method]}"]
        # GFLOP/s over the ceiling: above 100% is possible where integer or bf16 dot products
        # do more multiply-adds per instruction than fp32 FMAs.
        mine_share = mine * flops_per_token / 1e9 / ceiling
        theirs_share = theirs * flops_per_token / 1e9 / ceiling
        print(
            f"  {method:>10}  {mine:9.1f}  {mine_share:7.0%}  {PAIRS[method]:>10}  "
            f"{theirs:9.1f}  {theirs_share:7.0%}  {mine / theirs:5.2f}x"
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
