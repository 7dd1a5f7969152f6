"""Decode tokens/s at batch 1 on the same Llama weights, side by side in one run: ours (fp32 and the
int8 CPU path) vs llama.cpp (f32 and q8_0 GGUF exported by scratchlm) vs transformers generate().

    .venv/bin/python benchmarks/decode_vs_llamacpp.py --preset llama-42m --new-tokens 64 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from scratchlm.checkpoint import save_checkpoint
from scratchlm.config import preset_config
from scratchlm.export.gguf import export_gguf
from scratchlm.export.hf import to_transformers_llama
from scratchlm.inference.engine import Engine
from scratchlm.inference.quantize import quantize_for_cpu
from scratchlm.inference.settings import GREEDY
from scratchlm.model import build_model
from scratchlm.tokenizer import train_bpe


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="llama-42m")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import llama_cpp

    tokenizer = train_bpe(["Once upon a time there was a little cat. " * 200], 4000)
    torch.manual_seed(0)
    model = build_model(preset_config(args.preset, vocab_size=tokenizer.vocab_size)).eval()
    work = Path(tempfile.mkdtemp(prefix="scratchlm-bench-"))
    checkpoint = save_checkpoint(work / "ckpt", model, tokenizer)
    ggufs = {
        dtype: export_gguf(str(checkpoint), work / f"model-{dtype}.gguf", dtype=dtype)
        for dtype in ("f32", "q8_0")
    }
    threads = torch.get_num_threads()
    llamas = {
        dtype: llama_cpp.Llama(model_path=str(path), n_ctx=512, n_threads=threads, verbose=False)
        for dtype, path in ggufs.items()
    }
    hf_model = to_transformers_llama(model)
    int8 = quantize_for_cpu(model, "int8")
    prompt = torch.randint(8, tokenizer.vocab_size, (args.prompt_tokens,)).tolist()

    def ours(m: torch.nn.Module) -> float:
        started = time.perf_counter()
        count = sum(
            1 for _ in Engine(m).generate(prompt, max_new_tokens=args.new_tokens, sampling=GREEDY)
        )  # type: ignore[arg-type]
        return count / (time.perf_counter() - started)

    def llamacpp(llm: llama_cpp.Llama) -> float:
        llm.reset()
        started = time.perf_counter()
        count = 0
        for _ in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
            count += 1
            if count == args.new_tokens:
                break
        return count / (time.perf_counter() - started)

    @torch.inference_mode()
    def transformers_rate() -> float:
        started = time.perf_counter()
        output = hf_model.generate(
            torch.tensor([prompt]),
            max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
        return (output.shape[1] - len(prompt)) / (time.perf_counter() - started)

    contenders = {
        "ours fp32": lambda: ours(model),
        "ours int8": lambda: ours(int8),
        "llama.cpp f32": lambda: llamacpp(llamas["f32"]),
        "llama.cpp q8_0": lambda: llamacpp(llamas["q8_0"]),
        "transformers fp32": transformers_rate,
    }
    for run in contenders.values():
        run()  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, run in contenders.items():
            rates[name].append(run())
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(
        f"{args.preset} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params), prompt {args.prompt_tokens}, "
        f"{args.new_tokens} new tokens, {threads} threads, median of {args.rounds} (cpu count {os.cpu_count()})"
    )
    for name, value in medians.items():
        print(
            f"  {name:>18}: {value:8.1f} tokens/s  = {value / medians['llama.cpp f32']:.2f}x llama.cpp f32"
        )


if __name__ == "__main__":
    main()
