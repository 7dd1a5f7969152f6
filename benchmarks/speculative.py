"""Speculative decoding speed-up with a trained target and a smaller trained draft (same tokenizer).

Prompts are the openings of TinyStories validation stories. For each prompt the target decodes
--new-tokens tokens plainly and speculatively (alternating, same seed); the script prints tokens/s of
both, the ratio, and the draft acceptance rate, for greedy and for sampling.

    .venv/bin/python benchmarks/speculative.py --target runs/ts-small --draft runs/ts-tiny --draft-tokens 4
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from scratchlm.checkpoint import load_checkpoint
from scratchlm.inference.engine import Engine
from scratchlm.inference.settings import GREEDY, SamplingSettings
from scratchlm.inference.speculative import SpeculativeStats, speculative_generate

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", required=True)
    parser.add_argument("--draft", required=True)
    parser.add_argument("--draft-tokens", type=int, nargs="+", default=[2, 4, 6])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompts", type=int, default=6)
    args = parser.parse_args()
    target, draft = load_checkpoint(args.target), load_checkpoint(args.draft)
    assert target.tokenizer.fingerprint() == draft.tokenizer.fingerprint(), (
        "the draft must share the tokenizer"
    )
    stories = (SHARED / "tinystories_valid.txt").read_text().split("<|endoftext|>")
    prompts = [" ".join(story.split()[:8]) for story in stories if story.strip()][: args.prompts]
    tokenizer = target.tokenizer
    print(
        f"target {sum(p.numel() for p in target.model.parameters()):,} params, draft "
        f"{sum(p.numel() for p in draft.model.parameters()):,} params; {len(prompts)} prompts x {args.new_tokens} tokens"
    )
    for name, settings in [
        ("greedy", GREEDY),
        ("sampling T=0.8", SamplingSettings(temperature=0.8, top_k=None)),
    ]:
        for draft_tokens in args.draft_tokens:
            plain_rates, fast_rates, stats = [], [], SpeculativeStats()
            for seed, prompt in enumerate(prompts):
                ids = tokenizer.encode(prompt)
                started = time.perf_counter()
                count = sum(
                    1
                    for _ in Engine(target.model).generate(
                        ids, max_new_tokens=args.new_tokens, sampling=settings, seed=seed
                    )
                )
                plain_rates.append(count / (time.perf_counter() - started))
                started = time.perf_counter()
                with torch.inference_mode():
                    count = sum(
                        1
                        for _ in speculative_generate(
                            target.model,
                            draft.model,
                            ids,
                            max_new_tokens=args.new_tokens,
                            sampling=settings,
                            draft_tokens=draft_tokens,
                            seed=seed,
                            stats=stats,
                        )
                    )
                fast_rates.append(count / (time.perf_counter() - started))
            plain, fast = statistics.median(plain_rates), statistics.median(fast_rates)
            print(
                f"{name}, k={draft_tokens}: plain {plain:,.1f} tokens/s, speculative {fast:,.1f} tokens/s -> "
                f"{fast / plain:.2f}x; acceptance {stats.acceptance_rate:.0%} ({stats.accepted}/{stats.drafted})"
            )


if __name__ == "__main__":
    main()
