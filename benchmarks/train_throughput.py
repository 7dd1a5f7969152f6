"""Training throughput (tokens/s) of presets, measured side by side in one process.

Each preset runs full optimizer steps (forward, backward, fused AdamW) on random tokens, alternating
between presets round by round so that machine noise hits both alike; the script prints the median
tokens/s of each and the ratios against the first.

    .venv/bin/python benchmarks/train_throughput.py --presets tiny small --rounds 5
    .venv/bin/python benchmarks/train_throughput.py --presets tiny tiny:qk_norm=true --optimizer muon

A preset may carry config overrides after a colon (`tiny:qk_norm=true,n_layer=6`), the same values
as `train --set`, and its own batch size after an @ (`tiny@8`: the quickstart's batch against the
preset's 16, at the same context):

    .venv/bin/python benchmarks/train_throughput.py --presets tiny@16 tiny@8 --vocab-size 1024 \
        --optimizer muon --rounds 6
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import time

import torch
import torch.nn.functional as F

from scratchlm.config import preset_config
from scratchlm.model import build_model, count_parameters
from scratchlm.training.optim import OPTIMIZERS, build_optimizer
from scratchlm.training.run_config import parse_model_overrides


def cpu_name() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps-per-round", type=int, default=3)
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device("cpu")
    setups = []
    for name in args.presets:
        spec, _, batch_text = name.partition("@")
        batch_size = int(batch_text) if batch_text else args.batch_size
        preset, _, overrides = spec.partition(":")
        config = preset_config(
            preset,
            vocab_size=args.vocab_size,
            **parse_model_overrides(overrides.split(",") if overrides else []),
        )
        torch.manual_seed(0)
        model = build_model(config, device)
        optimizer = build_optimizer(
            model,
            learning_rate=1e-3,
            weight_decay=0.1,
            betas=(0.9, 0.95),
            device=device,
            kind=args.optimizer,
        )
        inputs = torch.randint(0, args.vocab_size, (batch_size, config.context_length))
        targets = torch.randint(0, args.vocab_size, (batch_size, config.context_length))
        setups.append((name, config, model, optimizer, inputs, targets))

    def step(
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        inputs: torch.Tensor,
        targets: torch.Tensor,
    ) -> None:
        logits = model(inputs)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _, _, model, optimizer, inputs, targets in setups:  # warm-up
        step(model, optimizer, inputs, targets)
    rates: dict[str, list[float]] = {name: [] for name, *_ in setups}
    for _ in range(args.rounds):
        for name, _, model, optimizer, inputs, targets in setups:
            started = time.perf_counter()
            for _ in range(args.steps_per_round):
                step(model, optimizer, inputs, targets)
            elapsed = time.perf_counter() - started
            rates[name].append(args.steps_per_round * inputs.numel() / elapsed)

    print(f"machine: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(
        f"batch {args.batch_size} x context (unless @BATCH), vocab {args.vocab_size}, fp32, {args.optimizer}, {args.rounds} rounds x {args.steps_per_round} steps"
    )
    first = statistics.median(rates[setups[0][0]])
    for name, config, model, *_ in setups:
        median = statistics.median(rates[name])
        print(
            f"{name:>18}: {count_parameters(model):>10,} params, context {config.context_length:>4}: "
            f"{median:>9,.0f} tokens/s (min {min(rates[name]):,.0f}, max {max(rates[name]):,.0f}), "
            f"ratio to {setups[0][0]}: {median / first:.3f}"
        )


if __name__ == "__main__":
    main()
