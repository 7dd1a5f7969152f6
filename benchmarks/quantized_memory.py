"""Memory of a quantized model, and the speed of the paths that read its weights through PyTorch:
the model holding only its packed linear layers (`PackedWeight`, the default) against the same
model also holding an fp32 copy of the dequantized weights (what every quantized model held
before; `attach(keep_fp32=True)`, still used when the kernels cannot run).

Each (precision, mode) runs in a fresh process on the same random-weight checkpoint (its packed
file written once beforehand, as a second start would find it): resident memory (less the interpreter's
with torch imported) after loading and after using the model, then tokens/s of a batch-1 decode and a 600-token prefill (the kernel, either
mode; fp32's prefill is PyTorch's past 256 tokens) and a scoring forward (PyTorch on the weights,
dequantized per op in the default mode). Printed side by side with the ratios.

    .venv/bin/python benchmarks/quantized_memory.py --preset llama-120m --threads 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from decode_vs_llamacpp import benchmark_checkpoint
from scratchlm.inference import quantize as quantize_module
from scratchlm.inference.decode import Decoder
from scratchlm.inference.load import load_for_inference
from scratchlm.kv_cache import KVCache


def resident_mib() -> float:
    """This process's resident set (VmRSS), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(checkpoint: str, quantize: str, keep_fp32: bool, threads: int) -> dict[str, float]:
    torch.set_num_threads(threads)
    if keep_fp32:
        quantize_module.kernels_available = lambda: False  # type: ignore[assignment]
    started_mib = resident_mib()
    loaded, _ = load_for_inference(checkpoint, "cpu", quantize)
    model = loaded.model
    after_load = resident_mib()
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(0)
    # the model's own memory: resident after loading, less the interpreter with torch imported
    result: dict[str, float] = {"loaded_mib": after_load - started_mib}
    with torch.inference_mode():
        decoder = Decoder(model, KVCache.for_model(model.config, 1))  # type: ignore[arg-type]
        decoder.prefill(torch.randint(0, vocab, (16,), generator=generator).tolist())
        token, steps = 1, 64
        started = time.perf_counter()
        for _ in range(steps):
            token = int(decoder.step(token).argmax())
        result["decode_tok_s"] = steps / (time.perf_counter() - started)
        long_prompt = 600
        tokens = torch.randint(0, vocab, (long_prompt,), generator=generator).tolist()
        decoder = Decoder(model, KVCache.for_model(model.config, 1))  # type: ignore[arg-type]
        started = time.perf_counter()
        decoder.prefill(tokens)
        result["long_prefill_tok_s"] = long_prompt / (time.perf_counter() - started)
        batch = torch.randint(0, vocab, (4, 256), generator=generator)
        started = time.perf_counter()
        model(batch)
        result["scoring_tok_s"] = batch.numel() / (time.perf_counter() - started)
    result["final_mib"] = resident_mib() - started_mib
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="llama-120m")
    parser.add_argument(
        "--vocab-size",
        type=int,
        help="random weights: the tokenizer's size (default: the preset's own)",
    )
    parser.add_argument("--checkpoint", help="a trained checkpoint instead of random weights")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quantize", nargs="+", default=["q8", "q4", "bf16"])
    parser.add_argument("--child", nargs=3, metavar=("CHECKPOINT", "QUANTIZE", "KEEP_FP32"))
    args = parser.parse_args()
    if args.child:
        checkpoint, quantize, keep = args.child
        print(json.dumps(measure(checkpoint, quantize, keep == "1", args.threads)))
        return
    with tempfile.TemporaryDirectory() as work:
        checkpoint, name = benchmark_checkpoint(
            Path(work), args.checkpoint, args.preset, args.vocab_size
        )
        for quantize in args.quantize:  # write each packed file once (a later start reads it)
            load_for_inference(str(checkpoint), "cpu", quantize)

        def child(quantize: str, keep_fp32: bool) -> dict[str, float]:
            command = [sys.executable, __file__, "--threads", str(args.threads), "--child"]
            command += [str(checkpoint), quantize, "1" if keep_fp32 else "0"]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            return dict(json.loads(output.strip().splitlines()[-1]))

        fp32 = child("none", False)
        print(f"{name}, {args.threads} threads")
        header = "| mode | model MiB after load | after use | decode tok/s | "
        header += "long prefill tok/s | scoring tok/s |"
        print(header)
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        row = "| {} | {loaded_mib:.0f} | {final_mib:.0f} | {decode_tok_s:.1f} | "
        row += "{long_prefill_tok_s:.0f} | {scoring_tok_s:.0f} |"
        print(row.format("fp32", **fp32))
        for quantize in args.quantize:
            with_copy = child(quantize, True)
            packed_only = child(quantize, False)
            print(row.format(f"{quantize} + fp32 copy (before)", **with_copy))
            print(row.format(f"{quantize} packed only", **packed_only))
            ratios = {key: packed_only[key] / with_copy[key] for key in packed_only}
            print(
                f"| {quantize} packed / before | {ratios['loaded_mib']:.2f}x | "
                f"{ratios['final_mib']:.2f}x | {ratios['decode_tok_s']:.2f}x | "
                f"{ratios['long_prefill_tok_s']:.2f}x | {ratios['scoring_tok_s']:.2f}x |"
            )


if __name__ == "__main__":
    main()
