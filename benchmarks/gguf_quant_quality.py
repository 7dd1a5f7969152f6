"""Perplexity of each GGUF weight type against f32, measured through llama.cpp (llama-cpp-python).

Exports one checkpoint at f32, f16, q8_0, q5_1, q5_0, q4_1 and q4_0 with `scratchlm export gguf`'s
code, and makes llama.cpp's own Q4_0, Q4_K_M and Q6_K from the f32 file with llama-quantize's code
(`llama_cpp.llama_model_quantize`, the function the `llama-quantize` tool calls): gguf-py cannot
write K-quants, so these rows show what the documented `llama-quantize` step gives. Every file is
scored on the same held-out tokens (non-overlapping windows of the model's context, each window
scored from its second token), and our own float32 PyTorch forward pass is scored alongside as a
check of the f32 row. Nothing is written outside a temporary directory.

    .venv/bin/python benchmarks/gguf_quant_quality.py --checkpoint /work/runs/tiny-10m \\
        --text ../shared/data/tinystories_valid.txt --tokens 16384
"""

from __future__ import annotations

import argparse
import ctypes
import math
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from scratchlm.checkpoint import load_checkpoint
from scratchlm.export.gguf import export_gguf

OUR_TYPES = ("f32", "f16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0")
# llama-quantize type name -> llama_cpp ftype constant name
LLAMA_QUANTIZE_TYPES = {
    "Q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
    "Q4_K_M": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "Q6_K": "LLAMA_FTYPE_MOSTLY_Q6_K",
}


def mean_nll(logits: np.ndarray, targets: np.ndarray) -> tuple[float, int]:
    """(sum of -log p(target), count) for logits (T, V) predicting targets (T,)."""
    logits = logits.astype(np.float64)
    peak = logits.max(axis=1, keepdims=True)
    log_z = peak[:, 0] + np.log(np.exp(logits - peak).sum(axis=1))
    return float((log_z - logits[np.arange(len(targets)), targets]).sum()), len(targets)


def windows(ids: list[int], size: int) -> list[list[int]]:
    return [ids[start : start + size] for start in range(0, len(ids) - 1, size) if size > 1]


def llama_cpp_perplexity(path: Path, ids: list[int], context: int, threads: int) -> float:
    import llama_cpp

    # f32 KV cache (type 0): the cache's precision is not what this measures.
    llm = llama_cpp.Llama(
        model_path=str(path),
        n_ctx=context,
        n_batch=context,
        logits_all=True,
        n_threads=threads,
        verbose=False,
        type_k=0,
        type_v=0,
    )
    total, count = 0.0, 0
    for window in windows(ids, context):
        if len(window) < 2:
            continue
        llm.reset()
        llm.eval(window)
        scores = np.asarray(llm.scores[: len(window) - 1], dtype=np.float32)  # (T-1, V)
        nll, n = mean_nll(scores, np.asarray(window[1:]))
        total, count = total + nll, count + n
    llm.close()
    return math.exp(total / count)


@torch.inference_mode()
def our_perplexity(model: torch.nn.Module, ids: list[int], context: int) -> float:
    total, count = 0.0, 0
    for window in windows(ids, context):
        if len(window) < 2:
            continue
        logits = model(torch.tensor([window]))[0, :-1].float().numpy()  # (T-1, V)
        nll, n = mean_nll(logits, np.asarray(window[1:]))
        total, count = total + nll, count + n
    return math.exp(total / count)


def llama_quantize(source: Path, out: Path, ftype_name: str, threads: int) -> Path:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, ftype_name)
    params.nthread = threads
    status = llama_cpp.llama_model_quantize(
        str(source).encode(), str(out).encode(), ctypes.byref(params)
    )
    if status != 0:
        raise RuntimeError(f"llama_model_quantize({ftype_name}) failed with {status}")
    return out


def silence_llama_cpp() -> object:
    """Route llama.cpp's own log (model loading, llama-quantize's per-tensor lines) to nowhere;
    the returned callback must stay referenced while llama.cpp runs."""
    import llama_cpp

    @llama_cpp.llama_log_callback
    def quiet(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        return None

    llama_cpp.llama_log_set(quiet, ctypes.c_void_p())
    return quiet


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint or run directory")
    parser.add_argument("--text", default="../shared/data/tinystories_valid.txt")
    parser.add_argument("--tokens", type=int, default=16384, help="held-out tokens scored")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--verbose", action="store_true", help="keep llama.cpp's own log")
    args = parser.parse_args()
    import llama_cpp

    log_callback = None if args.verbose else silence_llama_cpp()
    loaded = load_checkpoint(args.checkpoint)
    config, model = loaded.config, loaded.model.eval()
    context = config.context_length
    text = Path(args.text).read_text(encoding="utf-8")
    # Tokenize only as much text as needed (about 4 characters a token, with room to spare).
    ids = loaded.tokenizer.encode(text[: args.tokens * 8])[: args.tokens]
    if len(ids) < args.tokens:
        raise SystemExit(f"{args.text} has only {len(ids)} tokens; lower --tokens")

    work = Path(tempfile.mkdtemp(prefix="scratchlm-quant-"))
    try:
        files: dict[str, Path] = {}
        for dtype in OUR_TYPES:
            files[dtype] = export_gguf(args.checkpoint, work / f"{dtype}.gguf", dtype=dtype)
        for name, ftype_name in LLAMA_QUANTIZE_TYPES.items():
            files[f"{name} (llama-quantize)"] = llama_quantize(
                files["f32"], work / f"lq-{name}.gguf", ftype_name, args.threads
            )
        started = time.perf_counter()
        reference = our_perplexity(model, ids, context)
        results = {
            name: llama_cpp_perplexity(path, ids, context, args.threads)
            for name, path in files.items()
        }
        elapsed = time.perf_counter() - started
        parameters = sum(p.numel() for p in model.parameters())
        print(
            f"{config.name}: {parameters / 1e6:.2f}M parameters, context {context}, "
            f"{len(ids)} tokens of {Path(args.text).name}; llama-cpp-python "
            f"{llama_cpp.__version__}; {platform.processor() or platform.machine()}, "
            f"{args.threads} threads, {elapsed:.0f}s"
        )
        print(f"ours (PyTorch float32): perplexity {reference:.4f}")
        print(f"| {'type':<24} | {'size (MB)':>9} | {'perplexity':>10} | {'ratio to f32':>12} |")
        print(f"|{'-' * 26}|{'-' * 10}:|{'-' * 11}:|{'-' * 13}:|")
        for name, value in results.items():
            size = files[name].stat().st_size / 1e6
            ratio = value / results["f32"]
            print(f"| {name:<24} | {size:>9.2f} | {value:>10.4f} | {ratio:>12.4f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    del log_callback


if __name__ == "__main__":
    main()
