"""Issue 7 benchmarks: training throughput on 1 process vs N processes (torchrun, DDP and FSDP2),
and the cost of a checkpoint save.

Throughput runs the real `scratchlm train` command on the same data and the same global batch
(tokens per step) in every setting: one process using all threads against N processes with
threads split between them. Settings alternate round by round so that machine noise hits each
alike. Tokens/s is the median over the logged steps after the first few (compile and caches
warm up), read from each run's metrics.jsonl.

The checkpoint cost is what the trainer does at every save: gather the full weights and optimizer
state, write model.safetensors + trainer_state.pt + tokenizer.json + config.json with SHA-256
checksums, fsync, and rename into place.

    .venv/bin/python benchmarks/train_distributed.py --processes 2 --rounds 2
    .venv/bin/python benchmarks/train_distributed.py --skip-throughput --save-presets small akane-124m
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from scratchlm.checkpoint import file_sha256, save_checkpoint
from scratchlm.config import preset_config
from scratchlm.data.stories.corpus import generate_stories
from scratchlm.model import build_model
from scratchlm.tokenizer import train_char
from scratchlm.training import distributed
from scratchlm.training.optim import build_optimizer

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def corpus(work: Path) -> Path:
    shakespeare = SHARED / "tinyshakespeare.txt"
    if shakespeare.is_file():
        return shakespeare
    path = work / "stories.txt"
    path.write_text("\n<|endoftext|>\n".join(generate_stories(3000, seed=1)), encoding="utf-8")
    return path


def train_command(
    data: Path, out: Path, processes: int, threads: int, args: argparse.Namespace, fsdp: bool
) -> list[str]:
    launcher = [sys.executable, "-m", "scratchlm"]
    if processes > 1:
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
            "-m",
            "scratchlm",
        ]
    micro_batch = args.global_batch // processes
    return [
        *launcher,
        "train",
        "--preset",
        args.preset,
        "--data",
        str(data),
        "--tokenizer",
        "char",
        "--out",
        str(out),
        "--batch-size",
        str(micro_batch),
        "--tokens-per-step",
        str(args.global_batch * preset_config(args.preset, vocab_size=128).context_length),
        "--max-steps",
        str(args.steps),
        "--eval-every",
        str(args.steps),
        "--eval-tokens",
        "4096",
        "--sample-tokens",
        "0",
        "--save-every",
        str(10 * args.steps),
        "--spike-factor",
        "0",
        "--log-every",
        "1",
        "--threads",
        str(threads),
        "--quiet",
        *(["--fsdp"] if fsdp else []),
    ]


def median_tokens_per_s(run_dir: Path, skip: int) -> float:
    rates = []
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["kind"] == "train" and record["step"] > skip:
            rates.append(record["tokens_per_s"])
    return statistics.median(rates)


def throughput(args: argparse.Namespace, work: Path) -> None:
    data = corpus(work)
    cores = os.cpu_count() or 1
    settings = [("1 process", 1, cores, False)]
    for count in args.processes:
        threads = max(1, cores // count)
        settings.append((f"{count} processes DDP", count, threads, False))
        settings.append((f"{count} processes FSDP2", count, threads, True))
    results: dict[str, list[float]] = {name: [] for name, *_ in settings}
    # warm the data and tokenizer caches once so no setting pays for them
    subprocess.run(
        train_command(
            data, work / "warm", 1, cores, argparse.Namespace(**{**vars(args), "steps": 1}), False
        ),
        check=True,
        capture_output=True,
    )
    for round_index in range(args.rounds):
        for name, processes, threads, fsdp in settings:
            out = work / f"{name.replace(' ', '-')}-{round_index}"
            command = train_command(data, out, processes, threads, args, fsdp)
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                env={**os.environ, "OMP_NUM_THREADS": str(threads)},
            )
            if result.returncode != 0:
                raise SystemExit(f"{name} failed:\n{result.stderr[-2000:]}")
            results[name].append(median_tokens_per_s(out, skip=3))
            shutil.rmtree(out)
    baseline = statistics.median(results["1 process"])
    print(
        f"\npreset {args.preset}, global batch {args.global_batch} sequences, {args.steps} steps, {cores} cores"
    )
    print(f"{'setting':<22} {'tokens/s':>10} {'vs 1 process':>13}")
    for name, *_ in settings:
        value = statistics.median(results[name])
        print(f"{name:<22} {value:>10,.0f} {value / baseline:>12.2f}x")


def checkpoint_cost(args: argparse.Namespace, work: Path) -> None:
    tokenizer = train_char(["".join(chr(32 + index) for index in range(90))])
    print(
        f"\n{'preset':<12} {'params':>12} {'files MB':>9} {'save s':>8} {'of which SHA-256 s':>19}"
    )
    for name in args.save_presets:
        config = preset_config(name, vocab_size=tokenizer.vocab_size)
        model = build_model(config, "cpu")
        optimizer = build_optimizer(
            model,
            learning_rate=1e-4,
            weight_decay=0.1,
            betas=(0.9, 0.95),
            device=torch.device("cpu"),
        )
        # one real step so the optimizer holds its two moment tensors per parameter
        inputs = torch.randint(0, tokenizer.vocab_size, (1, 16))
        model(inputs).float().logsumexp(-1).mean().backward()
        optimizer.step()
        timings, hashing = [], []
        for repeat in range(args.save_repeats):
            target = work / f"save-{name}-{repeat}"
            started = time.perf_counter()
            trainer_state = {
                "optimizer": distributed.full_optimizer_state(model, optimizer),
                "rng": {"torch": torch.get_rng_state()},
            }
            save_checkpoint(target, model, tokenizer, trainer_state=trainer_state, replace=True)
            timings.append(time.perf_counter() - started)
            started = time.perf_counter()
            size = 0
            for path in target.iterdir():
                file_sha256(path)
                size += path.stat().st_size
            hashing.append(time.perf_counter() - started)
            shutil.rmtree(target)
        params = sum(parameter.numel() for parameter in model.parameters())
        print(
            f"{name:<12} {params:>12,} {size / 1e6:>9,.0f} {statistics.median(timings):>8.2f} "
            f"{statistics.median(hashing):>19.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="small")
    parser.add_argument("--processes", type=int, nargs="+", default=[2])
    parser.add_argument("--global-batch", type=int, default=8, help="sequences per optimizer step")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--save-presets", nargs="+", default=["small", "akane-124m"])
    parser.add_argument("--save-repeats", type=int, default=3)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-save", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        os.environ.setdefault("SCRATCHLM_CACHE", str(work / "cache"))
        if not args.skip_throughput:
            throughput(args, work)
        if not args.skip_save:
            checkpoint_cost(args, work)


if __name__ == "__main__":
    main()
