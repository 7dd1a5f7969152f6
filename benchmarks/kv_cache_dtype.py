"""An fp32 against an fp16 KV cache in the decode kernel, side by side in one process: one
many-row kernel call (`FastDecoder.forward`, a continuous-batching step of `--rows` rows) at each
position, both caches alternated, best of `--repeats` after a warm-up call, and the ratio.

At many rows and long positions attention reads more bytes from the cache than the step reads
weights, so halving the cache's bytes shows there (docs/benchmarks.md, "An fp16 KV cache").

    .venv/bin/python benchmarks/kv_cache_dtype.py --preset llama-42m --quantize q4 --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch

from scratchlm.config import preset_config
from scratchlm.inference.kernels.decoder import fast_decoder
from scratchlm.inference.quantize import quantize_for_cpu
from scratchlm.kv_cache import KV_CACHE_TYPES, KVCache
from scratchlm.model import build_model


def step_seconds(
    model: torch.nn.Module, dtype: torch.dtype, rows: int, position: int, repeats: int
) -> list[float]:
    """Times of one kernel call of `rows` rows at `position` (the first, a warm-up, dropped)."""
    cache = KVCache.for_model(model.config, rows, position + 8, dtype=dtype)  # type: ignore[arg-type]
    decoder = fast_decoder(model, cache, batch=True)
    if decoder is None:
        raise SystemExit("the decode kernels are unavailable here (see scratchlm bench)")
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        decoder.forward([1] * rows, list(range(rows)), [position] * rows)
        times.append(time.perf_counter() - started)
    return times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="llama-42m", help="random weights of this preset")
    parser.add_argument("--quantize", default="q4", choices=["none", "q8", "q4", "bf16"])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--positions", type=int, nargs="+", default=[64, 256, 768])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="each cache this many times")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(preset_config(args.preset, vocab_size=4000)).eval()
    model = quantize_for_cpu(model, args.quantize)
    print(f"{args.preset} {args.quantize}, {args.rows} rows per call, {args.threads} threads")
    print("| position | fp32 cache | fp16 cache | fp32 / fp16 |")
    print("| ---: | ---: | ---: | ---: |")
    for position in args.positions:
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            for name in ("fp32", "fp16"):
                measured = min(
                    step_seconds(model, KV_CACHE_TYPES[name], args.rows, position, args.repeats)
                )
                best[name] = min(best.get(name, float("inf")), measured)
        print(
            f"| {position} | {best['fp32'] * 1e3:.1f} ms | {best['fp16'] * 1e3:.1f} ms | "
            f"{best['fp32'] / best['fp16']:.2f}x |"
        )


if __name__ == "__main__":
    main()
