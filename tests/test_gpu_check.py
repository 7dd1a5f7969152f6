"""benchmarks/gpu_check.py: the --quick check end to end on CPU (every part that can run on a CPU
passes, the GPU-only ones say "no CUDA"), and its helpers against naive references."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check.py"
# The quick check starts about 4 Python processes that import torch, and does little else: on
# this machine it took about 12 times one such start-up.
STARTUPS_PER_CHECK = 12
TIME_LIMIT_S = 60.0


@pytest.fixture(scope="module")
def gpu_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_time_limits_give_each_part_its_weighted_share(gpu_check: ModuleType) -> None:
    # Parts that each use their fair share end up with time proportional to their weights; a
    # limit never eats into the minimum the parts after it need, nor goes below the fair share
    # when there is time for both.
    parts, budget = list(gpu_check.PARTS), 540.0
    remaining, used = budget, {}
    for index, name in enumerate(parts):
        share = gpu_check.fair_share(remaining, parts[index:])
        limit = gpu_check.time_limit(remaining, parts[index:])
        reserved = gpu_check.MIN_PART_S * (len(parts) - index - 1)
        assert limit <= remaining - reserved + 1e-9
        assert limit >= min(share, remaining - reserved) - 1e-9
        used[name] = share
        remaining -= share
    total = sum(weight for _, weight in gpu_check.PARTS.values())
    for name, (_, weight) in gpu_check.PARTS.items():
        assert used[name] == pytest.approx(budget * weight / total)
    assert remaining == pytest.approx(0.0, abs=1e-9)


def test_first_difference_against_a_naive_scan(gpu_check: ModuleType) -> None:
    generator = random.Random(0)
    for _ in range(300):
        a = [generator.randrange(3) for _ in range(generator.randrange(6))]
        b = [generator.randrange(3) for _ in range(generator.randrange(6))]
        expected = None
        for position in range(max(len(a), len(b))):
            if position >= len(a) or position >= len(b) or a[position] != b[position]:
                expected = position
                break
        assert gpu_check.first_difference(a, b) == expected


def test_throughput_medians_and_non_finite_loss(gpu_check: ModuleType, tmp_path: Path) -> None:
    rates = [10.0, 500.0, 300.0, 100.0, 200.0]  # the first (warm-up) is left out
    records = [
        {"kind": "train", "step": step, "tokens": 64 * step, "loss": 5.0 - step / 10,
         "tokens_per_s": rate, "mfu": rate / 1000, "elapsed_s": float(step)}
        for step, rate in enumerate(rates, start=1)
    ]  # fmt: skip
    lines = [json.dumps(record) for record in [{"kind": "eval", "step": 1}, *records]]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    result = gpu_check.throughput(tmp_path, warmup=1)
    assert result["tokens_per_s"] == 250.0 and result["mfu"] == 0.25  # medians of the last 4
    assert result["steps_per_s"] == 250.0 / 64 and result["steps"] == 5
    records[2]["loss"] = math.nan
    (tmp_path / "metrics.jsonl").write_text("\n".join(map(json.dumps, records)) + "\n")
    with pytest.raises(gpu_check.PartError, match="non-finite"):
        gpu_check.throughput(tmp_path, warmup=1)


@pytest.mark.slow
def test_quick_check_on_cpu(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    imports = "import torch, scratchlm.cli"
    subprocess.run([sys.executable, "-c", imports], check=True, env=env)
    estimate = STARTUPS_PER_CHECK * (time.perf_counter() - started)
    if estimate > TIME_LIMIT_S:
        pytest.skip(f"the quick check would take about {estimate:.0f} s on this machine now")
    report_path = tmp_path / "gpu_check.json"
    command = [sys.executable, str(SCRIPT), "--device", "cpu", "--quick"]
    command += ["--json", str(report_path), "--work-dir", str(tmp_path / "work")]
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    parts = json.loads(report_path.read_text())["parts"]
    statuses = {name: part["status"] for name, part in parts.items()}
    assert statuses == {
        **dict.fromkeys(["environment", "train", "resume", "decode", "server"], "ok"),
        **dict.fromkeys(["compile", "flash", "memory"], "skipped"),
    }
    assert parts["flash"]["summary"].startswith("no CUDA")
    assert parts["memory"]["summary"].startswith("no CUDA")
    train = parts["train"]
    assert train["tokens_per_s"] > 0 and all(math.isfinite(x) for x in train["loss_first_last"])
    # CPU training is deterministic: N steps equal N/2 + --resume bit for bit
    assert parts["resume"]["bit_identical"] and parts["resume"]["max_abs_diff"] == 0.0
    # fp32 on both sides of the exact export: the same greedy tokens
    assert parts["decode"]["greedy_match"] and parts["decode"]["dtype"] == "float32"
    server = parts["server"]
    assert server["clients"] == 32 and server["requests"] >= 32 and server["errors"] == 0
    assert "every part passed or was skipped" in run.stdout
