"""Post-training on a CPU, stage by stage: SFT, then DPO and RL from the SFT model.

From a pretrained checkpoint (the quickstart's base model by default):
1. SFT: `scratchlm finetune` on the shared Alpaca-style instructions
   (`../shared/data/sft_rasbt_instructions.jsonl`) mixed with the train problems of the built-in
   verifiable tasks (`arithmetic`, `story-qa`; the reference answer as the reply), so that the
   chat model answers in the form the rewards check;
2. DPO: `scratchlm dpo` on `../shared/data/preference_rasbt.json` from the SFT model: held-out
   preference and reward accuracy before and after, reward margins, and greedy replies of both
   models to held-out prompts side by side;
3. RL: `scratchlm rl --task arithmetic` (and `story-qa`) from the SFT model: held-out pass@1
   (greedy) and pass@k before and after, the reward curve, and the CPU minutes used.
4. The quickstart question (issue 19, item 4): a short RL stage on `story-qa` from the
   quickstart's own chat model, within the quickstart's budget, before and after.

Every stage is the real CLI in a fresh process; the numbers come from each run's metrics.jsonl.
Not a test: nothing here asserts.

    .venv/bin/python benchmarks/post_training.py --base quickstart --out /tmp/post --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def run(command: list[str], threads: int) -> float:
    """Run `scratchlm COMMAND...`; returns the wall seconds. Stops the script on failure."""
    full = [sys.executable, "-m", "scratchlm", *command, "--threads", str(threads), "--quiet"]
    print("$ scratchlm " + " ".join(command), flush=True)
    started = time.time()
    result = subprocess.run(full, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return time.time() - started


def records(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def of_kind(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    return [record for record in records(run_dir) if record.get("kind") == kind]


def write_sft_mixture(path: Path, arithmetic: int, story_qa: int, seed: int) -> dict[str, int]:
    from scratchlm.finetune.records import read_records
    from scratchlm.finetune.tasks import TASKS

    rows: list[dict[str, Any]] = [
        record for _, record in read_records(SHARED / "sft_rasbt_instructions.jsonl")
    ]
    counts = {"instructions": len(rows)}
    for name, count in (("arithmetic", arithmetic), ("story-qa", story_qa)):
        problems = TASKS[name].problems("train", count, seed=seed)
        rows += [{"prompt": problem.prompt, "completion": problem.answer} for problem in problems]
        counts[name] = len(problems)
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return counts


def greedy_replies(checkpoint: Path, prompts: list[str], max_new_tokens: int) -> list[str]:
    import scratchlm

    model = scratchlm.load(checkpoint)
    return [
        model.chat(
            [{"role": "user", "content": prompt}],
            max_new_tokens=max_new_tokens,
            temperature=0.0,
        )
        for prompt in prompts
    ]


def split_preferences(out: Path, seed: int) -> tuple[Path, Path, list[str]]:
    """The shared preference file split 90/10 (seeded) into train and held-out files, and the
    held-out prompts (the user's last message of each held-out pair)."""
    import random

    rows = json.loads((SHARED / "preference_rasbt.json").read_text(encoding="utf-8"))
    random.Random(seed).shuffle(rows)
    held = len(rows) // 10
    train, val = out / "preferences_train.json", out / "preferences_val.json"
    train.write_text(json.dumps(rows[held:]), encoding="utf-8")
    val.write_text(json.dumps(rows[:held]), encoding="utf-8")
    prompts = [
        row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
        for row in rows[:held]
    ]
    return train, val, prompts


def rl_summary(run_dir: Path, wall: float) -> dict[str, Any]:
    before = of_kind(run_dir, "rl_before")[0]
    evals = of_kind(run_dir, "eval")
    trains = of_kind(run_dir, "train")
    return {
        "wall_s": round(wall, 1),
        "steps": evals[-1]["step"],
        "before": {key: before[key] for key in ("pass@1", "sampled_pass@1", "pass@k", "pass_k")},
        "after": {key: evals[-1][key] for key in ("pass@1", "sampled_pass@1", "pass@k", "pass_k")},
        "reward_curve": [(record["step"], round(record["reward_mean"], 3)) for record in trains],
        "sample_after": evals[-1].get("sample", ""),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", default="quickstart", help="the quickstart's run directory")
    parser.add_argument("--out", default="runs/post-training")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sft-steps", type=int, default=600)
    parser.add_argument("--dpo-steps", type=int, default=150)
    parser.add_argument("--rl-steps", type=int, default=40)
    parser.add_argument("--arithmetic", type=int, default=2000, help="SFT arithmetic problems")
    parser.add_argument("--story-qa", type=int, default=1000, help="SFT story-qa problems")
    parser.add_argument("--quickstart-rl-time", default="60s")
    parser.add_argument("--stages", nargs="+", default=["sft", "dpo", "rl", "quickstart"])
    parser.add_argument("--json", help="write the results to this JSON file")
    args = parser.parse_args()
    for name in ("sft_rasbt_instructions.jsonl", "preference_rasbt.json"):
        if not (SHARED / name).is_file():
            raise SystemExit(f"missing {SHARED / name} (see ../shared/data/README.md)")
    base = Path(args.base)
    if not (base / "chat").is_dir():
        raise SystemExit(
            f"{base} is not a quickstart run (make one: scratchlm quickstart --out {base})"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    results: dict[str, Any] = {"base": str(base), "threads": args.threads}
    sft = out / "sft"

    if "sft" in args.stages:
        mixture = out / "sft_mixture.jsonl"
        results["sft_data"] = write_sft_mixture(mixture, args.arithmetic, args.story_qa, seed=7)
        wall = run(
            ["finetune", "-m", str(base), "--data", str(mixture), "--out", str(sft),
             "--max-steps", str(args.sft_steps), "--eval-every", str(args.sft_steps),
             "--sample-tokens", "0"],
            args.threads,
        )  # fmt: skip
        evals = of_kind(sft, "eval")
        results["sft"] = {"wall_s": round(wall, 1), "val_loss": evals[-1]["val_loss"]}
        print(f"SFT: {results['sft']}", flush=True)

    if "dpo" in args.stages:
        dpo = out / "dpo"
        train, val, prompts = split_preferences(out, seed=7)
        wall = run(
            ["dpo", "-m", str(sft), "--data", str(train), "--val-data", str(val),
             "--out", str(dpo), "--max-steps", str(args.dpo_steps),
             "--eval-every", str(args.dpo_steps), "--batch-size", "8", "--sample-tokens", "0"],
            args.threads,
        )  # fmt: skip
        before = of_kind(dpo, "preference_before")[0]
        after = of_kind(dpo, "eval")[-1]
        keys = [key for key in after if key.startswith("val_")]
        results["dpo"] = {
            "wall_s": round(wall, 1),
            "before": {key: before.get(key) for key in keys},
            "after": {key: after[key] for key in keys},
        }
        prompts = prompts[:3]
        results["dpo"]["replies"] = [
            {"prompt": prompt, "sft": sft_reply, "dpo": dpo_reply}
            for prompt, sft_reply, dpo_reply in zip(
                prompts,
                greedy_replies(sft / "best", prompts, 48),
                greedy_replies(dpo / "best", prompts, 48),
                strict=True,
            )
        ]
        print(f"DPO: {json.dumps(results['dpo'], indent=1)}", flush=True)

    if "rl" in args.stages:
        for task, max_new in (("arithmetic", 16), ("story-qa", 16)):
            rl_dir = out / f"rl-{task}"
            wall = run(
                ["rl", "-m", str(sft), "--task", task, "--out", str(rl_dir),
                 "--max-steps", str(args.rl_steps), "--eval-every", str(args.rl_steps),
                 "--max-new-tokens", str(max_new), "--eval-problems", "100"],
                args.threads,
            )  # fmt: skip
            results[f"rl_{task}"] = rl_summary(rl_dir, wall)
            print(f"RL {task}: {json.dumps(results[f'rl_{task}'], indent=1)}", flush=True)

    if "quickstart" in args.stages:
        rl_dir = out / "quickstart-rl"
        wall = run(
            ["rl", "-m", str(base / "chat"), "--task", "story-qa", "--out", str(rl_dir),
             "--max-time", args.quickstart_rl_time, "--eval-every", "1000000",
             "--max-new-tokens", "16", "--eval-problems", "100"],
            args.threads,
        )  # fmt: skip
        results["quickstart_rl"] = rl_summary(rl_dir, wall)
        print(f"quickstart + RL: {json.dumps(results['quickstart_rl'], indent=1)}", flush=True)

    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
