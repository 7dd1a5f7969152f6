"""`scratchlm eval --tasks`: a tiny checkpoint on a tiny task folder in the upstream formats, its
numbers checked against a naive scorer (one full forward per choice) on the same examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scratchlm.checkpoint import load_checkpoint, save_checkpoint
from scratchlm.cli import main
from scratchlm.evaluation.examples import LastWordExample, MultipleChoiceExample
from scratchlm.evaluation.tasks import load_task
from scratchlm.model import GPT, build_model
from scratchlm.tokenizer import Tokenizer
from tests.conftest import tiny_config
from tests.evaluation.test_scoring import naive_loglikelihood

ARC = [
    {
        "id": f"q{number}",
        "question": question,
        "choices": {"text": choices, "label": ["A", "B", "C"]},
        "answerKey": answer,
    }
    for number, (question, choices, answer) in enumerate(
        [
            ("What did Tom love?", ["his red ball", "the sea", "a cat"], "A"),
            ("Who helped Tom?", ["Lily", "his dog", "nobody at all"], "A"),
            ("Where did the ball roll?", ["the sky", "into the garden", "home"], "B"),
            ("How did they feel?", ["sad", "tired", "happy"], "C"),
        ]
    )
]
LAMBADA = [
    {"text": "Once upon a time, there was a little cat named Tom"},
    {"text": "Tom loved to play with his red ball"},
    {"text": "They were happy and played all day"},
]
MMLU = {
    "anatomy": [
        ["Which bone is in the arm?", "femur", "humerus", "tibia", "fibula", "1"],
        ["How many lungs do people have?", "one", "two", "three", "four", "1"],
    ],
    "virology": [["Which is a virus?", "influenza", "E. coli", "yeast", "mold", "0"]],
}


@pytest.fixture
def task_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "evals"
    (folder / "mmlu" / "test").mkdir(parents=True)
    (folder / "arc_easy_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ARC))
    (folder / "lambada_openai_test.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in LAMBADA)
    )
    for subject, rows in MMLU.items():
        lines = ["question,choice0,choice1,choice2,choice3,answer"]
        lines += [",".join(row) for row in rows]
        (folder / "mmlu" / "test" / f"{subject}_test.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def eval_checkpoint(tmp_path: Path, bpe_tokenizer: Tokenizer) -> Path:
    model = build_model(tiny_config("tiny", vocab_size=bpe_tokenizer.vocab_size, context_length=64))
    return save_checkpoint(tmp_path / "ckpt", model, bpe_tokenizer)


def encode(tokenizer: Tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's _encode_pair, written out independently of the scorer's."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer.encode(context + continuation)
    context_ids = tokenizer.encode(context)
    return context_ids, whole[len(context_ids) :]


def naive_accuracy(model: GPT, tokenizer: Tokenizer, name: str, task_dir: Path) -> float:
    from scratchlm.evaluation.scoring import LoglikelihoodRequest

    _, examples = load_task(name, task_data=task_dir)
    right = 0
    for example in examples:
        if isinstance(example, LastWordExample):
            request = LoglikelihoodRequest(
                *map(tuple, encode(tokenizer, example.context, example.target))
            )
            right += naive_loglikelihood(model, request).is_greedy
            continue
        assert isinstance(example, MultipleChoiceExample)
        sums = [
            naive_loglikelihood(
                model,
                LoglikelihoodRequest(*map(tuple, encode(tokenizer, c.context, c.continuation))),
            ).logprob
            for c in example.choices
        ]
        right += sums.index(max(sums)) == example.gold
    return right / len(examples)


def test_eval_tasks_json_matches_a_naive_scorer(
    eval_checkpoint: Path, task_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["eval", "-m", str(eval_checkpoint), "--task-data", str(task_dir), "--device", "cpu"]
    tasks = "arc_easy,lambada,mmlu_anatomy,mmlu_virology"
    assert main([*argv, "--tasks", tasks, "--batch-size", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    loaded = load_checkpoint(eval_checkpoint, "cpu")
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    by_task = {task["task"]: task for task in report["tasks"]}
    assert list(by_task) == ["arc_easy", "lambada", "mmlu_anatomy", "mmlu_virology"]
    assert by_task["arc_easy"]["examples"] == 4 and by_task["arc_easy"]["metric"] == "acc_norm"
    for name in by_task:
        assert by_task[name]["metrics"]["acc"] == pytest.approx(
            naive_accuracy(model, tokenizer, name, task_dir)
        )
    # MMLU pooled over its 3 questions, then every task centered and averaged.
    entries = {entry["task"]: entry for entry in report["aggregate_tasks"]}
    assert list(entries) == ["arc_easy", "lambada", "mmlu"]
    mmlu = (
        by_task["mmlu_anatomy"]["metrics"]["acc"] * 2 + by_task["mmlu_virology"]["metrics"]["acc"]
    ) / 3
    assert entries["mmlu"]["value"] == pytest.approx(mmlu)
    expected = (
        (by_task["arc_easy"]["metrics"]["acc_norm"] - 0.25) / 0.75
        + by_task["lambada"]["metrics"]["acc"]
        + (mmlu - 0.25) / 0.75
    ) / 3
    assert report["centered_aggregate"] == pytest.approx(expected)
    assert report["tokens"] > 0 and report["tokens_per_second"] > 0

    # The table: one row per task of the aggregate, LAMBADA's perplexity below its accuracy.
    assert main([*argv, "--tasks", "arc_easy,lambada,mmlu_anatomy,mmlu_virology"]) == 0
    table = capsys.readouterr().out
    assert "centered aggregate:" in table and "tokens/s" in table
    rows = [line.split() for line in table.splitlines()]
    assert rows[1][:2] == ["arc_easy", "acc_norm"] and rows[2][:1] == ["acc"]
    assert [row[0] for row in rows if row and row[0] in ("lambada", "perplexity", "mmlu")] == [
        "lambada",
        "perplexity",
        "mmlu",
    ]


def test_eval_tasks_errors_are_one_line(
    eval_checkpoint: Path, task_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["eval", "-m", str(eval_checkpoint), "--task-data", str(task_dir)]
    assert main([*argv, "--tasks", "hellaswag"]) == 2  # no hellaswag file in the folder
    assert "hellaswag" in capsys.readouterr().err
    assert main([*argv, "--tasks", "arc_easy", "--data", "x.txt"]) == 2
    assert "one of --data, --prompts or --tasks" in capsys.readouterr().err
    assert main([*argv, "--tasks", "arc_easy", "--num-fewshot", "-1"]) == 2
    assert main([*argv, "--tasks", "arc_easy", "--limit", "0"]) == 2
