"""Verifiable tasks for `scratchlm rl`: problems whose answers a plain Python function can check.

A `Task` makes `Problem`s (a prompt, sent as the user message through the chat template, and the
reference answer a reward function checks the reply against) for a split, "train" or "heldout":

- `arithmetic`: one-step word problems with small numbers, generated offline from the story
  world's names and things ("Tom has 3 balls. He gets 4 more. How many balls does Tom have now?"
  -> "7"). Operands run from 1 to 20 and results from 0 to 20: a ~1M-parameter chat model can
  learn these within CPU minutes. Reward: `number`. RL needs some reward to start from, and the
  quickstart's chat model has never seen a digit (measured: none in 200 sampled replies), so
  fine-tune it on some train problems first (`Problem`s make instruction/output records).
- `story-qa`: a short story from the story world, asked one question that the story answers
  (`scratchlm.data.stories.questions`): "What is the name of the cat in the story?" -> "Tom".
  Reward: `contains` (see below).
- `gsm8k`: grade-school math word problems from GSM8K records ({"question", "answer"}, the answer
  ending "#### 72"); the reference is the number after "####". By default `hf:openai/gsm8k:main`,
  whose train split gives the train problems and whose test split the held-out ones (so does any
  `hf:` dataset); a local file is split as `file` splits. Reward: `number`.
- `file` (`load_task("file", data)`): any records file with {"prompt", "answer"} or
  {"question", "answer"} (`read_records`: .jsonl, .jsonl.gz, .json, hf:NAME), deduplicated by
  prompt; a seeded random 10% (at least one) is held out, the same split for every `seed` of
  `problems`. An answer ending in GSM8K's "#### N" is kept as N. Reward: `number` when every
  answer is a number, else `exact`.

The prompt is the problem text alone; the chat template adds the roles. No instruction suffix
("Answer with a number.") is added: `number` takes the last number of any reply, and `contains`
finds the answer in any sentence, so the replies a chat model already writes ("Tom has 7 balls.",
"The cat was named Tom.") are checkable as they are.

Why `story-answer` for story-qa: the quickstart's chat model answers story questions in a
sentence ("The kid was named Ethan."), as its instruction data does. `exact` would score every
such reply 0, right or wrong, and GRPO learns nothing from a group whose rewards are all equal.
`contains` pays for the answer anywhere in the reply, so a policy could learn to list many names
to collect it. `story-answer` pays for the answer as `contains` does, but not when the reply also
gives a rival answer of the question's kind (another name, kind, object, color or place of the
story world): the judgement of the story-qa evaluation (`scratchlm eval --tasks story-qa`).

Held-out problems never equal train problems, by two means: the two splits draw from different
seeds (each split has its own string seed, a seed space disjoint from the integer seeds the corpus
and the instruction data use), and a problem belongs to a split by a hash of its text (arithmetic:
the prompt; story-qa: the story's plan, its cast, arc and object), so the same problem drawn by
both is kept by one only. Within a split, problems are deduplicated by prompt.

Determinism: every choice goes through one `random.Random` per call, seeded with a string (Python
hashes a string seed with SHA-512, the same on every version and platform), using only `choice`,
`random` and `shuffle` over tuples, as in `scratchlm.data.stories`. The same (split, count, seed)
gives the same problems everywhere.

This module imports neither torch nor the reward functions (`scratchlm.finetune.rewards` imports
it): `TASK_NAMES` is importable for argparse choices at no cost.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

from scratchlm.errors import ScratchLMError

if TYPE_CHECKING:
    from scratchlm.data.stories.grammar import StoryPlan
    from scratchlm.data.stories.questions import StoryQuestion

T = TypeVar("T")

SPLITS = ("train", "heldout")
# One problem in HELDOUT_BUCKETS belongs to the held-out split (by the hash of its text).
HELDOUT_BUCKETS = 10
# A file task holds out this share of its (deduplicated) records, at least one.
FILE_HELDOUT_SHARE = 0.1
# A story-qa story has at most this many words: with its question, its answer and the chat
# template it stays under 240 tokens of the quickstart's 2k BPE (measured: at most 209 tokens for
# the story, 230 for the whole conversation), inside a 256-token context.
STORY_QA_MAX_WORDS = 150
GSM8K_DEFAULT_DATA = "hf:openai/gsm8k:main"
# Draws allowed per wanted problem before a generator gives up (it never comes close).
MAX_DRAWS_PER_PROBLEM = 200


@dataclass(frozen=True)
class Problem:
    prompt: str  # the user message sent through the chat template
    answer: str  # the reference the reward checks against
    # story-qa: the question's kind (one of stories.questions.QUESTION_KINDS), which names the
    # rival answers the `story-answer` reward refuses; None elsewhere
    kind: str | None = None


@dataclass(frozen=True)
class Task:
    name: str
    description: str  # one line, shown in `rl --help`
    default_reward: str  # a key of rewards.REWARDS
    # (split "train" | "heldout", count, seed) -> at most `count` problems of that split
    make_problems: Callable[[str, int, int], list[Problem]]

    def problems(self, split: str, count: int, seed: int = 0) -> list[Problem]:
        """`count` problems of `split`, the same for the same seed; a task read from a file with
        fewer problems in that split returns all it has (shuffled by the seed)."""
        if split not in SPLITS:
            raise ScratchLMError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ScratchLMError(f"count must be a positive number of problems, got {count!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ScratchLMError(f"seed must be an integer, got {seed!r}")
        return self.make_problems(split, count, seed)


# ---------------------------------------------------------------------------------------------------
# Numbers in answers
# ---------------------------------------------------------------------------------------------------

# A number as people write one: "-3", "3.0", "1,234", "$1,234.50". Not a piece of a word or of a
# longer number ("x2" gives none, "5-3" gives 5 and not -3, "1,2345" gives only 1).
NUMBER_PATTERN = re.compile(r"(?<![\w.,$-])(-?)\$?(\d{1,3}(?:,\d{3})+(?![\d,])|\d+)(\.\d+)?(?!\d)")
GSM8K_MARK = "####"


def parse_numbers(text: str) -> list[Fraction]:
    """Every number in `text`, in order, as exact fractions ("3.0" and "3" are equal)."""
    return [
        Fraction(f"{sign}{digits.replace(',', '')}{decimals}")
        for sign, digits, decimals in NUMBER_PATTERN.findall(text)
    ]


def reference_number(answer: str) -> Fraction | None:
    """The number a reference answer states: the one after GSM8K's "####" if there is one, else
    the last number in it; None when it has none."""
    if GSM8K_MARK in answer:
        answer = answer.rsplit(GSM8K_MARK, 1)[1]
    numbers = parse_numbers(answer)
    return numbers[-1] if numbers else None


def format_number(value: Fraction) -> str:
    """The shortest plain spelling: 72, -3, 2.5 (a value with no finite decimal keeps a fraction)."""
    if value.denominator == 1:
        return str(value.numerator)
    text = f"{float(value):.12g}"
    return text if Fraction(text) == value else str(value)


# ---------------------------------------------------------------------------------------------------
# Splits and generation
# ---------------------------------------------------------------------------------------------------


def split_of(text: str) -> str:
    """The split a generated problem belongs to, by a stable hash of its identifying text."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "heldout" if int.from_bytes(digest[:8], "big") % HELDOUT_BUCKETS == 0 else "train"


def _generate(
    task: str,
    split: str,
    count: int,
    seed: int,
    draw: Callable[[random.Random], tuple[str, Problem, T] | None],
) -> list[T]:
    """Draw until `count` distinct problems of `split`; `draw` returns (the text that decides the
    split, the problem, what to return for it) or None to skip a draw."""
    rng = random.Random(f"scratchlm.finetune.tasks/{task}/{split}/{seed}")
    items: list[T] = []
    seen: set[str] = set()  # membership only; the order comes from `items`
    for _ in range(count * MAX_DRAWS_PER_PROBLEM):
        drawn = draw(rng)
        if drawn is None:
            continue
        key, problem, item = drawn
        if split_of(key) != split or problem.prompt in seen:
            continue
        seen.add(problem.prompt)
        items.append(item)
        if len(items) == count:
            return items
    raise ScratchLMError(
        f"task {task} found only {len(items)} distinct {split} problems of the {count} asked; "
        "ask for fewer"
    )


# Word problems: (template, operation). Slots: {Name} {Friend} {He} ("He", "She", "They"), {him},
# {gets}/{gives}/{loses}/{finds}/{has} (the verb agreeing with the pronoun), {a} {b}, {things_a} and
# {things_b} (the thing in the singular or plural to agree with a and b), {things} (plural).
ARITHMETIC_TEMPLATES: tuple[tuple[str, str], ...] = (
    ("{Name} has {a} {things_a}. {He} {gets} {b} more. How many {things} does {Name} have now?", "+"),
    ("{Name} has {a} {things_a}. {Friend} gives {him} {b} more. How many {things} does {Name} have now?", "+"),
    ("{Name} has {a} {things_a} and {Friend} has {b} {things_b}. How many {things} do they have together?", "+"),
    ("{Name} {finds} {a} {things_a} and then {b} more. How many {things} did {Name} find?", "+"),
    ("{Name} has {a} {things_a}. {He} {gives} {b} to {Friend}. How many {things} does {Name} have now?", "-"),
    ("{Name} has {a} {things_a}. {He} {loses} {b} of them. How many {things} does {Name} have left?", "-"),
    ("{Name} had {a} {things_a}. {Friend} took {b} of them. How many {things} does {Name} have now?", "-"),
)  # fmt: skip
ARITHMETIC_MAX = 20
NUMBERS = tuple(range(ARITHMETIC_MAX + 1))
# Third-person verbs for he/she; singular "they" takes the plain form ("They get 4 more").
VERBS = ("gets", "gives", "loses", "finds")


def plural(noun: str) -> str:
    """English plural of the story world's things ("ball" -> "balls", "scarf" -> "scarves")."""
    if noun.endswith("f"):
        return noun[:-1] + "ves"
    if noun.endswith(("s", "sh", "ch", "x")):
        return noun + "es"
    return noun + "s"


def _draw_arithmetic(rng: random.Random) -> tuple[str, Problem, Problem] | None:
    # Imported here so that `TASK_NAMES` costs nothing but this module.
    from scratchlm.data.stories.words import NAMES_BY_PRONOUN, PRONOUN_FORMS, THING_NAMES

    template, operation = rng.choice(ARITHMETIC_TEMPLATES)
    pronoun = rng.choice(tuple(NAMES_BY_PRONOUN))
    name = rng.choice(NAMES_BY_PRONOUN[pronoun])
    friend = rng.choice(NAMES_BY_PRONOUN[rng.choice(tuple(NAMES_BY_PRONOUN))])
    thing = rng.choice(THING_NAMES)
    a, b = rng.choice(NUMBERS), rng.choice(NUMBERS)
    result = a + b if operation == "+" else a - b
    if friend == name or a == 0 or b == 0 or not 0 <= result <= ARITHMETIC_MAX:
        return None
    forms = PRONOUN_FORMS[pronoun]
    slots = {
        "Name": name,
        "Friend": friend,
        "He": forms["he"].capitalize(),
        "him": forms["him"],
        "a": str(a),
        "b": str(b),
        "things_a": thing if a == 1 else plural(thing),
        "things_b": thing if b == 1 else plural(thing),
        "things": plural(thing),
        **{verb: verb[:-1] if pronoun == "they" else verb for verb in VERBS},
    }
    problem = Problem(prompt=template.format_map(slots), answer=str(result))
    return problem.prompt, problem, problem


def _arithmetic_problems(split: str, count: int, seed: int) -> list[Problem]:
    return _generate("arithmetic", split, count, seed, _draw_arithmetic)


@dataclass(frozen=True)
class StoryExample:
    """One story-qa problem with what it was made from (for evaluations that report by kind)."""

    plan: StoryPlan
    story: str
    question: StoryQuestion
    problem: Problem


def plan_key(plan: StoryPlan) -> str:
    """What makes two stories the same story for disjointness: the cast, the arc and the object."""
    hero, friend = plan.hero, plan.friend
    return "/".join((hero.name, hero.kind, friend.name, friend.kind, plan.arc, plan.thing.name))


def _draw_story_question(rng: random.Random) -> tuple[str, Problem, StoryExample] | None:
    from scratchlm.data.stories.grammar import render_story, sample_story_plan
    from scratchlm.data.stories.questions import story_questions

    plan = sample_story_plan(rng)
    story = render_story(plan, rng)
    if len(story.split()) > STORY_QA_MAX_WORDS:
        return None
    questions = story_questions(plan, story)
    if not questions:
        return None
    question = rng.choice(tuple(questions))
    # The layout of the instruction data's story questions (`stories.instructions`): story,
    # blank line, question. The plan decides the split, so no story plan is in both.
    problem = Problem(
        prompt=f"{story}\n\n{question.question}", answer=question.answer, kind=question.kind
    )
    return plan_key(plan), problem, StoryExample(plan, story, question, problem)


def story_qa_examples(split: str, count: int, seed: int = 0) -> list[StoryExample]:
    """The story-qa task's problems with their plans, stories and questions (same order)."""
    if split not in SPLITS:
        raise ScratchLMError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return _generate("story-qa", split, count, seed, _draw_story_question)


def _story_qa_problems(split: str, count: int, seed: int) -> list[Problem]:
    return [example.problem for example in story_qa_examples(split, count, seed)]


# ---------------------------------------------------------------------------------------------------
# Problems read from records
# ---------------------------------------------------------------------------------------------------


def _problem_of(where: str, record: dict[str, Any], *, gsm8k: bool) -> Problem:
    prompt = record.get("prompt", record.get("question"))
    answer = record.get("answer")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ScratchLMError(
            f'{where}: expected a "prompt" (or "question") string, got keys {sorted(record)}'
        )
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        raise ScratchLMError(f'{where}: expected an "answer" string or number, got {answer!r}')
    answer = str(answer)
    if gsm8k:
        # GSM8K's answer is the worked solution ending "#### 72": keep the number.
        number = reference_number(answer) if GSM8K_MARK in answer else None
        if number is None:
            raise ScratchLMError(
                f'{where}: a GSM8K answer ends with "#### NUMBER"; use --task file for other data'
            )
        answer = format_number(number)
    elif GSM8K_MARK in answer:
        number = reference_number(answer)
        answer = format_number(number) if number is not None else answer
    if not answer.strip():
        raise ScratchLMError(f'{where}: the "answer" is empty')
    return Problem(prompt=prompt, answer=answer.strip())


def _read_problems(source: str, *, gsm8k: bool, split: str = "train") -> list[Problem]:
    """The records of `source` as problems, the first of each prompt kept."""
    from scratchlm.finetune.records import read_records

    problems: dict[str, Problem] = {}
    for where, record in read_records(source, split=split):
        problem = _problem_of(where, record, gsm8k=gsm8k)
        problems.setdefault(problem.prompt, problem)
    return list(problems.values())


def _file_splits(problems: list[Problem], source: str) -> dict[str, list[Problem]]:
    """A seeded random split of one list: FILE_HELDOUT_SHARE of it (at least one) held out."""
    if len(problems) < 2:
        raise ScratchLMError(
            f"{source} holds {len(problems)} distinct problem(s); a task needs at least 2 (one to "
            "train on, one held out)"
        )
    order = list(range(len(problems)))
    random.Random("scratchlm.finetune.tasks/file-split").shuffle(order)
    held = max(1, round(len(problems) * FILE_HELDOUT_SHARE))
    return {
        "heldout": [problems[index] for index in order[:held]],
        "train": [problems[index] for index in order[held:]],
    }


def _records_task(
    name: str, description: str, source: str, *, gsm8k: bool, default_reward: str | None = None
) -> Task:
    """A task over records read once, on the first call for problems."""

    @cache
    def splits() -> dict[str, list[Problem]]:
        if gsm8k and source.startswith("hf:"):
            # A hub dataset has its own test split: it is the held-out one.
            return {
                "train": _read_problems(source, gsm8k=True),
                "heldout": _read_problems(source, gsm8k=True, split="val"),
            }
        return _file_splits(_read_problems(source, gsm8k=gsm8k), source)

    def make_problems(split: str, count: int, seed: int) -> list[Problem]:
        chosen = list(splits()[split])
        random.Random(f"scratchlm.finetune.tasks/{name}/{split}/{seed}").shuffle(chosen)
        return chosen[:count]

    if not source.startswith("hf:"):
        splits()  # a local file is read now, so that a bad one fails before any training
    if default_reward is None:
        # Read now: the default reward depends on the answers, and a bad file should fail early.
        everything = splits()["train"] + splits()["heldout"]
        numeric = all(reference_number(problem.answer) is not None for problem in everything)
        default_reward = "number" if numeric else "exact"
    return Task(
        name=name,
        description=description,
        default_reward=default_reward,
        make_problems=make_problems,
    )


# ---------------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------------

TASKS: dict[str, Task] = {
    "arithmetic": Task(
        name="arithmetic",
        description="word problems adding or subtracting numbers up to 20 (generated offline)",
        default_reward="number",
        make_problems=_arithmetic_problems,
    ),
    "story-qa": Task(
        name="story-qa",
        description="a short generated story and one question it answers (who, what, where)",
        default_reward="story-answer",
        make_problems=_story_qa_problems,
    ),
    "gsm8k": _records_task(
        "gsm8k",
        f"grade-school math word problems (--task-data GSM8K records, default {GSM8K_DEFAULT_DATA})",
        GSM8K_DEFAULT_DATA,
        gsm8k=True,
        default_reward="number",
    ),
}
TASK_NAMES: tuple[str, ...] = (*TASKS, "file")
GENERATED_TASKS = ("arithmetic", "story-qa")


def load_task(name: str, data: str | None = None) -> Task:
    """The task called `name`; `data` is the records file of "gsm8k" (optional) and "file"."""
    if name not in TASK_NAMES:
        raise ScratchLMError(
            f"unknown task {name!r}; choose one of {', '.join(TASK_NAMES)} (file needs --task-data)"
        )
    if name in GENERATED_TASKS:
        if data is not None:
            raise ScratchLMError(
                f"task {name} is generated offline and reads no data; drop --task-data, or use "
                f"--task file --task-data {data}"
            )
        return TASKS[name]
    if name == "gsm8k":
        if data is None:
            return TASKS["gsm8k"]
        return _records_task("gsm8k", TASKS["gsm8k"].description, data, gsm8k=True,
                             default_reward="number")  # fmt: skip
    if data is None:
        raise ScratchLMError(
            'task file needs --task-data: a records file with {"prompt", "answer"} or '
            '{"question", "answer"} per record'
        )
    return _records_task("file", f"problems from {data}", data, gsm8k=False)
