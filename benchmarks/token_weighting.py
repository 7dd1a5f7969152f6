"""Rare-token loss re-weighting: what it buys on rare tokens and what it costs overall.

Trains the same model (same init, same batches, same schedule) once per power a in --powers with
the training loss weighted by w_t ∝ (count_t + 1)^-a (a = 0: plain cross-entropy), then
evaluates every run on the same validation tokens, UNWEIGHTED:
  - val loss over all tokens (the model's real likelihood; what perplexity reports);
  - val loss on rare tokens: targets whose type is in the less frequent half of the token types
    that occur in the training split (ranked by training count);
  - val loss on frequent tokens: targets among the most frequent types that together make up
    half of the training tokens;
  - how often the model's top-1 prediction is a rare type, against how often the data has one
    (re-weighting shifts probability mass toward rare tokens);
  - for weighted runs, the val loss after undoing the tilt: the weighted loss's optimum is
    q_t ∝ w_t * p_t, not p_t, so logits - log w_t (logit adjustment) estimate p again.
A minimal loop over the library's parts (data shards, loader, model, AdamW, schedule, the
weighted loss), so it does not depend on trainer flags.

    .venv/bin/python benchmarks/token_weighting.py                     # TinyStories, a = 0, 0.5
    .venv/bin/python benchmarks/token_weighting.py --powers 0,0.5,1 --steps 150
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from scratchlm.config import preset_config
from scratchlm.data import TokenShards, TokenWindowLoader, iter_eval_batches, prepare_cached
from scratchlm.data.sources import sample_text
from scratchlm.model import build_model
from scratchlm.tokenizer import train_bpe
from scratchlm.training.optim import build_optimizer, learning_rate_at
from scratchlm.training.token_weights import (
    cached_token_counts,
    inverse_frequency_weights,
    weighted_cross_entropy,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def prepare(args: argparse.Namespace, cache: Path) -> Path:
    texts = list(sample_text(args.data, max_chars=3_000_000, progress=False))
    tokenizer = train_bpe(texts, args.vocab_size)
    return prepare_cached(
        args.data, tokenizer, cache_root=cache, val_source=args.val_data, progress=False
    )


def train_once(
    data_dir: Path, power: float, counts: np.ndarray, args: argparse.Namespace
) -> tuple[torch.nn.Module, torch.Tensor | None]:
    train_shards = TokenShards.open(data_dir, "train")
    config = preset_config(
        "tiny", vocab_size=train_shards.vocab_size, context_length=args.context_length
    )
    assert config.padded_vocab_size is not None
    weights = (
        inverse_frequency_weights(counts, config.padded_vocab_size, power) if power > 0 else None
    )
    torch.manual_seed(args.seed)
    model = build_model(config)
    model.train()
    optimizer = build_optimizer(
        model,
        learning_rate=args.lr,
        weight_decay=0.1,
        betas=(0.9, 0.95),
        device=torch.device("cpu"),
    )
    loader = TokenWindowLoader(
        train_shards, context_length=args.context_length, batch_size=args.batch_size, seed=args.seed
    )
    for step in range(args.steps):
        lr = learning_rate_at(
            step,
            step / args.steps,
            peak=args.lr,
            warmup_steps=args.steps // 10,
            schedule="cosine",
            min_ratio=0.1,
            decay_fraction=0.2,
        )
        for group in optimizer.param_groups:
            group["lr"] = lr
        inputs, targets = loader.next_batch()
        loss = weighted_cross_entropy(model(inputs), targets, weights)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return model, weights


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    data_dir: Path,
    counts: np.ndarray,
    args: argparse.Namespace,
    weights: torch.Tensor | None,
) -> dict[str, float]:
    occurring = np.flatnonzero(counts)
    by_count = occurring[np.argsort(counts[occurring], kind="stable")]  # rarest first
    rare = torch.zeros(len(counts), dtype=torch.bool)
    rare[torch.from_numpy(by_count[: len(by_count) // 2])] = True
    frequent = torch.zeros(len(counts), dtype=torch.bool)
    most_frequent_first = by_count[::-1].copy()
    cumulative = np.cumsum(counts[most_frequent_first]) / counts.sum()
    head = most_frequent_first[: int(np.searchsorted(cumulative, 0.5)) + 1]
    frequent[torch.from_numpy(head)] = True
    model.eval()
    sums = {"all": 0.0, "rare": 0.0, "frequent": 0.0}
    numbers = {"all": 0, "rare": 0, "frequent": 0}
    predicted_rare = 0
    adjusted_sum = 0.0
    log_weights = weights[: len(counts)].clamp_min(1e-12).log() if weights is not None else None
    val_shards = TokenShards.open(data_dir, "val")
    for inputs, targets in iter_eval_batches(
        val_shards,
        context_length=args.context_length,
        batch_size=args.batch_size,
        max_tokens=args.eval_tokens,
    ):
        logits = model(inputs)[..., : len(counts)].float()  # (B, T, vocab)
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, len(counts)), targets.reshape(-1), reduction="none"
        )
        flat = targets.reshape(-1)
        for name, mask in (
            ("all", torch.ones_like(flat, dtype=torch.bool)),
            ("rare", rare[flat]),
            ("frequent", frequent[flat]),
        ):
            sums[name] += float(nll[mask].sum())
            numbers[name] += int(mask.sum())
        predicted_rare += int(rare[logits.argmax(-1).reshape(-1)].sum())
        if log_weights is not None:
            adjusted = (logits - log_weights).reshape(-1, len(counts))
            adjusted_sum += float(
                torch.nn.functional.cross_entropy(adjusted, flat, reduction="sum")
            )
    return {
        "val_loss": sums["all"] / numbers["all"],
        "adjusted_val_loss": adjusted_sum / numbers["all"] if weights is not None else math.nan,
        "rare_loss": sums["rare"] / max(numbers["rare"], 1),
        "frequent_loss": sums["frequent"] / max(numbers["frequent"], 1),
        "rare_share_of_targets": numbers["rare"] / numbers["all"],
        "rare_share_of_top1": predicted_rare / numbers["all"],
        "rare_types": int(rare.sum()),
        "frequent_types": int(frequent.sum()),
        "val_tokens": numbers["all"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED_DATA / "tinystories_train.txt"))
    parser.add_argument("--val-data", default=str(SHARED_DATA / "tinystories_valid.txt"))
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--powers", default="0,0.5")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--context-length", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--eval-tokens", type=int, default=65536)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON line per run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cache = Path(os.environ.get("SCRATCHLM_CACHE", tempfile.mkdtemp(prefix="token-weighting-")))
    started = time.perf_counter()
    data_dir = prepare(args, cache)
    counts = cached_token_counts(data_dir, TokenShards.open(data_dir, "train"))
    print(
        f"# {platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads | data {args.data} "
        f"| train {int(counts.sum()):,} tokens, {int((counts > 0).sum())} types occur | preset "
        f"tiny, context {args.context_length}, batch {args.batch_size}, {args.steps} steps, "
        f"lr {args.lr} | prepared in {time.perf_counter() - started:.0f}s"
    )
    print(
        f"{'power':>5s} {'val loss':>9s} {'rare loss':>10s} {'frequent':>9s} "
        f"{'rare top-1':>10s} {'(data)':>7s} {'adjusted':>9s} {'train s':>8s}"
    )
    for power in (float(value) for value in args.powers.split(",")):
        started = time.perf_counter()
        model, weights = train_once(data_dir, power, counts, args)
        seconds = time.perf_counter() - started
        result = evaluate(model, data_dir, counts, args, weights)
        if args.json:
            print(json.dumps({"power": power, "train_s": round(seconds, 1), **result}))
        print(
            f"{power:5.2f} {result['val_loss']:9.4f} {result['rare_loss']:10.4f} "
            f"{result['frequent_loss']:9.4f} {result['rare_share_of_top1']:10.2%} "
            f"{result['rare_share_of_targets']:7.2%} {result['adjusted_val_loss']:9.4f} "
            f"{seconds:8.0f}",
            flush=True,
        )
    half = inverse_frequency_weights(counts, len(counts), 0.5)
    print(
        f"# rare = the {result['rare_types']} least frequent of the occurring types "
        f"({result['rare_share_of_targets']:.1%} of val targets); frequent = the "
        f"{result['frequent_types']} most frequent types (half of the training tokens); "
        f"a=0.5 weights span {float(half[counts > 0].min()):.2f}..{float(half.max()):.2f}; "
        f"{result['val_tokens']:,} val tokens"
    )


if __name__ == "__main__":
    main()
