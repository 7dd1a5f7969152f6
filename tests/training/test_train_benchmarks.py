"""--eval-tasks: benchmark tasks scored at each evaluation of a tiny run. The logged numbers must
equal `run_benchmarks` on the checkpoint saved at that step, and scoring must not touch the
training trajectory (bit-identical losses and weights with and without it, and across a resume)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scratchlm.checkpoint import load_checkpoint
from scratchlm.cli import main
from scratchlm.data.stories.corpus import generate_stories
from scratchlm.evaluation.scoring import run_benchmarks
from scratchlm.evaluation.tasks import load_task
from scratchlm.report import write_report
from scratchlm.training.trainer import train
from tests.training.helpers import (
    as_flags,
    assert_identical,
    latest_weights,
    records,
    tiny_run,
    train_losses,
)

WORDS = [
    "cat",
    "dog",
    "ball",
    "tree",
    "house",
    "garden",
    "sun",
    "rain",
    "red",
    "blue",
    "happy",
    "sad",
    "little",
    "big",
    "run",
    "play",
]
LIMIT = 10  # of the 14 examples written per task: the limit must cut
TASKS = "arc_easy,hellaswag"
# dropout > 0: scoring that moved the RNG would change the masks, and so the losses.
COMMON: dict[str, Any] = {
    "max_steps": 6,
    "batch_size": 4,
    "eval_tokens": 512,
    "eval_every": 2,
    "save_every": 2,
    "keep_checkpoints": 10,
    "log_every": 1,
    "dropout": 0.1,
    "sample_tokens": 8,
    "threads": 1,  # the machine is shared: more threads than cores would only contend
}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def write_tasks(folder: Path) -> Path:
    """14 ARC-Easy and 14 HellaSwag examples in their upstream formats (tests/evaluation's)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)

    def phrase(length: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(length))

    arc = [
        {
            "id": f"q{number}",
            "question": f"What did the {phrase(2)} see?",
            "choices": {
                "text": [phrase(rng.randint(1, 4)) for _ in range(4)],
                "label": list("ABCD"),
            },
            "answerKey": rng.choice("ABCD"),
        }
        for number in range(14)
    ]
    hellaswag = [
        {
            "ind": number,
            "activity_label": "Playing",
            "ctx_a": f"The {phrase(3)}.",
            "ctx_b": "then the",
            "label": rng.randrange(4),
            "endings": [phrase(rng.randint(2, 5)) for _ in range(4)],
        }
        for number in range(14)
    ]
    write_jsonl(folder / "arc_easy_test.jsonl", arc)
    write_jsonl(folder / "hellaswag_val.jsonl", hellaswag)
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """The same tiny run three times: without tasks, with tasks, and with tasks paused after
    step 3 and resumed."""
    root = tmp_path_factory.mktemp("benchmarks")
    corpus = root / "stories.txt"
    corpus.write_text("\n<|endoftext|>\n".join(generate_stories(300, seed=3)), encoding="utf-8")
    tasks = write_tasks(root / "evals")
    with_tasks = {"eval_tasks": TASKS, "eval_tasks_limit": LIMIT, "eval_task_data": str(tasks)}
    paths = {name: root / name for name in ("plain", "tasks", "resumed")}
    with pytest.MonkeyPatch.context() as patch:
        # the autouse cache fixture is function-scoped; keep this module-scoped run hermetic too
        patch.setenv("SCRATCHLM_CACHE", str(root / "cache"))
        train(tiny_run(corpus, paths["plain"], **COMMON))
        train(tiny_run(corpus, paths["tasks"], tensorboard=True, **COMMON, **with_tasks))
        paused = {**COMMON, **with_tasks, "stop_after_steps": 3}
        train(tiny_run(corpus, paths["resumed"], **paused))
        train(tiny_run(corpus, paths["resumed"], resume=True, **COMMON, **with_tasks))
    yield {**paths, "task_data": tasks, "corpus": corpus}


def test_scoring_leaves_the_training_trajectory_bit_identical(runs: dict[str, Path]) -> None:
    plain, scored = train_losses(runs["plain"]), train_losses(runs["tasks"])
    assert sorted(plain) == list(range(1, 7))
    assert plain == scored  # exact floats, every step
    assert_identical(latest_weights(runs["plain"]), latest_weights(runs["tasks"]))
    # The validation loss and the seeded sample do not move either.
    for without, with_tasks in zip(
        records(runs["plain"], "eval"), records(runs["tasks"], "eval"), strict=True
    ):
        assert without["val_loss"] == with_tasks["val_loss"]
        assert without["sample"] == with_tasks["sample"]
        assert not any(key.startswith("task") for key in without)


def test_a_resumed_run_with_tasks_stays_bit_identical(runs: dict[str, Path]) -> None:
    assert train_losses(runs["resumed"]) == train_losses(runs["tasks"])
    assert_identical(latest_weights(runs["tasks"]), latest_weights(runs["resumed"]))
    # Each evaluation after the resume scores the same numbers as the straight run's.
    straight = {r["step"]: r for r in records(runs["tasks"], "eval")}
    for record in records(runs["resumed"], "eval"):
        if record["step"] in straight:
            assert (
                record["task/centered_aggregate"]
                == straight[record["step"]]["task/centered_aggregate"]
            )


def test_logged_values_equal_run_benchmarks_on_that_steps_checkpoint(
    runs: dict[str, Path],
) -> None:
    evals = records(runs["tasks"], "eval")
    assert [record["step"] for record in evals] == [2, 4, 6]  # the final evaluation included
    tasks = [load_task(name, task_data=runs["task_data"], limit=LIMIT) for name in TASKS.split(",")]
    for record in evals:
        loaded = load_checkpoint(runs["tasks"] / "checkpoints" / f"step_{record['step']:06d}")
        # the trainer scores batch_size continuations per forward: the same batches here
        report = run_benchmarks(loaded.model, loaded.tokenizer, tasks, batch_size=4)
        expected = {"task/centered_aggregate": report.aggregate}
        for entry in report.entries:
            expected[f"task/{entry.name}/{entry.metric}"] = entry.value
            expected[f"task/{entry.name}/centered"] = entry.centered
        logged = {key: value for key, value in record.items() if key.startswith("task/")}
        assert logged == expected, record["step"]
        assert set(logged) == {
            "task/arc_easy/acc_norm",
            "task/arc_easy/centered",
            "task/hellaswag/acc_norm",
            "task/hellaswag/centered",
            "task/centered_aggregate",
        }
        assert record["task_info"] == {
            "arc_easy": {"metric": "acc_norm", "chance": 0.25, "examples": LIMIT},
            "hellaswag": {"metric": "acc_norm", "chance": 0.25, "examples": LIMIT},
        }
        assert record["task_seconds"] > 0


def test_tensorboard_gets_the_task_scalars(runs: dict[str, Path]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(runs["tasks"] / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"eval/task/arc_easy/acc_norm", "eval/task/centered_aggregate"} <= set(tags)
    logged = [r["task/centered_aggregate"] for r in records(runs["tasks"], "eval")]
    found = [event.value for event in events.Scalars("eval/task/centered_aggregate")]
    assert found == pytest.approx(logged, abs=1e-6)  # TensorBoard stores float32


def test_the_report_shows_the_benchmarks(runs: dict[str, Path], tmp_path: Path) -> None:
    paths = write_report(runs["tasks"], out=tmp_path, bench=False)
    markdown = paths.markdown.read_text(encoding="utf-8")
    last = records(runs["tasks"], "eval")[-1]
    value = last["task/arc_easy/acc_norm"]
    assert "## Benchmarks" in markdown
    assert "| task | metric | value | chance | centered | examples |" in markdown
    assert f"| arc_easy | acc_norm | {value:.4f} | 0.25 |" in markdown
    assert f"| 6 | {last['task/arc_easy/centered']:.4f} |" in markdown  # the per-step table
    html = paths.html.read_text(encoding="utf-8")
    assert 'id="benchmarks"' in html and 'id="plot-benchmarks"' in html


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--eval-tasks", "hellaswag,arc_eazy"], "--eval-tasks: unknown task 'arc_eazy'"),
        (["--eval-tasks", "arc_easy", "--eval-tasks-limit", "0"], "--eval-tasks-limit must be"),
        (["--eval-task-data", "evals"], "--eval-task-data needs --eval-tasks"),
        (["--eval-tasks", "piqa", "--eval-task-data", "{evals}"], "piqa"),  # no piqa file
        (["--eval-tasks", "arc_easy", "--eval-task-data", "{missing}"], "is not a directory"),
    ],
)
def test_task_mistakes_fail_in_one_line_before_training(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tasks = write_tasks(tmp_path / "evals")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("no data is read before the tasks are", encoding="utf-8")
    argv = ["train", *as_flags({"data": corpus, "out": tmp_path / "run", "quiet": True})]
    filled = [flag.format(evals=tasks, missing=tmp_path / "nowhere") for flag in flags]
    assert main([*argv, *filled]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error, error
    assert not (tmp_path / "run").exists()  # nothing tokenized, no run directory
