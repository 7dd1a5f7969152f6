"""Training under faults: SIGKILL at random moments, damaged checkpoints, loss spikes and NaNs,
and overfitting (early stopping)."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import SafetensorError

from scratchlm.checkpoint import file_sha256, load_checkpoint, verify_checkpoint
from scratchlm.cli import main
from scratchlm.data.stories.corpus import generate_stories
from scratchlm.errors import ScratchLMError
from scratchlm.training.run_config import TrainConfig
from scratchlm.training.setup import default_learning_rate
from scratchlm.training.trainer import Trainer
from tests.training.helpers import (
    TINY_MODEL,
    TINY_RUN,
    as_flags,
    assert_identical,
    latest_weights,
    records,
    tiny_run,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "stories.txt"
    path.write_text("\n<|endoftext|>\n".join(generate_stories(400, seed=9)), encoding="utf-8")
    return path


FAULT_RUN = {
    "max_steps": 30,
    "eval_tokens": 2048,
    "sample_tokens": 8,
    "save_every": 5,
    "log_every": 1,
    "warmup_steps": 3,
    "lr": 3e-3,
    "seed": 21,
}


def fault_run(corpus: Path, out: Path, **overrides: Any) -> TrainConfig:
    return tiny_run(corpus, out, **{**FAULT_RUN, **overrides})


# --- SIGKILL at random moments ----------------------------------------------------------------


def cli_arguments(corpus: Path, out: Path, *extra: str) -> list[str]:
    settings = {
        "preset": "tiny",
        "set": TINY_MODEL,
        "context_length": 64,
        "data": corpus,
        "tokenizer": "char",
        "out": out,
        "batch_size": 8,
        "dropout": 0.1,  # restoring the RNG state matters
        "max_steps": 60,
        "save_every": 7,
        "eval_every": 20,
        "eval_tokens": 2048,
        "sample_tokens": 8,
        "log_every": 1,
        "lr": 3e-3,
        "seed": 5,
        "threads": 1,
        "data_workers": 1,
        "quiet": True,
    }
    return [sys.executable, "-m", "scratchlm", "train", *as_flags(settings), *extra]


# Runs `python -m scratchlm ...` with each checksum of a checkpoint write taking 2 s longer, so
# that a kill lands between the files and config.json (what a crash mid-write leaves behind).
_SLOW_WRITES = """
import runpy, sys, time
import scratchlm.checkpoint as checkpoint
checksum = checkpoint.file_sha256
def slow_checksum(path):
    if path.parent.name.endswith(".tmp"):  # a write, not a verification
        time.sleep(2)
    return checksum(path)
checkpoint.file_sha256 = slow_checksum
sys.argv = ["scratchlm", *sys.argv[1:]]
runpy.run_module("scratchlm", run_name="__main__", alter_sys=True)
"""


def slow_checkpoint_writes(arguments: list[str]) -> list[str]:
    """`arguments` (a `python -m scratchlm` command line) with slowed checkpoint writes."""
    assert arguments[1:3] == ["-m", "scratchlm"]
    return [arguments[0], "-c", _SLOW_WRITES, *arguments[3:]]


def logged_steps(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return 0
    steps = [0]
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by the kill
            continue
        if record.get("kind") == "train":
            steps.append(record["step"])
    return steps[-1]


def kill_when(process: subprocess.Popen[bytes], ready: Any, timeout: float = 120.0) -> bool:
    """SIGKILL the process once ready() holds; False if it finished first."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if ready():
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.01)
    process.wait(timeout=60)
    return False


def test_sigkill_at_random_moments_then_resume_is_bit_identical(
    corpus: Path, tmp_path: Path
) -> None:
    straight = tmp_path / "straight"
    subprocess.run(cli_arguments(corpus, straight), check=True, capture_output=True)

    crashed = tmp_path / "crashed"
    rng = random.Random(1234)
    kills = 0
    # 1) during start-up, before any checkpoint exists
    process = subprocess.Popen(cli_arguments(corpus, crashed), stderr=subprocess.DEVNULL)
    kills += kill_when(process, lambda: (crashed / "run_config.json").is_file())
    # 2) at random training steps
    for _ in range(3):
        target = logged_steps(crashed) + rng.randint(2, 12)
        process = subprocess.Popen(
            cli_arguments(corpus, crashed, "--resume"), stderr=subprocess.DEVNULL
        )
        kills += kill_when(process, lambda target=target: logged_steps(crashed) >= target)
    # 3) in the middle of writing a checkpoint (checksumming is slowed down in that process)
    checkpoints = crashed / "checkpoints"
    process = subprocess.Popen(
        slow_checkpoint_writes(cli_arguments(corpus, crashed, "--resume")),
        stderr=subprocess.DEVNULL,
    )
    mid_write = kill_when(
        process,
        lambda: (
            checkpoints.is_dir()
            and any(path.name.endswith(".tmp") for path in checkpoints.iterdir())
        ),
    )
    assert mid_write, "the run finished before a checkpoint write could be interrupted"
    kills += 1
    assert kills >= 4
    # then to the end
    finish = subprocess.run(
        cli_arguments(corpus, crashed, "--resume"), capture_output=True, text=True
    )
    assert finish.returncode == 0, finish.stderr[-2000:]
    assert_identical(latest_weights(straight), latest_weights(crashed))
    # nothing half-written is left behind, and --resume of the finished run is a no-op
    assert not [path for path in checkpoints.iterdir() if path.name.endswith(".tmp")]
    again = subprocess.run(
        cli_arguments(corpus, crashed, "--resume"), capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr[-2000:]


# --- damaged checkpoints ------------------------------------------------------------------------


def test_a_corrupted_latest_checkpoint_falls_back_to_the_previous_one(
    corpus: Path, tmp_path: Path
) -> None:
    Trainer(fault_run(corpus, tmp_path / "straight", max_steps=20)).run()
    damaged = tmp_path / "interrupted"
    Trainer(fault_run(corpus, damaged, max_steps=20, stop_after_steps=15)).run()
    weights = damaged / "checkpoints" / "step_000015" / "model.safetensors"
    content = bytearray(weights.read_bytes())
    content[-100] ^= 0xFF  # one flipped byte inside a tensor: safetensors itself cannot tell
    weights.write_bytes(bytes(content))
    messages: list[str] = []
    trainer = Trainer(
        fault_run(corpus, damaged, max_steps=20, resume=True, quiet=False), log=messages.append
    )
    assert trainer.state.step == 10
    damaged_lines = [line for line in messages if "is damaged" in line]
    assert len(damaged_lines) == 1 and "step_000010" in damaged_lines[0]
    assert "checksum" in damaged_lines[0]
    trainer.run()
    assert_identical(latest_weights(tmp_path / "straight"), latest_weights(damaged))


def test_a_truncated_trainer_state_falls_back_too(corpus: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    Trainer(fault_run(corpus, run_dir, max_steps=20, stop_after_steps=10)).run()
    state = run_dir / "checkpoints" / "step_000010" / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:100])
    trainer = Trainer(fault_run(corpus, run_dir, max_steps=20, resume=True))
    assert trainer.state.step == 5


# --- loss spikes and NaNs -----------------------------------------------------------------------


def inject_loss(trainer: Trainer, change: Callable[[int, torch.Tensor], torch.Tensor]) -> None:
    """Pass every micro-batch loss through change(step being trained, loss)."""
    compute_loss = trainer.compute_loss

    def changed(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return change(trainer.state.step + 1, compute_loss(logits, targets))

    trainer.compute_loss = changed  # type: ignore[method-assign]


def test_spike_and_nan_backtrack_with_a_halved_learning_rate(corpus: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    trainer = Trainer(fault_run(corpus, run_dir, max_steps=30))
    injected: list[int] = []

    def hook(step: int, loss: torch.Tensor) -> torch.Tensor:
        # each fault fires once (a spike on two batches in a row): after the backtrack the same
        # step number trains normally
        if step == 17 and injected.count(17) < 2:
            injected.append(17)
            return loss * 20.0
        if step == 24 and 24 not in injected:
            injected.append(24)
            return loss * float("nan")
        return loss

    inject_loss(trainer, hook)
    result = trainer.run()
    assert result.steps == 30 and injected == [17, 17, 24]
    events = records(run_dir, "backtrack")
    assert [(event["reason"], event["step"], event["restored_step"]) for event in events] == [
        ("spike", 17, 15),
        ("nan", 24, 20),
    ]
    assert [event["lr_scale"] for event in events] == [0.5, 0.25]
    # The file holds steps 1-16 at scale 1, 16-23 after the first backtrack (restored at 15),
    # 21-30 after the second (restored at 20): the same step's learning rate halves each time.
    rates: dict[int, list[float]] = {}
    for record in records(run_dir, "train"):
        rates.setdefault(record["step"], []).append(record["lr"])
    assert len(rates[16]) == 2 and rates[16][1] == pytest.approx(0.5 * rates[16][0])
    assert len(rates[21]) == 2 and rates[21][1] == pytest.approx(0.5 * rates[21][0])
    assert len(rates[30]) == 1
    final = latest_weights(run_dir)
    assert all(torch.isfinite(tensor).all() for tensor in final.values())
    assert records(run_dir, "end")[-1]["backtracks"] == 2


def test_after_a_backtrack_to_an_early_step_its_losses_are_not_spikes(
    corpus: Path, tmp_path: Path
) -> None:
    """A fine-tune checkpoints rarely, so a spike can send it back to step 0, whose losses are
    far above the late moving average. That average must not outlive the weights it measured:
    one backtrack, not a cascade of them ending in "diverged"."""
    run_dir = tmp_path / "run"
    trainer = Trainer(fault_run(corpus, run_dir, save_every=100))
    backtracked: list[int] = []

    def hook(step: int, loss: torch.Tensor) -> torch.Tensor:
        if step == 22 and len(backtracked) < 2:
            backtracked.append(step)  # two batches in a row: a backtrack
            return loss * 20.0
        if backtracked and step <= 3:
            return loss * 4.0  # the restored early weights: as high as a fresh fine-tune's start
        return loss

    inject_loss(trainer, hook)
    result = trainer.run()
    events = records(run_dir, "backtrack")
    assert [(event["step"], event["restored_step"]) for event in events] == [(22, 0)]
    assert result.steps == 30


def test_one_outlier_batch_is_skipped_without_a_backtrack(corpus: Path, tmp_path: Path) -> None:
    """A single batch far above the average (as a fine-tune's batch of one-word answers) is
    dropped and its step retried on the next batch; no checkpoint is reloaded."""
    run_dir = tmp_path / "run"
    trainer = Trainer(fault_run(corpus, run_dir))
    outliers: list[int] = []

    def hook(step: int, loss: torch.Tensor) -> torch.Tensor:
        if step in (14, 25) and step not in outliers:
            outliers.append(step)
            return loss * 20.0
        return loss

    inject_loss(trainer, hook)
    result = trainer.run()
    assert result.steps == 30 and outliers == [14, 25]
    assert records(run_dir, "backtrack") == []
    skipped = records(run_dir, "skipped_batch")
    assert [event["step"] for event in skipped] == [14, 25]
    assert all(event["loss"] > 3 * event["moving_average"] for event in skipped)
    # The step was trained once, on the batch after the outlier.
    assert [record["step"] for record in records(run_dir, "train")] == list(range(1, 31))


def test_backtracking_gives_up_after_the_limit(corpus: Path, tmp_path: Path) -> None:
    trainer = Trainer(fault_run(corpus, tmp_path / "run", max_backtracks=2))
    inject_loss(trainer, lambda step, loss: loss * float("nan") if step > 8 else loss)
    with pytest.raises(ScratchLMError, match="after 2 backtracks"):
        trainer.run()
    assert len(records(tmp_path / "run", "backtrack")) == 2


def test_without_backtracking_a_nan_stops_the_run(corpus: Path, tmp_path: Path) -> None:
    trainer = Trainer(fault_run(corpus, tmp_path / "run", spike_factor=0))
    inject_loss(trainer, lambda step, loss: loss * float("nan") if step == 4 else loss)
    with pytest.raises(ScratchLMError, match="diverged"):
        trainer.run()


# --- early stopping -----------------------------------------------------------------------------


class ScriptedValidation(Trainer):
    """Validation losses from a script: the training is real, the overfitting is staged."""

    script = (3.0, 2.5, 2.6, 2.7, 2.8, 2.9)

    def evaluate(self) -> dict[str, float]:
        real = super().evaluate()
        index = self.state.step // self.config.eval_every - 1
        loss = self.script[index]
        return {**real, "val_loss": loss, "val_perplexity": math.exp(loss)}


def test_early_stopping_keeps_the_best_model(corpus: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = fault_run(corpus, run_dir, max_steps=60, eval_every=5, early_stop_patience=2)
    result = ScriptedValidation(config).run()
    # evals at 5 (3.0), 10 (2.5, best), 15 (2.6), 20 (2.7): two without improvement -> stop
    assert result.steps == 20
    assert result.checkpoint == run_dir / "best"
    assert result.best_val_loss == 2.5
    best = json.loads((run_dir / "best" / "config.json").read_text(encoding="utf-8"))
    assert best["training"]["step"] == 10
    (stop,) = records(run_dir, "early_stop")
    assert stop == {
        "kind": "early_stop",
        "step": 20,
        "best_step": 10,
        "best_val_loss": 2.5,
        "patience": 2,
    }
    assert records(run_dir, "end")[-1]["stopped_early"] is True
    # resuming a run that stopped early is a no-op
    again = ScriptedValidation(
        fault_run(corpus, run_dir, max_steps=60, eval_every=5, early_stop_patience=2, resume=True)
    ).run()
    assert again.steps == 20


# --- memory ---------------------------------------------------------------------------------------


def test_out_of_memory_mid_run_names_the_flags_to_change(corpus: Path, tmp_path: Path) -> None:
    trainer = Trainer(fault_run(corpus, tmp_path / "run"))

    def exhaust(step: int, loss: torch.Tensor) -> torch.Tensor:
        if step == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return loss

    inject_loss(trainer, exhaust)
    with pytest.raises(ScratchLMError) as caught:
        trainer.run()
    message = str(caught.value)
    assert "\n" not in message and "--batch-size 8" in message
    assert "--activation-checkpointing" in message and "--micro-batch auto" in message


def test_micro_batch_auto_activation_checkpointing_and_token_weighting_train(
    corpus: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    config = tiny_run(
        corpus,
        run_dir,
        max_steps=6,
        micro_batch="auto",
        tokens_per_step=2048,
        activation_checkpointing=True,
        token_weighting="inverse-freq",
        token_weighting_power=0.5,
    )
    trainer = Trainer(config)
    # 2048 tokens per step / 64 context = 32 sequences: plenty of RAM here, so one micro-batch
    assert trainer.config.batch_size == 32 and trainer.accumulation == 1
    assert trainer.token_weights is not None
    assert trainer.token_weights.shape == (trainer.model_config.padded_vocab_size,)
    result = trainer.run()
    assert result.steps == 6 and math.isfinite(result.final_train_loss)
    resolved = json.loads((run_dir / "run_config.json").read_text(encoding="utf-8"))["resolved"]
    assert resolved["batch_size"] == 32 and resolved["tokens_per_step"] == 2048


def test_default_learning_rate_follows_the_optimizer_and_a_resume_keeps_its_rate(
    corpus: Path, tmp_path: Path
) -> None:
    assert default_learning_rate(1_000_000, "adamw") == 3e-3
    assert default_learning_rate(1_000_000, "muon") == 6e-3  # Muon: twice AdamW's rate
    assert default_learning_rate(20_000_000, "muon") == 2e-3
    assert default_learning_rate(124_000_000, "muon") == 6e-4  # not measured: AdamW's rate
    run_dir = tmp_path / "run"
    trainer = Trainer(tiny_run(corpus, run_dir, max_steps=4, save_every=2, optimizer="muon"))
    assert trainer.learning_rate == 6e-3
    trainer.run()
    # As if the run had started under other defaults: a resume keeps the rate it started with.
    path = run_dir / "run_config.json"
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved["resolved"]["learning_rate"] == 6e-3
    saved["resolved"]["learning_rate"] = 4e-3
    path.write_text(json.dumps(saved), encoding="utf-8")
    resumed = Trainer(tiny_run(corpus, run_dir, max_steps=6, save_every=2, resume=True))
    assert resumed.learning_rate == 4e-3 and resumed.optimizer_kind == "muon"
    assert resumed.run().steps == 6


# --- one line for every fault: a full disk, damaged resume state, --out a file -------------------


def fault_flags(corpus: Path, out: Path, **overrides: Any) -> list[str]:
    """`scratchlm train` flags for `fault_run(corpus, out, **overrides)`."""
    settings = {**TINY_RUN, **FAULT_RUN, "data": corpus, "out": out, **overrides}
    return ["train", *as_flags(settings)]


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def full_disk_in_safetensors(*args: Any, **kwargs: Any) -> None:
    # what safetensors raises on a full disk (measured on a tmpfs)
    raise SafetensorError(
        "Error while serializing: I/O error: No space left on device (os error 28)"
    )


def io_error_in_torch_save(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.EIO, os.strerror(errno.EIO))


@pytest.mark.parametrize(
    ("patch", "reason", "advice"),
    [
        (
            ("scratchlm.checkpoint.save_file", full_disk_in_safetensors),
            "No space left on device",
            "free space or point --out elsewhere",
        ),
        (
            ("torch.save", io_error_in_torch_save),
            os.strerror(errno.EIO),
            "point --out at a writable directory",
        ),
    ],
    ids=["ENOSPC", "EIO"],
)
def test_a_failed_checkpoint_write_is_one_line_and_harms_nothing(
    corpus: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    patch: tuple[str, Any],
    reason: str,
    advice: str,
) -> None:
    run_dir = tmp_path / "run"
    Trainer(fault_run(corpus, run_dir, max_steps=20, stop_after_steps=10)).run()
    previous = run_dir / "checkpoints" / "step_000010"
    before = {path.name: path.read_bytes() for path in previous.iterdir()}
    with monkeypatch.context() as patched:
        patched.setattr(*patch)
        assert main([*fault_flags(corpus, run_dir, max_steps=20), "--resume"]) == 2
    line = one_error_line(capsys)
    target = run_dir / "checkpoints" / "step_000015"
    assert line == (
        f"error: could not save the checkpoint to {target}: {reason}; {advice}; "
        f"the previous checkpoint {previous} is intact"
    )
    # nothing saved before is touched, nothing half-written is left
    assert {path.name: path.read_bytes() for path in previous.iterdir()} == before
    assert (run_dir / "latest").read_text(encoding="utf-8").strip() == "checkpoints/step_000010"
    assert not target.exists()
    assert not [path for path in (run_dir / "checkpoints").iterdir() if path.name.endswith(".tmp")]
    assert verify_checkpoint(previous) is None
    load_checkpoint(run_dir / "checkpoints" / "step_000010")
    # with the disk fixed, the resume ends where a run never interrupted ends
    assert main([*fault_flags(corpus, run_dir, max_steps=20), "--resume"]) == 0
    Trainer(fault_run(corpus, tmp_path / "straight", max_steps=20)).run()
    assert_identical(latest_weights(tmp_path / "straight"), latest_weights(run_dir))


def test_a_full_disk_outside_checkpoints_is_one_line_too(
    corpus: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_dir = tmp_path / "run"
    metrics = run_dir / "metrics.jsonl"

    def full(self: Any, record: dict[str, Any]) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(metrics))

    monkeypatch.setattr("scratchlm.training.metrics.MetricsLogger.log", full)
    assert main(fault_flags(corpus, run_dir, max_steps=4)) == 2
    assert one_error_line(capsys) == (
        f"error: could not write {metrics}: No space left on device; free space or point --out "
        "elsewhere; the checkpoints saved so far are intact"
    )
    assert verify_checkpoint(run_dir / "checkpoints" / "step_000000") is None


@pytest.fixture
def small_disk(small_tmpfs: Callable[[str], Path]) -> Path:
    return small_tmpfs("8m")


def test_a_full_disk_while_saving_is_one_line_in_a_real_process(
    corpus: Path, small_disk: Path, tmp_path: Path
) -> None:
    run_dir = small_disk / "run"
    common = {"max_steps": 20, "eval_every": 100, "sample_tokens": 0}
    Trainer(fault_run(corpus, run_dir, stop_after_steps=5, **common)).run()
    previous = run_dir / "checkpoints" / "step_000005"
    # fill the disk, then leave 64 KiB: enough for the metrics, far too little for a checkpoint
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 65536)
    os.truncate(filler, max(0, filler.stat().st_size - 65536))
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "scratchlm", *fault_flags(corpus, run_dir, **common)]
    result = subprocess.run(
        [*command, "--resume"], capture_output=True, text=True, env=environment, timeout=300
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [
        f"error: could not save the checkpoint to {run_dir / 'checkpoints' / 'step_000010'}: "
        "No space left on device; free space or point --out elsewhere; the previous checkpoint "
        f"{previous} is intact"
    ], result.stderr[-2000:]
    assert verify_checkpoint(previous) is None
    load_checkpoint(previous)
    # space freed: the run resumes from the intact checkpoint and finishes
    filler.unlink()
    finished = subprocess.run(
        [*command, "--resume"], capture_output=True, text=True, env=environment, timeout=300
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert records(run_dir, "end")[-1]["step"] == 20


def rewrite_trainer_state(checkpoint: Path, content: bytes) -> None:
    """Replace trainer_state.pt and record its checksum, as a writer of another version would."""
    path = checkpoint / "trainer_state.pt"
    path.write_bytes(content)
    config_path = checkpoint / "config.json"
    metadata = json.loads(config_path.read_text(encoding="utf-8"))
    metadata["checksums"]["trainer_state.pt"] = file_sha256(path)
    config_path.write_text(json.dumps(metadata), encoding="utf-8")


def saved_bytes(value: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda state: {k: v for k, v in state.items() if k != "optimizer"}, "lacks optimizer"),
        (lambda state: [1, 2, 3], "holds a list, not the trainer's state"),
        (lambda state: {**state, "step": "ten"}, "holds a str as step, not a number"),
        (
            lambda state: {**state, "loader": {"cursor": "nowhere"}},
            "does not fit this run (",
        ),
    ],
    ids=["missing-key", "not-a-dict", "wrong-type", "foreign-loader"],
)
def test_an_unusable_resume_state_is_one_line(
    corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    damage: Callable[[dict[str, Any]], Any],
    expected: str,
) -> None:
    run_dir = tmp_path / "run"
    Trainer(fault_run(corpus, run_dir, max_steps=20, stop_after_steps=10)).run()
    checkpoint = run_dir / "checkpoints" / "step_000010"
    state = torch.load(checkpoint / "trainer_state.pt", weights_only=True)
    rewrite_trainer_state(checkpoint, saved_bytes(damage(state)))
    run_config = (run_dir / "run_config.json").read_bytes()
    assert main([*fault_flags(corpus, run_dir, max_steps=20), "--resume"]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: cannot resume from {checkpoint}: its trainer_state.pt ")
    assert expected in line and "Move that checkpoint out of" in line, line
    # nothing was written: the run directory is as it was
    assert (run_dir / "run_config.json").read_bytes() == run_config
    assert (run_dir / "latest").read_text(encoding="utf-8").strip() == "checkpoints/step_000010"


def test_a_resume_state_of_garbage_bytes_is_one_line(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    Trainer(fault_run(corpus, run_dir, max_steps=20, stop_after_steps=10)).run()
    rewrite_trainer_state(run_dir / "checkpoints" / "step_000010", b"\x00garbage" * 100)
    assert main([*fault_flags(corpus, run_dir, max_steps=20), "--resume"]) == 2
    assert "the file is damaged, resume from an earlier checkpoint" in one_error_line(capsys)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "is damaged (not valid JSON: "),
        ("[1, 2]", "is damaged (not a JSON object of settings)"),
        ('{"seed": "abc"}', "seed must be an integer, got 'abc'; the file is damaged"),
        (
            '{"resolved": {"learning_rate": "fast"}}',
            "resolved.learning_rate must be a float, got 'fast'; the file is damaged",
        ),
    ],
    ids=["not-json", "a-list", "wrong-type", "wrong-resolved-type"],
)
def test_a_damaged_run_config_is_one_line(
    corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    expected: str,
) -> None:
    run_dir = tmp_path / "run"
    Trainer(fault_run(corpus, run_dir, max_steps=10, stop_after_steps=5)).run()
    (run_dir / "run_config.json").write_text(content, encoding="utf-8")
    assert main([*fault_flags(corpus, run_dir, max_steps=10), "--resume"]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: {run_dir / 'run_config.json'}"), line
    assert expected in line and line.endswith(
        "restore it, or delete it (--resume then reads the settings saved in the latest checkpoint)"
    ), line
    # the advice works: the checkpoint's copy of the settings (Muon, its learning rate) is used
    (run_dir / "run_config.json").unlink()
    assert main([*fault_flags(corpus, run_dir, max_steps=10), "--resume"]) == 0
    assert records(run_dir, "end")[-1]["step"] == 10
    resolved = json.loads((run_dir / "run_config.json").read_text(encoding="utf-8"))["resolved"]
    assert resolved["optimizer"] == "muon" and resolved["learning_rate"] == FAULT_RUN["lr"]


def test_out_pointing_at_a_file_is_one_line(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    existing = tmp_path / "notes.txt"
    existing.write_text("mine\n", encoding="utf-8")
    assert main(fault_flags(corpus, existing)) == 2
    assert one_error_line(capsys) == (
        f"error: --out {existing} is not a directory; pass a directory for --out (it is created "
        "if missing) or move the file away"
    )
    assert main([*fault_flags(corpus, existing), "--resume"]) == 2
    assert "is not a directory" in one_error_line(capsys)
    below = existing / "run"
    assert main(fault_flags(corpus, below)) == 2
    assert f"is not a directory ({existing} is a file)" in one_error_line(capsys)
    assert existing.read_text(encoding="utf-8") == "mine\n"


def test_quiet_still_shows_that_a_damaged_checkpoint_was_skipped(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    Trainer(fault_run(corpus, run_dir, max_steps=20, stop_after_steps=15)).run()
    weights = run_dir / "checkpoints" / "step_000015" / "model.safetensors"
    content = bytearray(weights.read_bytes())
    content[-100] ^= 0xFF
    weights.write_bytes(bytes(content))
    capsys.readouterr()
    assert main([*fault_flags(corpus, run_dir, max_steps=20, quiet=True), "--resume"]) == 0
    out = capsys.readouterr().out
    damaged = [line for line in out.splitlines() if "is damaged" in line]
    assert len(damaged) == 1 and "step_000015" in damaged[0] and "step_000010" in damaged[0]
    assert "resuming" not in out  # progress stays quiet
