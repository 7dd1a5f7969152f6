"""SIGTERM and SIGUSR1 during training: a real training process saves a checkpoint at the step
where it stops, exits 128 + the signal's number, and a resume continues bit-identically to a run
that was never stopped (one process, torchrun with two, and LoRA fine-tuning)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from scratchlm.checkpoint import save_checkpoint, verify_checkpoint
from scratchlm.config import preset_config
from scratchlm.data.stories.corpus import generate_stories
from scratchlm.model import build_model
from scratchlm.tokenizer import train_char
from scratchlm.training.run_config import parse_model_overrides
from tests.training.helpers import (
    TINY_MODEL,
    as_flags,
    assert_identical,
    latest_weights,
    records,
    scratchlm_command,
    signal_when,
    train_losses,
)

STEPS = 40
TIMEOUT = 300  # seconds: a bound against hangs, not a measurement
TINY_OVERRIDES = {**parse_model_overrides(TINY_MODEL), "context_length": 64}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "stories.txt"
    path.write_text("\n<|endoftext|>\n".join(generate_stories(400, seed=9)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def environment(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    # One cache for the module's processes (the autouse fixture's is per test).
    cache = tmp_path_factory.mktemp("cache")
    return {**os.environ, "SCRATCHLM_CACHE": str(cache), "OMP_NUM_THREADS": "1"}


def settings(corpus: Path, out: Path) -> dict[str, object]:
    return {
        "preset": "tiny",
        "set": TINY_MODEL,
        "context_length": 64,
        "data": corpus,
        "tokenizer": "char",
        "out": out,
        "batch_size": 4,
        "tokens_per_step": 512,  # two micro-batches in one process, one per rank under torchrun
        "dropout": 0.1,  # restoring the RNG state matters
        "max_steps": STEPS,
        "save_every": 100,  # the only step checkpoints are the signal's and the last
        "eval_every": 20,
        "eval_tokens": 2048,
        "sample_tokens": 8,
        "log_every": 1,
        "lr": 3e-3,
        "seed": 5,
        "threads": 1,
        "data_workers": 1,
        "quiet": True,  # the stop message is shown all the same
    }


def train_command(corpus: Path, out: Path, *extra: str, processes: int = 1) -> list[str]:
    launcher = scratchlm_command(processes)
    return [*launcher, "train", *as_flags(settings(corpus, out)), *extra]


def run_to_end(command: list[str], environment: dict[str, str]) -> None:
    result = subprocess.run(
        command, capture_output=True, text=True, env=environment, timeout=TIMEOUT
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def start(command: list[str], environment: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment
    )


def check_stopped_run(out: Path, signal_number: int, output: str) -> int:
    """The run stopped after a whole step and saved there; returns that step."""
    name = signal.Signals(signal_number).name
    end = records(out, "end")[-1]
    step = int(end["step"])
    assert end["reason"] == f"stopped by {name}"
    assert 3 <= step < STEPS
    checkpoint = out / "checkpoints" / f"step_{step:06d}"
    assert (out / "latest").read_text(encoding="utf-8").strip() == f"checkpoints/step_{step:06d}"
    assert verify_checkpoint(checkpoint) is None
    saved = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    assert saved["training"]["step"] == step
    assert (checkpoint / "trainer_state.pt").is_file()
    assert sorted(train_losses(out)) == list(range(1, step + 1))
    assert f"stopped by {name} at step {step}: saved {checkpoint}; continue with --resume" in output
    assert "Traceback" not in output
    return step


@pytest.fixture(scope="module")
def straight(
    corpus: Path, environment: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("straight") / "run"
    run_to_end(train_command(corpus, out), environment)
    return out


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGUSR1], ids=["TERM", "USR1"])
def test_a_signal_saves_and_the_resume_is_bit_identical(
    corpus: Path,
    environment: dict[str, str],
    straight: Path,
    tmp_path: Path,
    signal_number: int,
) -> None:
    out = tmp_path / "run"
    process = start(train_command(corpus, out), environment)
    signal_when(process, lambda: len(train_losses(out)) >= 3, signal_number)
    output, errors = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 128 + signal_number, errors[-2000:]
    check_stopped_run(out, signal_number, output + errors)

    run_to_end(train_command(corpus, out, "--resume"), environment)
    assert train_losses(out) == train_losses(straight)  # every step, bit for bit
    assert_identical(latest_weights(straight), latest_weights(out))


# --- torchrun -------------------------------------------------------------------------------------


def worker_pid(launcher: int, rank: int) -> int:
    """The pid of torchrun's worker of `rank` (Linux: /proc lists children and environments)."""
    children = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
    for child in children:
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in environ:
            return int(child)
    raise AssertionError(f"no worker of rank {rank} among {children}")


@pytest.mark.xdist_group("torchrun")
def test_sigterm_to_torchrun_stops_every_rank_at_one_step(
    corpus: Path, environment: dict[str, str], tmp_path: Path
) -> None:
    reference = tmp_path / "straight"
    run_to_end(train_command(corpus, reference, processes=2), environment)
    out = tmp_path / "run"
    # torchrun forwards SIGTERM to every worker; the ranks agree on the step to stop after.
    process = start(train_command(corpus, out, processes=2), environment)
    signal_when(process, lambda: len(train_losses(out)) >= 3, signal.SIGTERM)
    output, errors = process.communicate(timeout=TIMEOUT)
    assert process.returncode != 0  # torchrun itself reports the signal it got
    check_stopped_run(out, signal.SIGTERM, output)
    assert "Traceback" not in errors.split("Received 15 death signal")[0]
    run_to_end(train_command(corpus, out, "--resume", processes=2), environment)
    assert train_losses(out) == train_losses(reference)
    assert_identical(latest_weights(reference), latest_weights(out))


@pytest.mark.xdist_group("torchrun")
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux's /proc")
@pytest.mark.parametrize("signal_number", [signal.SIGUSR1, signal.SIGINT], ids=["USR1", "INT"])
def test_a_signal_to_one_rank_stops_all_of_them(
    signal_number: signal.Signals, corpus: Path, environment: dict[str, str], tmp_path: Path
) -> None:
    """SLURM may signal the processes one by one: rank 1 alone gets SIGUSR1, rank 0 stops too.
    Ctrl-C (SIGINT) under torchrun reaches the ranks at different moments: it is a stop signal
    there too, so no rank is left waiting in a collective."""
    out = tmp_path / "run"
    process = start(train_command(corpus, out, processes=2), environment)
    signal_when(
        process,
        lambda: len(train_losses(out)) >= 3,
        signal_number,
        pid=lambda: worker_pid(process.pid, rank=1),
    )
    output, errors = process.communicate(timeout=TIMEOUT)
    # Both workers exit 128 + the signal's number; torchrun reports a failed child.
    code = 128 + int(signal_number)
    assert process.returncode != 0
    assert f"exitcode  : {code}" in errors or f"exitcode: {code}" in errors.replace("  ", " "), (
        errors[-3000:]
    )
    check_stopped_run(out, signal_number, output)


# --- fine-tuning ----------------------------------------------------------------------------------


def test_finetuning_stops_on_sigterm_and_resumes_exactly(
    corpus: Path, environment: dict[str, str], tmp_path: Path
) -> None:
    tokenizer = train_char([corpus.read_text(encoding="utf-8")])
    torch.manual_seed(0)
    model = build_model(preset_config("tiny", vocab_size=tokenizer.vocab_size, **TINY_OVERRIDES))
    base = save_checkpoint(tmp_path / "base", model, tokenizer)
    data = tmp_path / "sft.jsonl"
    pairs = [(color, animal) for color in ("red", "blue", "green") for animal in ("cat", "dog")]
    data.write_text(
        "".join(
            json.dumps({"prompt": f"What color is the {animal}?", "completion": f"{color}."}) + "\n"
            for color, animal in pairs
        ),
        encoding="utf-8",
    )

    def command(out: Path, *extra: str) -> list[str]:
        flags = {
            "checkpoint": base,
            "data": data,
            "out": out,
            "lora_rank": 4,
            "lora_dropout": 0.1,
            "batch_size": 4,
            "max_steps": STEPS,
            "eval_every": 20,
            "save_every": 100,
            "sample_tokens": 4,
            "log_every": 1,
            "seed": 3,
            "threads": 1,
            "quiet": True,
        }
        return [sys.executable, "-m", "scratchlm", "finetune", *as_flags(flags), *extra]

    reference = tmp_path / "straight"
    run_to_end(command(reference), environment)
    out = tmp_path / "run"
    process = start(command(out), environment)
    signal_when(process, lambda: len(train_losses(out)) >= 3, signal.SIGTERM)
    output, errors = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 128 + signal.SIGTERM, errors[-2000:]
    step = check_stopped_run(out, signal.SIGTERM, output)
    assert (out / "checkpoints" / f"step_{step:06d}" / "adapter.safetensors").is_file()
    run_to_end(command(out, "--resume"), environment)
    assert train_losses(out) == train_losses(reference)
    adapters = [
        load_file(str(run / "checkpoints" / f"step_{STEPS:06d}" / "adapter.safetensors"))
        for run in (reference, out)
    ]
    assert_identical(*adapters)
    assert all(not torch.equal(tensor, torch.zeros_like(tensor)) for tensor in adapters[1].values())
