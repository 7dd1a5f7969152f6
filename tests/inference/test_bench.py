from __future__ import annotations

import json

import pytest

from scratchlm.cli import main
from scratchlm.inference.bench import run_benchmark
from scratchlm.model import build_model
from tests.conftest import tiny_config


def test_run_benchmark_reports_every_number() -> None:
    model = build_model(tiny_config("tiny", context_length=64)).eval()
    result = run_benchmark(model, prompt_tokens=16, new_tokens=8, batch_sizes=(1, 4), num_runs=1)
    assert result.prefill_tokens_per_s > 0 and result.decode_tokens_per_s > 0
    assert 0 < result.time_to_first_token_s < 10 and result.peak_memory_bytes > 0
    assert set(result.batched_decode_tokens_per_s) == {4}


def test_bench_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "bench",
                "--preset",
                "tiny",
                "--prompt-tokens",
                "8",
                "--new-tokens",
                "4",
                "--batch-size",
                "1",
                "2",
                "--num-runs",
                "1",
                "--json",
            ]
        )
        == 0
    )
    values = json.loads(capsys.readouterr().out)
    for key in (
        "prefill_tokens_per_s",
        "decode_tokens_per_s",
        "time_to_first_token_s",
        "peak_memory_bytes",
    ):
        assert values[key] > 0
    assert "2" in values["batched_decode_tokens_per_s"]


def test_bench_refuses_too_long(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--preset", "tiny", "--prompt-tokens", "250", "--new-tokens", "10"]) == 2
    assert "context" in capsys.readouterr().err
