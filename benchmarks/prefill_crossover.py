"""Where the kernel's many-token prefill beats PyTorch's forward, per precision and prompt length:
`Decoder.prefill` with the kernel forced for every length against the model's forward (the path
past `decode.KERNEL_PREFILL_MAX_TOKENS`), the same random-weight checkpoint. The ratio chooses
`KERNEL_PREFILL_MAX_TOKENS` (docs/benchmarks.md, "Prefill: where the kernel wins").

Each measurement (precision, length, kernel or PyTorch) runs in a fresh process, kernel and
PyTorch alternating, best of `--rounds` prefills each: in one process PyTorch's forward measured
up to 40% slower after the kernel had run (its helper threads and caches), which made an early
version of this script favour the kernel.

    .venv/bin/python benchmarks/prefill_crossover.py --preset llama-42m --threads 2 \\
        --lengths 16 32 64 128 256 512 --quantize none q8 q4 bf16
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from decode_vs_llamacpp import benchmark_checkpoint
from scratchlm.inference import decode
from scratchlm.inference.load import load_for_inference
from scratchlm.kv_cache import KVCache


def prefill_seconds(model: torch.nn.Module, tokens: list[int], kernel: bool, rounds: int) -> float:
    """Best time of `rounds` prefills of `tokens` from an empty cache."""
    saved = decode.KERNEL_PREFILL_MAX_TOKENS
    decode.KERNEL_PREFILL_MAX_TOKENS = {name: 10**9 if kernel else 0 for name in saved}
    try:
        best = float("inf")
        for _ in range(rounds):
            decoder = decode.Decoder(model, KVCache.for_model(model.config, 1))  # type: ignore[arg-type]
            started = time.perf_counter()
            decoder.prefill(tokens)
            best = min(best, time.perf_counter() - started)
        return best
    finally:
        decode.KERNEL_PREFILL_MAX_TOKENS = saved


def measure_one(checkpoint: str, quantize: str, length: int, kernel: bool, rounds: int) -> float:
    """Prefill tokens/s of one side, in this process (the child's job)."""
    model = load_for_inference(checkpoint, "cpu", quantize, verify=False)[0].model
    vocab = model.config.vocab_size
    tokens = [10 + (7 * i) % (vocab - 10) for i in range(length)]
    return length / prefill_seconds(model, tokens, kernel, rounds)


def measure_in_child(
    checkpoint: Path, quantize: str, length: int, kernel: bool, args: argparse.Namespace
) -> float:
    command = [sys.executable, __file__, "--child", str(checkpoint), quantize, str(length)]
    command += ["kernel" if kernel else "torch", "--threads", str(args.threads)]
    command += ["--rounds", str(args.rounds)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return float(output.split()[-1])


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
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512])
    parser.add_argument("--quantize", nargs="+", default=["none", "q8", "q4", "bf16"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        checkpoint, quantize, length, side = args.child
        print(measure_one(checkpoint, quantize, int(length), side == "kernel", args.rounds))
        return
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory() as work:
        checkpoint, name = benchmark_checkpoint(Path(work), None, args.preset, args.vocab_size)
        print(f"{name}, {args.threads} threads, {started}, each side in its own process, best of")
        print(f"{args.rounds}; tokens/s kernel / PyTorch")
        print(f"{'tokens':>7} " + " ".join(f"{q:>22}" for q in args.quantize))
        for length in args.lengths:
            cells = []
            for quantize in args.quantize:
                kernel = measure_in_child(checkpoint, quantize, length, True, args)
                torch_speed = measure_in_child(checkpoint, quantize, length, False, args)
                cells.append(f"{kernel:6.0f} / {torch_speed:6.0f} {kernel / torch_speed:5.2f}x")
            print(f"{length:>7} " + " ".join(f"{cell:>22}" for cell in cells), flush=True)


if __name__ == "__main__":
    main()
