"""Validation loss reached within a wall-clock training budget, on the shared corpora.

Runs `scratchlm train` for each track with the same budget and prints the final and best validation
loss (nats/token and bits/byte), tokens/s and steps. Tracks:
  shakespeare-char : tinyshakespeare.txt, char tokenizer, last 10% held out (as nanoGPT)
  tinystories-bpe  : tinystories_train.txt, BPE 4096, tinystories_valid.txt held out

    .venv/bin/python benchmarks/train_budget.py --minutes 5 --tracks shakespeare-char tinystories-bpe
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TRACKS: dict[str, list[str]] = {
    "shakespeare-char": [
        "--preset",
        "tiny",
        "--tokenizer",
        "char",
        "--data",
        str(SHARED / "tinyshakespeare.txt"),
    ],
    "tinystories-bpe": [
        "--preset",
        "tiny",
        "--tokenizer",
        "bpe",
        "--vocab-size",
        "4096",
        "--data",
        str(SHARED / "tinystories_train.txt"),
        "--val-data",
        str(SHARED / "tinystories_valid.txt"),
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--tracks", nargs="+", default=list(TRACKS), choices=list(TRACKS))
    parser.add_argument("--out", default=None, help="keep the runs here (default: a temp dir)")
    parser.add_argument("extra", nargs="*", help="extra train flags after --, e.g. -- --lr 2e-3")
    args = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} is missing: this benchmark needs the shared corpora")
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="scratchlm-budget-"))
    for track in args.tracks:
        run_dir = root / track
        shutil.rmtree(run_dir, ignore_errors=True)
        command = [
            sys.executable,
            "-m",
            "scratchlm",
            "train",
            *TRACKS[track],
            "--max-time",
            f"{args.minutes * 60:.0f}",
            "--eval-every",
            "250",
            "--out",
            str(run_dir),
            *args.extra,
        ]
        print("$", " ".join(command), flush=True)
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        records = [
            json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        ]
        evals = [r for r in records if r["kind"] == "eval"]
        trains = [r for r in records if r["kind"] == "train"]
        last, best = evals[-1], min(evals, key=lambda r: r["val_loss"])
        rate = trains[-1]["tokens"] / trains[-1]["elapsed_s"]
        print(
            f"{track}: val loss {last['val_loss']:.4f} (best {best['val_loss']:.4f}), "
            f"{last.get('val_bits_per_byte', float('nan')):.4f} bits/byte, {last['step']} steps, "
            f"{last['tokens']:,} tokens, {rate:,.0f} tokens/s, wall {wall:.0f}s incl. setup"
        )
        print(f"  sample: {last['sample'][:300]!r}")


if __name__ == "__main__":
    main()
