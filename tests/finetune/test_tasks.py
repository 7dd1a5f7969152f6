"""Verifiable tasks and reward functions for `scratchlm rl`: hand-checked rewards, correct and
deterministic problems, held-out problems that are never train problems, and user rewards."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from scratchlm.data.stories.corpus import generate_stories
from scratchlm.data.stories.grammar import render_story, sample_story_plan
from scratchlm.data.stories.questions import QUESTION_KINDS
from scratchlm.errors import ScratchLMError
from scratchlm.finetune.rewards import REWARDS, normalize, resolve_reward
from scratchlm.finetune.tasks import (
    STORY_QA_MAX_WORDS,
    TASK_NAMES,
    TASKS,
    Problem,
    load_task,
    plan_key,
    story_qa_examples,
)

ARITHMETIC = TASKS["arithmetic"]


def reward(name: str, reply: str, answer: str) -> float:
    return REWARDS[name](reply, Problem(prompt="q", answer=answer))


# ---------------------------------------------------------------------------------------------------
# Rewards
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "answer", "expected"),
    [
        ("The answer is 1,234.", "1234", 1.0),
        ("1234", "1,234", 1.0),
        ("It costs $1,234.00 in all.", "1234", 1.0),
        ("It is -3.", "-3", 1.0),
        ("It is 3.", "-3", 0.0),
        ("3.0", "3", 1.0),
        ("2.5 apples", "2.50", 1.0),
        ("First 7, then 8.", "7", 0.0),  # the last number counts
        ("5-3=2", "2", 1.0),  # "-3" inside "5-3" is no negative number
        ("I don't know.", "7", 0.0),
        ("", "7", 0.0),
        ("12 34", "1234", 0.0),
        ("x2", "2", 0.0),
        ("She sold 24 + 48 = 72 clips.\n#### 72", "Natalia sold 48/2 = 24 clips.\n#### 72", 1.0),
        ("72", "Natalia sold 48/2 = 24 clips.\n#### 72", 1.0),
        ("24", "Natalia sold 48/2 = 24 clips.\n#### 72", 0.0),
    ],
)
def test_number_reward(reply: str, answer: str, expected: float) -> None:
    assert reward("number", reply, answer) == expected


def test_number_reward_needs_a_numeric_answer() -> None:
    with pytest.raises(ScratchLMError, match="numeric answer"):
        reward("number", "7", "seven")


@pytest.mark.parametrize(
    ("reply", "answer", "expected"),
    [
        ("Tom", "Tom", 1.0),
        (" tom. ", "Tom", 1.0),
        ("The ball.", "ball", 1.0),
        ("A teddy bear!", "teddy bear", 1.0),
        ("an owl", "owl", 1.0),
        ('"Tom."', "Tom", 1.0),
        ("teddy   bear", "teddy bear", 1.0),
        ("The cat was named Tom.", "Tom", 0.0),
        ("the red ball", "ball", 0.0),
        ("Tommy", "Tom", 0.0),
        ("", "Tom", 0.0),
    ],
)
def test_exact_reward(reply: str, answer: str, expected: float) -> None:
    assert reward("exact", reply, answer) == expected


def test_normalize_rule() -> None:
    assert normalize("  The  Red Ball?! ") == "red ball"
    assert normalize("the") == "the"  # an article alone is kept: nothing else would be left
    assert normalize("Theo.") == "theo"  # only a whole leading word is an article


@pytest.mark.parametrize(
    ("reply", "answer", "expected"),
    [
        ("The cat was named Tom.", "Tom", 1.0),
        ("Tom", "Tom", 1.0),
        ("It was Tommy.", "Tom", 0.0),
        ("He lost his red teddy bear!", "the teddy bear", 1.0),
        ("He lost his teddy.", "teddy bear", 0.0),
        ("", "Tom", 0.0),
    ],
)
def test_contains_reward(reply: str, answer: str, expected: float) -> None:
    assert reward("contains", reply, answer) == expected


@pytest.mark.parametrize(
    ("reply", "answer", "kind", "expected"),
    [
        ("The kid was named Ethan.", "Ethan", "name", 1.0),
        ("ethan", "Ethan", "friend", 1.0),
        ("The kid was named Ethan and Leo.", "Ethan", "name", 0.0),  # a rival name
        ("Ethan, Pip, Sam", "Ethan", "name", 0.0),
        ("It was Leo.", "Ethan", "name", 0.0),
        ("She lost her red ball.", "ball", "thing", 1.0),
        ("She lost her ball and her kite.", "ball", "thing", 0.0),
        ("They went to the park.", "park", "place", 1.0),
        ("They went to the park, then the beach.", "park", "place", 0.0),
    ],
)
def test_story_answer_reward_refuses_rival_answers(
    reply: str, answer: str, kind: str, expected: float
) -> None:
    """`contains` with no rival of the question's kind: listing answers collects nothing."""
    assert REWARDS["story-answer"](reply, Problem(prompt="q", answer=answer, kind=kind)) == expected


def test_story_qa_problems_carry_their_kind_and_others_refuse_story_answer() -> None:
    problems = TASKS["story-qa"].make_problems("heldout", 20, 0)
    assert problems and all(problem.kind in QUESTION_KINDS for problem in problems)
    for problem in problems:  # the reference answer, said plainly, is paid
        assert REWARDS["story-answer"](f"It was {problem.answer}.", problem) == 1.0
    with pytest.raises(ScratchLMError, match="story-qa problems"):
        REWARDS["story-answer"]("7", Problem(prompt="1 + 6?", answer="7"))


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Answer: 7", 1.0),
        ("Let me think.\nanswer:   Tom", 1.0),
        ("Answer:", 0.0),
        ("Answer:   \n", 0.0),
        ("The answer is 7.", 0.0),
        ("My Answer: 7", 0.0),
    ],
)
def test_format_reward(reply: str, expected: float) -> None:
    assert reward("format", reply, "7") == expected


def test_resolve_reward_defaults_names_and_regex() -> None:
    assert resolve_reward(None, ARITHMETIC) is REWARDS["number"]
    assert resolve_reward(None, TASKS["story-qa"]) is REWARDS["story-answer"]
    assert resolve_reward("exact", ARITHMETIC) is REWARDS["exact"]
    pattern = resolve_reward(r"regex:^\d+$", ARITHMETIC)
    problem = Problem(prompt="q", answer="7")
    assert pattern("42", problem) == 1.0
    assert pattern("42 apples", problem) == 0.0


def test_a_user_reward_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "my_rewards.py"
    path.write_text(
        textwrap.dedent(
            """
            def length_match(reply, problem):
                return 1 if len(reply) == len(problem.answer) else 0

            def wrong_type(reply, problem):
                return "yes"

            NOT_A_FUNCTION = 3
            """
        )
    )
    function = resolve_reward(f"{path}:length_match", ARITHMETIC)
    problem = Problem(prompt="q", answer="abc")
    assert function("xyz", problem) == 1.0
    assert isinstance(function("xyz", problem), float)
    assert function("xy", problem) == 0.0
    with pytest.raises(ScratchLMError, match=r"returned str 'yes'; return a float"):
        resolve_reward(f"{path}:wrong_type", ARITHMETIC)("a", problem)
    with pytest.raises(ScratchLMError, match="has no missing"):
        resolve_reward(f"{path}:missing", ARITHMETIC)
    with pytest.raises(ScratchLMError, match="not a function"):
        resolve_reward(f"{path}:NOT_A_FUNCTION", ARITHMETIC)


def test_a_user_reward_from_a_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "scratchlm_test_reward_module.py").write_text(
        "def shouts(reply, problem):\n    return float(reply.isupper())\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    function = resolve_reward("scratchlm_test_reward_module:shouts", ARITHMETIC)
    assert function("HEY", Problem("q", "a")) == 1.0
    assert function("hey", Problem("q", "a")) == 0.0


def test_a_file_is_imported_once(tmp_path: Path) -> None:
    path = tmp_path / "counted.py"
    counter = tmp_path / "imports.txt"
    path.write_text(
        f"with open({str(counter)!r}, 'a') as f:\n    f.write('x')\n"
        "def score(reply, problem):\n    return 0.5\n"
    )
    first = resolve_reward(f"{path}:score", ARITHMETIC)
    second = resolve_reward(f"{path}:score", ARITHMETIC)
    assert first("a", Problem("q", "a")) == second("b", Problem("q", "b")) == 0.5
    assert counter.read_text() == "x"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nope", "unknown reward 'nope'; use one of number, exact, contains, format"),
        ("regex:(", "not a valid regular expression"),
        ("no/such/file.py:f", "does not exist"),
        ("scratchlm_no_such_module_xyz:f", "cannot import module scratchlm_no_such_module_xyz"),
        ("module:", "expected module:function"),
        ("module:not-a-name", "expected module:function"),
    ],
)
def test_bad_reward_specs_are_one_line_errors(spec: str, message: str) -> None:
    with pytest.raises(ScratchLMError) as caught:
        resolve_reward(spec, ARITHMETIC)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_reward_file_that_raises_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text("raise RuntimeError('boom\\nsecond line')\n")
    with pytest.raises(ScratchLMError) as caught:
        resolve_reward(f"{path}:f", ARITHMETIC)
    assert "RuntimeError: boom" in str(caught.value)
    assert "\n" not in str(caught.value)


# ---------------------------------------------------------------------------------------------------
# Built-in tasks
# ---------------------------------------------------------------------------------------------------


def solve_word_problem(prompt: str) -> int:
    """A reference solver, independent of the generator: the two numbers and the verb decide."""
    a, b = (int(number) for number in re.findall(r"\d+", prompt))
    subtracts = re.search(r"\b(give|gives) \d+ to\b|\b(lose|loses|took)\b", prompt)
    return a - b if subtracts else a + b


def test_arithmetic_problems_are_right_and_small() -> None:
    problems = ARITHMETIC.problems("train", 500, seed=0)
    assert len(problems) == 500
    for problem in problems:
        assert problem.answer == str(solve_word_problem(problem.prompt)), problem
        assert 0 <= int(problem.answer) <= 20
        assert all(1 <= int(number) <= 20 for number in re.findall(r"\d+", problem.prompt))
        assert problem.prompt.endswith("?")
    # Several templates, both operations, and "1 ball" in the singular.
    assert {int(p.answer) < int(re.findall(r"\d+", p.prompt)[0]) for p in problems} == {True, False}
    assert any(re.search(r"\b1 [a-z]+[^s]\b", p.prompt) for p in problems)
    assert len({re.sub(r"\d+|[A-Z][a-z]+", "", p.prompt)[:20] for p in problems}) > 3


@pytest.mark.parametrize("name", ["arithmetic", "story-qa"])
def test_generated_problems_are_deterministic(name: str) -> None:
    task = TASKS[name]
    assert task.problems("train", 40, seed=5) == task.problems("train", 40, seed=5)
    assert task.problems("heldout", 10, seed=5) == task.problems("heldout", 10, seed=5)
    assert task.problems("train", 40, seed=5) != task.problems("train", 40, seed=6)
    # A shorter list is a prefix of a longer one: a count does not reshuffle.
    assert task.problems("train", 10, seed=5) == task.problems("train", 40, seed=5)[:10]


@pytest.mark.parametrize("name", ["arithmetic", "story-qa"])
def test_heldout_problems_are_never_train_problems(name: str) -> None:
    task = TASKS[name]
    count = 1500 if name == "arithmetic" else 400
    train = {p.prompt for seed in (0, 1) for p in task.problems("train", count, seed=seed)}
    heldout = [p.prompt for seed in (0, 1) for p in task.problems("heldout", 60, seed=seed)]
    assert not train & set(heldout)
    # Distinct within a split too.
    assert len(set(task.problems("train", count, seed=0))) == count


def test_story_qa_problems_ask_about_a_short_story_that_holds_the_answer() -> None:
    examples = story_qa_examples("heldout", 60, seed=0)
    kinds = set()
    for example in examples:
        problem = example.problem
        story, _, question = problem.prompt.rpartition("\n\n")
        assert question == example.question.question and story == example.story
        assert len(story.split()) <= STORY_QA_MAX_WORDS
        assert re.search(rf"\b{re.escape(problem.answer)}\b", story)
        kinds.add(example.question.kind)
    assert {"name", "kind", "place"} <= kinds
    assert [e.problem for e in examples] == TASKS["story-qa"].problems("heldout", 60, seed=0)


def test_story_qa_plans_are_disjoint_from_training_and_the_corpus() -> None:
    heldout = {plan_key(e.plan) for seed in (0, 1) for e in story_qa_examples("heldout", 100, seed)}
    train = {plan_key(e.plan) for e in story_qa_examples("train", 300, seed=0)}
    assert not heldout & train
    # The quickstart's corpus is generate_stories(seed=0); its instruction data uses the run seed
    # (1337 by default). Replay their plans (the same stream as the generators) and compare.
    for seed, count in ((0, 3000), (1337, 1000)):
        rng = random.Random(seed)
        corpus = []
        for _ in range(count):
            plan = sample_story_plan(rng)
            corpus.append((plan_key(plan), render_story(plan, rng)))
        assert [story for _, story in corpus[:3]] == list(generate_stories(3, seed=seed))
        assert not heldout & {key for key, _ in corpus}


def test_problems_checks_its_arguments() -> None:
    for split, count in (("test", 1), ("train", 0), ("train", -1)):
        with pytest.raises(ScratchLMError):
            ARITHMETIC.problems(split, count)


# ---------------------------------------------------------------------------------------------------
# Tasks from records
# ---------------------------------------------------------------------------------------------------


def write_jsonl(path: Path, records: Sequence[Mapping[str, object]]) -> str:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return str(path)


def test_gsm8k_from_a_file(tmp_path: Path) -> None:
    records = [
        {"question": f"Problem {index}?", "answer": f"Work {index}.\n#### {index * 1000:,}"}
        for index in range(20)
    ]
    task = load_task("gsm8k", write_jsonl(tmp_path / "gsm8k.jsonl", records))
    assert task.default_reward == "number"
    train = task.problems("train", 100, seed=0)
    heldout = task.problems("heldout", 100, seed=0)
    # 10% held out, all others to train; fewer than asked for: all there are.
    assert (len(train), len(heldout)) == (18, 2)
    assert not {p.prompt for p in train} & {p.prompt for p in heldout}
    by_prompt = {p.prompt: p.answer for p in train + heldout}
    assert by_prompt["Problem 3?"] == "3000"
    assert by_prompt["Problem 0?"] == "0"
    assert task.problems("train", 5, seed=1) == task.problems("train", 5, seed=1)
    assert task.problems("train", 18, seed=1) != task.problems("train", 18, seed=2)
    assert sorted(task.problems("train", 18, seed=1), key=str) == sorted(train, key=str)


def test_gsm8k_answer_without_a_final_number_names_the_line(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        [{"question": "a?", "answer": "#### 1"}, {"question": "b?", "answer": "no mark"}],
    )
    with pytest.raises(ScratchLMError, match=r"bad.jsonl:2: a GSM8K answer ends with"):
        load_task("gsm8k", path)


def test_file_task_reads_prompts_or_questions(tmp_path: Path) -> None:
    words = [{"prompt": f"Say word {i}.", "answer": f"word{i}"} for i in range(9)]
    words.append({"question": "Say word 9.", "answer": "word9"})
    words.append({"prompt": "Say word 0.", "answer": "duplicate, dropped"})
    task = load_task("file", write_jsonl(tmp_path / "words.jsonl", words))
    assert task.default_reward == "exact"
    problems = task.problems("train", 100) + task.problems("heldout", 100)
    assert len(problems) == 10
    assert Problem("Say word 9.", "word9") in problems
    assert Problem("Say word 0.", "word0") in problems
    numbers = [{"prompt": f"{i} + 1?", "answer": i + 1} for i in range(5)]
    assert load_task("file", write_jsonl(tmp_path / "n.jsonl", numbers)).default_reward == "number"


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"text": "x", "answer": "1"}], 'expected a "prompt" (or "question") string'),
        ([{"prompt": "x", "answer": None}], 'expected an "answer" string or number'),
        ([{"prompt": "x", "answer": "  "}], 'the "answer" is empty'),
        ([{"prompt": "x", "answer": "1"}], "a task needs at least 2"),
    ],
)
def test_bad_file_tasks_are_one_line_errors(
    tmp_path: Path, records: list[dict[str, object]], message: str
) -> None:
    with pytest.raises(ScratchLMError) as caught:
        load_task("file", write_jsonl(tmp_path / "bad.jsonl", records))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_load_task_errors() -> None:
    with pytest.raises(ScratchLMError, match="unknown task 'maths'; choose one of arithmetic, "):
        load_task("maths")
    with pytest.raises(ScratchLMError, match="generated offline"):
        load_task("arithmetic", "data.jsonl")
    with pytest.raises(ScratchLMError, match="task file needs --task-data"):
        load_task("file")
    assert load_task("story-qa") is TASKS["story-qa"]
    assert TASK_NAMES == ("arithmetic", "story-qa", "gsm8k", "file")
    assert all(task.default_reward in REWARDS and task.description for task in TASKS.values())


def test_tasks_and_rewards_import_no_torch() -> None:
    code = (
        "import sys; from scratchlm.finetune.tasks import TASK_NAMES; "
        "import scratchlm.finetune.rewards; "
        "TASK_NAMES and print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_gsm8k_from_a_dataset_uses_its_test_split_as_heldout(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    # A local dataset directory in the hub's layout: `datasets` reads train.jsonl and test.jsonl
    # as the train and test splits, as it reads openai/gsm8k's.
    for split, first in (("train", 0), ("test", 100)):
        records = [
            {"question": f"Q{index}?", "answer": f"so\n#### {index}"}
            for index in range(first, first + 5)
        ]
        write_jsonl(tmp_path / f"{split}.jsonl", records)
    task = load_task("gsm8k", f"hf:{tmp_path}")
    train = task.problems("train", 10, seed=0)
    heldout = task.problems("heldout", 10, seed=0)
    assert sorted(p.answer for p in train) == ["0", "1", "2", "3", "4"]
    assert sorted(p.answer for p in heldout) == ["100", "101", "102", "103", "104"]
