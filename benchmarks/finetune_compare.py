"""Full fine-tuning vs LoRA on the same base model and instruction set: held-out assistant-token
loss before and after, wall time, peak memory (each mode in its own process, so peak RSS is its own).

    .venv/bin/python benchmarks/finetune_compare.py --base runs/tinystories --steps 300
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def run_one(mode: str, base: str, data: str, steps: int, out: str) -> None:
    """Child process: fine-tune once, print one JSON line with the numbers."""
    from scratchlm.checkpoint import load_checkpoint
    from scratchlm.evaluation.perplexity import evaluate_batches
    from scratchlm.finetune import datasets
    from scratchlm.finetune.lora import LoRASettings
    from scratchlm.finetune.trainer import finetune
    from scratchlm.training.run_config import TrainConfig

    loaded = load_checkpoint(base)
    examples, cut = datasets.tokenize_conversations(
        datasets.read_conversations(data), loaded.tokenizer, loaded.config.context_length
    )
    _, val = datasets.split_examples(examples, 0.1, seed=0)
    before = evaluate_batches(
        loaded.model,
        datasets.eval_batches(val, 16, loaded.tokenizer.pad_id),
        device=torch.device("cpu"),
    ).loss
    lora = (
        LoRASettings(
            rank=8,
            alpha=16,
            targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        )
        if mode == "lora"
        else None
    )
    config = TrainConfig(
        data=data,
        out=out,
        max_steps=steps,
        batch_size=16,
        eval_every=steps,
        save_every=steps,
        sample_tokens=0,
        quiet=True,
        seed=0,
        val_fraction=0.1,
    )
    started = time.perf_counter()
    result = finetune(config, base=base, lora=lora, log=lambda message: None)
    print(
        json.dumps(
            {
                "mode": mode,
                "before": before,
                "after": result.best_val_loss,
                "seconds": time.perf_counter() - started,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "examples": len(examples),
                "cut": cut,
                "steps": result.steps,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", required=True)
    parser.add_argument("--data", default=str(SHARED / "sft_rasbt_instructions.jsonl"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--mode", choices=["full", "lora"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        run_one(args.mode, args.base, args.data, args.steps, args.out)
        return
    rows = []
    for mode in ("full", "lora"):
        out = tempfile.mkdtemp(prefix=f"scratchlm-ft-{mode}-")
        completed = subprocess.run(
            [
                sys.executable,
                __file__,
                "--base",
                args.base,
                "--data",
                args.data,
                "--steps",
                str(args.steps),
                "--mode",
                mode,
                "--out",
                out,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(completed.stdout.strip().splitlines()[-1]))
    print(
        f"{rows[0]['examples']} examples ({rows[0]['cut']} cut to the context), {args.steps} steps of 16, 10% held out"
    )
    for row in rows:
        print(
            f"{row['mode']:>4}: held-out assistant loss {row['before']:.3f} -> {row['after']:.3f}, "
            f"{row['seconds']:.0f}s, peak RSS {row['peak_rss_mib']:.0f} MiB"
        )


if __name__ == "__main__":
    main()
