"""Every script in benchmarks/ imports: a rename in the package must not leave a benchmark that
fails at its first line (quickstart_track.py once imported a name that had moved)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("*.py"))


def test_the_scripts_are_found() -> None:
    assert len(SCRIPTS) >= 20, SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_benchmark_script_imports(script: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Scripts import their siblings (decode_vs_llamacpp, ...) as the command line would.
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    name = f"benchmark_import_check_{script.stem}"
    spec = importlib.util.spec_from_file_location(name, script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)  # runs the imports; main() stays behind its __main__ guard
    assert callable(getattr(module, "main", None)), f"{script.name} has no main()"


def test_prefill_flops_counts_every_matmul_of_a_prefill(monkeypatch: pytest.MonkeyPatch) -> None:
    """decode_vs_llamacpp's FLOPs of a prefill: the linear layers against PyTorch's own count of
    the model's forward (torch.utils.flop_counter, which sees the matmuls but not SDPA), less the
    output layer's rows that a prefill does not compute; the attention against a sum over the
    queries of the keys each one attends to (GQA: every query head attends)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from scratchlm.config import preset_config
    from scratchlm.model import build_model

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from decode_vs_llamacpp import prefill_flops

    config = preset_config("tiny", vocab_size=320, context_length=64, n_kv_head=2)
    model = build_model(config).eval()
    tokens = 48
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, tokens, dtype=torch.long))
    assert set(map(str, counter.get_flop_counts()["Global"])) == {"aten.mm"}
    linear = counter.get_total_flops() - 2 * model.lm_head.weight.numel() * (tokens - 1)
    assert config.head_dim is not None
    per_key = 2 * 2 * config.n_head * config.head_dim  # q.k and the weighted sum of v
    attention = config.n_layer * sum(per_key * (query + 1) for query in range(tokens))
    assert prefill_flops(model, tokens) == linear + attention


def test_read_patterns_compiles_and_reads(tmp_path: Path) -> None:
    """benchmarks/read_patterns.cpp (the fp32 read ceiling, docs/benchmarks.md) builds with the
    command its header gives, refuses bad arguments with exit code 2, and, on a CPU with
    AVX-512F, prints a GB/s figure for every pattern with the decode kernel's shape as 1.00x."""
    import shutil
    import subprocess

    from scratchlm.inference.kernels.loader import cpu_flags

    compiler = shutil.which("g++")
    if compiler is None or "avx2" not in cpu_flags():
        pytest.skip("needs g++ on an x86-64 CPU")
    binary = tmp_path / "read_patterns"
    subprocess.run(
        [compiler, "-O3", "-mavx512f", "-mavx2", "-mfma", "-pthread",
         str(BENCHMARKS / "read_patterns.cpp"), "-o", str(binary)],
        check=True, capture_output=True,
    )  # fmt: skip
    refused = subprocess.run([str(binary), "100", "2"], capture_output=True, text=True)
    assert refused.returncode == 2 and "multiple of 64" in refused.stderr
    if "avx512f" not in cpu_flags():
        return
    result = subprocess.run(
        [str(binary), "768", "2"], capture_output=True, text=True, check=True, timeout=120
    )
    rows = [line for line in result.stdout.splitlines() if line.startswith("  ")]
    assert len(rows) == 6, result.stdout
    for row in rows:
        figures = re.search(r"\s(\d+\.\d)\s+\((\d+\.\d\d)x the decode kernel's shape\)$", row)
        assert figures is not None and float(figures[1]) > 0.0, row
    assert "gemv 16 rows (ours)" in result.stdout and "(1.00x the decode kernel's shape)" in rows[3]


def test_q4_variants_roundings_match_the_kernel_formats(monkeypatch: pytest.MonkeyPatch) -> None:
    """q4_variants.py's own roundings stand for what they claim: its Q4_0 rule on 32-value blocks
    is exactly `--quantize q4`'s, every Q4_1 value is within half a step (plus fp16 rounding of
    the scale and minimum) of the weight, and the finer formats' errors are below Q4_0's."""
    import torch

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from q4_variants import round_q4, round_q4_1, round_q4_mse, round_q4_symmetric

    torch.manual_seed(0)
    weight = torch.randn(24, 100)  # a padded last block
    assert torch.equal(round_q4_symmetric(weight, 32), round_q4(weight))
    low = torch.nn.functional.pad(weight, (0, 28)).reshape(24, -1, 32)
    step = ((low.amax(-1) - low.amin(-1)) / 15).repeat_interleave(32, dim=1)[:, :100]
    assert bool(((round_q4_1(weight) - weight).abs() <= step * (0.5 + 2**-9) + 1e-3).all())

    def error(rounded: torch.Tensor) -> float:
        return float((rounded - weight).pow(2).sum())

    q4 = error(round_q4(weight))
    assert error(round_q4_1(weight)) < q4 and error(round_q4_symmetric(weight, 16)) < q4
    assert error(round_q4_mse(weight)) < q4
