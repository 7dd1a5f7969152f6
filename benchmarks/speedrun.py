"""The training speedrun: the best model per CPU-minute, against nanoGPT's published baseline.

Each entry is a `scratchlm train` command line (data-driven: ENTRIES below). It runs as a fresh
process per seed; wall time counts from the moment the process is spawned (Python and PyTorch
start-up, data loading, training, evaluations and checkpoint writes all count). The tokenizer
and the tokenized data are cached by a warm-up run first, as nanoGPT's `prepare.py` is a separate
step. Every evaluation is on the whole fixed validation split, so the losses are exact held-out
losses, not estimates.

Tracks:
- shakespeare-char: ../shared/data/tinyshakespeare.txt, the last 10% of characters held out (as
  nanoGPT does), a character tokenizer. Target: validation loss <= 1.88.
- tinystories-bpe: ../shared/data/tinystories_train*.txt to train, tinystories_valid.txt to
  validate, a BPE tokenizer trained on the training text; nats/token and bits per byte.

    .venv/bin/python benchmarks/speedrun.py --track shakespeare-char --entries nanogpt-baseline tiny-55s --seeds 3
    .venv/bin/python benchmarks/speedrun.py --list
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass(frozen=True)
class Track:
    data: list[str]
    val_data: str | None
    tokenizer: list[str]
    target: float | None
    prompts: tuple[str, ...]


TRACKS = {
    "shakespeare-char": Track(
        data=["tinyshakespeare.txt"],
        val_data=None,  # the last 10% (--val-fraction 0.1)
        tokenizer=["--tokenizer", "char"],
        target=1.88,
        prompts=("ROMEO:", "First Citizen:\nWe", "KING HENRY VI:\nWhat"),
    ),
    "tinystories-bpe": Track(
        data=["tinystories_train.txt", "tinystories_train_extra.txt"],
        val_data="tinystories_valid.txt",
        tokenizer=["--tokenizer", "bpe", "--vocab-size", "4096"],
        target=None,
        prompts=(
            "Once upon a time, there was a little girl named Lily.",
            "Tom and his dog went to the park.",
            "One day, a big bear",
        ),
    ),
}

# nanoGPT's CPU recipe (README, "I only have a macbook"): batch 12, context 64, 4 layers, 4 heads,
# width 128, dropout 0, lr 1e-3 with 100 warmup iterations and cosine decay to 1e-4 over 2000
# iterations, AdamW betas (0.9, 0.99), weight decay 0.1, clipping 1.0, evaluation every 250.
NANOGPT_BASELINE = [
    "--preset", "nanogpt-cpu",
    "--optimizer", "adamw",
    "--batch-size", "12",
    "--lr", "1e-3",
    "--min-lr-ratio", "0.1",
    "--warmup-steps", "100",
    "--max-steps", "2000",
    "--beta2", "0.99",
    "--weight-decay", "0.1",
    "--grad-clip", "1.0",
    "--eval-every", "250",
]  # fmt: skip

# name -> (track, flags). Flags after the track's data/tokenizer flags; budgets are --max-time
# (the training loop's time; the rest of the wall time is start-up and the final evaluation).
# The speedrun's best recipe on this machine (docs/speedrun.md): Muon, QK-norm, context 64,
# micro-batch 16, peak learning rate 6e-3 with 30 warmup steps, cosine decay.
BEST = [
    "--preset",
    "tiny",
    "--context-length",
    "64",
    "--set",
    "qk_norm=true",
    "--optimizer",
    "muon",
    "--lr",
    "6e-3",
    "--warmup-steps",
    "30",
    "--batch-size",
    "16",
]
# The same with AdamW at its own best learning rate (3e-3): the optimizer's share of the gain.
BEST_ADAMW = [*BEST, "--optimizer", "adamw", "--lr", "3e-3"]
# tinystories-bpe: `tiny` keeps its context (256: stories are longer than 64 tokens) and adds what
# won at equal tokens on this track (docs/speedrun.md): QK-norm, Muon at lr 6e-3, batch 8.
BEST_STORIES = [
    "--preset", "tiny", "--set", "qk_norm=true", "--optimizer", "muon", "--lr", "6e-3",
    "--batch-size", "8",
]  # fmt: skip
ENTRIES: dict[str, tuple[str, list[str]]] = {
    "nanogpt-baseline": ("shakespeare-char", NANOGPT_BASELINE),
    "tiny-55s": ("shakespeare-char", ["--preset", "tiny", "--max-time", "44s", "--eval-every", "100000"]),
    "best-55s": ("shakespeare-char", [*BEST, "--max-time", "44s", "--eval-every", "100000"]),
    "best-adamw-55s": ("shakespeare-char", [*BEST_ADAMW, "--max-time", "44s", "--eval-every", "100000"]),
    "best-bf16-55s": ("shakespeare-char", [*BEST, "--precision", "bf16", "--max-time", "44s", "--eval-every", "100000"]),
    "best-compile-55s": ("shakespeare-char", [*BEST, "--compile", "--max-time", "44s", "--eval-every", "100000"]),
    "best-5m": ("shakespeare-char", [*BEST, "--max-time", "290s", "--eval-every", "100000"]),
    "tiny-10m": ("tinystories-bpe", ["--preset", "tiny", "--max-time", "580s", "--eval-every", "100000"]),
    "tiny-adamw-10m": ("tinystories-bpe", ["--preset", "tiny", "--optimizer", "adamw", "--max-time", "580s", "--eval-every", "100000"]),
    "small-10m": ("tinystories-bpe", ["--preset", "small", "--max-time", "580s", "--eval-every", "100000"]),
    "tiny-qknorm-10m": ("tinystories-bpe", ["--preset", "tiny", "--set", "qk_norm=true", "--max-time", "580s", "--eval-every", "100000"]),
    "best-10m": ("tinystories-bpe", [*BEST_STORIES, "--max-time", "580s", "--eval-every", "100000"]),
    # Equal time without the clock (issue 18, item 7): QK-norm's step costs 1.4% more
    # (train_throughput.py, side by side, 1 thread), so it gets 1.4% fewer steps. Step budgets make
    # the comparison independent of the machine's load; the quickstart's `tiny` sees ~500 steps.
    "tiny-500": ("tinystories-bpe", ["--preset", "tiny", "--max-steps", "500", "--eval-every", "100000"]),
    "tiny-qknorm-493": ("tinystories-bpe", ["--preset", "tiny", "--set", "qk_norm=true", "--max-steps", "493", "--eval-every", "100000"]),
}  # fmt: skip


def data_flags(track: Track, work: Path) -> list[str]:
    paths = [SHARED / name for name in track.data]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise SystemExit(
            f"missing corpus files: {', '.join(missing)} (see ../shared/data/README.md)"
        )
    if len(paths) == 1:
        data = str(paths[0])
    else:  # several files: a directory of links to them
        folder = work / "train-data"
        folder.mkdir(exist_ok=True)
        for path in paths:
            link = folder / path.name
            if not link.exists():
                link.symlink_to(path)
        data = str(folder)
    flags = ["--data", data, *track.tokenizer]
    if track.val_data:
        flags += ["--val-data", str(SHARED / track.val_data)]
    else:
        flags += ["--val-fraction", "0.1"]
    return flags


def run_once(flags: list[str], out: Path, seed: int, threads: int | None) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "scratchlm", "train", *flags,
        "--out", str(out), "--seed", str(seed), "--eval-tokens", "100000000",
        "--sample-tokens", "0", "--save-every", "1000000", "--quiet",
    ]  # fmt: skip
    if threads:
        command += ["--threads", str(threads)]
    started = time.time()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.time() - started
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{result.stderr[-3000:]}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [record for record in records if record["kind"] == "eval"]
    end = next(record for record in reversed(records) if record["kind"] == "end")
    return {
        "seed": seed,
        "wall_s": wall,
        "train_s": end["elapsed_s"],
        "steps": end["step"],
        "tokens": end["tokens"],
        "tokens_per_s": end["tokens"] / max(end["elapsed_s"], 1e-9),
        "val_loss": evals[-1]["val_loss"],
        "val_bits_per_byte": evals[-1].get("val_bits_per_byte"),
        "evals": [(record["time"] - started, record["val_loss"]) for record in evals],
    }


def time_to(target: float, evals: list[tuple[float, float]]) -> float | None:
    for seconds, loss in evals:
        if loss <= target:
            return seconds
    return None


def spread(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def print_samples(run_dir: Path, prompts: tuple[str, ...]) -> None:
    import torch

    from scratchlm.checkpoint import load_checkpoint
    from scratchlm.inference.engine import Engine
    from scratchlm.inference.settings import SamplingSettings

    torch.set_num_threads(2)
    checkpoint = load_checkpoint(run_dir)
    engine = Engine(checkpoint.model)
    tokenizer = checkpoint.tokenizer
    for prompt in prompts:
        ids = tokenizer.encode(prompt)
        budget = min(200, checkpoint.config.context_length - len(ids))
        new = list(
            engine.generate(
                ids,
                max_new_tokens=budget,
                sampling=SamplingSettings(temperature=0.8, top_k=50),
                seed=0,
                stop_ids=frozenset({tokenizer.eos_id}),
                truncate=True,
            )
        )
        text = prompt + tokenizer.decode(new, skip_special=True)
        print(f"--- {prompt!r}\n{text}\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--track", choices=sorted(TRACKS), default="shakespeare-char")
    parser.add_argument("--entries", nargs="+", help="entries of the track (default: all)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="seed index to start from (seed = 1337 + index): add seeds to an earlier result",
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--extra", nargs=argparse.REMAINDER, default=[], help="flags for every entry"
    )
    parser.add_argument("--json", help="append the results to this JSON-lines file")
    parser.add_argument("--list", action="store_true", help="list the entries and exit")
    args = parser.parse_args()
    if args.list:
        for name, (track_name, flags) in ENTRIES.items():
            print(f"{name:<20} {track_name:<18} {' '.join(flags)}")
        return
    track = TRACKS[args.track]
    names = args.entries or [name for name, (owner, _) in ENTRIES.items() if owner == args.track]
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        os.environ.setdefault("SCRATCHLM_CACHE", str(work / "cache"))
        common = data_flags(track, work)
        # warm the tokenizer and data caches (a separate step, like nanoGPT's prepare.py)
        first_flags = ENTRIES[names[0]][1]
        run_once(
            [*common, *first_flags, "--max-steps", "1", *args.extra], work / "warm", 0, args.threads
        )
        results: dict[str, list[dict[str, Any]]] = {}
        seeds = range(args.first_seed, args.first_seed + args.seeds)
        for seed in seeds:  # seeds outermost: machine drift hits every entry alike
            for name in names:
                track_name, flags = ENTRIES[name]
                assert track_name == args.track, f"{name} belongs to {track_name}"
                out = work / f"{name}-{seed}"
                outcome = run_once([*common, *flags, *args.extra], out, 1337 + seed, args.threads)
                results.setdefault(name, []).append(outcome)
                print(
                    f"{name} seed {seed}: val {outcome['val_loss']:.4f} in {outcome['wall_s']:.1f}s wall "
                    f"({outcome['steps']} steps, {outcome['tokens_per_s']:,.0f} tok/s)",
                    flush=True,
                )
        print(f"\ntrack {args.track} ({args.seeds} seeds; mean ± stdev)")
        header = f"{'entry':<20} {'val loss':>18} {'wall s':>8} {'tokens/s':>9}"
        if track.target is not None:
            header += f" {'time to ' + str(track.target):>14}"
        if args.track == "tinystories-bpe":
            header += f" {'bits/byte':>18}"
        print(header)
        for name in names:
            runs = results[name]
            line = (
                f"{name:<20} {spread([run['val_loss'] for run in runs]):>18} "
                f"{statistics.mean(run['wall_s'] for run in runs):>8.1f} "
                f"{statistics.mean(run['tokens_per_s'] for run in runs):>9,.0f}"
            )
            if track.target is not None:
                times = [time_to(track.target, run["evals"]) for run in runs]
                reached = [value for value in times if value is not None]
                line += f" {f'{statistics.mean(reached):.1f}s ({len(reached)}/{len(runs)})' if reached else 'not reached':>14}"
            if args.track == "tinystories-bpe":
                line += f" {spread([run['val_bits_per_byte'] for run in runs]):>18}"
            print(line)
        if args.json:
            with open(args.json, "a", encoding="utf-8") as handle:
                for name in names:
                    record = {
                        "track": args.track,
                        "entry": name,
                        "flags": ENTRIES[name][1] + args.extra,
                        "runs": results[name],
                    }
                    handle.write(json.dumps(record) + "\n")
        best = min(
            names, key=lambda name: statistics.mean(run["val_loss"] for run in results[name])
        )
        print(f"\nsamples from {best} (seed {seeds[0]}):\n")
        print_samples(work / f"{best}-{seeds[0]}", track.prompts)


if __name__ == "__main__":
    main()
