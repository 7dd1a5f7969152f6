"""Every script in benchmarks/ imports: a rename in the package must not leave a benchmark that
fails at its first line (quickstart_track.py once imported a name that had moved)."""

from __future__ import annotations

import importlib.util
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
