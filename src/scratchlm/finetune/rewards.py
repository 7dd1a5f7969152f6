"""Reward functions for `scratchlm rl`: (the model's reply, the problem) -> a float, usually 0 or 1.

Built-ins (`REWARDS`):

- `number`: 1.0 when the last number in the reply equals the answer's number. Numbers are read as
  people write them: "1,234", "$1,234", "-3", "3.0" and "3" are compared as exact values (so 3.0
  equals 3, and 1,234 equals 1234). The answer's number is the one after GSM8K's "####" when it
  has one, else its last number. A reply with no number scores 0.0.
- `exact`: 1.0 when the reply equals the answer after `normalize` (below).
- `contains`: 1.0 when the normalised answer appears in the normalised reply as whole words
  ("Tom" is in "The cat was named Tom." but not in "Tommy").
- `format`: 1.0 when some line of the reply starts with "Answer:" followed by at least one
  non-space character (case-insensitive: "answer: 7" counts, "The answer is 7" does not).
- `story-answer` (story-qa's default): `contains`, and 0.0 when the reply also gives a rival
  answer of the question's kind: another character name of the story world for a name question,
  another kind, object, color or place for the others (`scratchlm.data.stories.answers`). "The
  kid was named Ethan." scores 1.0 for "Ethan"; "Ethan and Leo" scores 0.0. Needs problems with a
  question kind (the story-qa task's).

`normalize(text)`: lower case; runs of whitespace made one space; quotes and punctuation
(. ! ? , ; :) removed from both ends; then a leading article ("a", "an", "the") removed.
So "The ball." equals "ball", " Tom! " equals "tom", and "A teddy bear" equals "teddy bear".

`resolve_reward(spec, task)` turns a `--reward` value into a function: None for the task's default,
a name above, "regex:PATTERN" (1.0 when `re.search(PATTERN, reply)` matches), or the user's own
function as "module:function" (an importable module) or "path/to/file.py:function". A user's
function is called as `function(reply, problem)` with `problem` a `tasks.Problem`, and must
return a number; `resolve_reward` wraps it so that anything else is a one-line error naming the
function. The RL trainer checks that rewards are finite.

No torch here: rewards are plain Python, run on the replies' text.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path

from scratchlm.data.stories.answers import rival_answers
from scratchlm.errors import ScratchLMError
from scratchlm.finetune.tasks import Problem, Task, parse_numbers, reference_number

RewardFunction = Callable[[str, Problem], float]

ARTICLES = ("a", "an", "the")
_FINAL_PUNCTUATION = ".!?,;:"
_QUOTES = "\"'`“”‘’"
_FORMAT_LINE = re.compile(r"^[ \t]*answer:[ \t]*\S", re.IGNORECASE | re.MULTILINE)


def normalize(text: str) -> str:
    """The form `exact` and `contains` compare (see the module docstring)."""
    text = " ".join(text.lower().split())
    # Strip quotes and final punctuation together: "'Tom.'" and "Tom." both end as "tom".
    text = text.strip(_QUOTES + _FINAL_PUNCTUATION + " ")
    first, _, rest = text.partition(" ")
    if first in ARTICLES and rest:
        text = rest
    return text


def number_reward(reply: str, problem: Problem) -> float:
    expected = reference_number(problem.answer)
    if expected is None:
        raise ScratchLMError(
            f"reward number needs a numeric answer, got {problem.answer!r}; "
            "choose --reward exact or contains"
        )
    numbers = parse_numbers(reply)
    return 1.0 if numbers and numbers[-1] == expected else 0.0


def exact_reward(reply: str, problem: Problem) -> float:
    return 1.0 if normalize(reply) == normalize(problem.answer) else 0.0


def contains_reward(reply: str, problem: Problem) -> float:
    answer = normalize(problem.answer)
    if not answer:
        return 0.0
    found = re.search(rf"(?<!\w){re.escape(answer)}(?!\w)", normalize(reply))
    return 1.0 if found else 0.0


def story_answer_reward(reply: str, problem: Problem) -> float:
    if problem.kind is None:
        raise ScratchLMError(
            "the story-answer reward judges story-qa problems (it needs the question's kind); "
            "use --reward contains or exact for other tasks"
        )
    if contains_reward(reply, problem) == 0.0:
        return 0.0
    return 0.0 if rival_answers(reply, problem.answer, problem.kind) else 1.0


def format_reward(reply: str, problem: Problem) -> float:
    del problem  # the format does not depend on the answer
    return 1.0 if _FORMAT_LINE.search(reply) else 0.0


REWARDS: dict[str, RewardFunction] = {
    "number": number_reward,
    "exact": exact_reward,
    "contains": contains_reward,
    "format": format_reward,
    "story-answer": story_answer_reward,
}
SPEC_FORMS = f"{', '.join(REWARDS)}, regex:PATTERN, module:function or path/to/file.py:function"


def regex_reward(pattern: str) -> RewardFunction:
    """1.0 when `pattern` matches somewhere in the reply (`re.search`)."""
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise ScratchLMError(
            f"--reward regex:{pattern}: not a valid regular expression ({error})"
        ) from None

    def reward(reply: str, problem: Problem) -> float:
        del problem
        return 1.0 if compiled.search(reply) else 0.0

    return reward


def _one_line(error: BaseException) -> str:
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _load_module(location: str) -> object:
    """Import a module by dotted name, or a .py file by path (once: later calls reuse it)."""
    if not location.endswith(".py") and "/" not in location and "\\" not in location:
        try:
            return importlib.import_module(location)
        except ImportError as error:
            raise ScratchLMError(
                f"--reward {location}:...: cannot import module {location} ({error}); check the "
                "name, or pass a file as path/to/file.py:function"
            ) from None
        except Exception as error:  # the user's module may raise anything while it runs
            raise ScratchLMError(
                f"--reward {location}:...: importing {location} failed ({_one_line(error)}); "
                "fix the module"
            ) from None
    path = Path(location).expanduser().resolve()
    if not path.is_file():
        raise ScratchLMError(
            f"--reward {location}:...: {path} does not exist; pass path/to/file.py:function"
        )
    # One module per file path: a second resolve of the same file reuses the first import.
    name = f"scratchlm_user_reward_{hashlib.sha256(str(path).encode()).hexdigest()[:16]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ScratchLMError(f"--reward {location}:...: cannot load {path} as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # the user's file may raise anything while it runs
        del sys.modules[name]
        raise ScratchLMError(
            f"--reward {location}:...: running {path} failed ({_one_line(error)}); fix the file"
        ) from None
    return module


def user_reward(spec: str) -> RewardFunction:
    """The user's function named by "module:function" or "path/to/file.py:function"."""
    location, _, attribute = spec.rpartition(":")
    if not location or not attribute.isidentifier():
        raise ScratchLMError(
            f"--reward {spec!r}: expected module:function or path/to/file.py:function"
        )
    module = _load_module(location)
    function = getattr(module, attribute, None)
    if function is None:
        raise ScratchLMError(
            f"--reward {spec}: {location} has no {attribute}; define "
            f"`def {attribute}(reply: str, problem) -> float` there"
        )
    if not callable(function):
        raise ScratchLMError(
            f"--reward {spec}: {attribute} is a {type(function).__name__}, not a function; "
            f"define `def {attribute}(reply: str, problem) -> float`"
        )

    def reward(reply: str, problem: Problem) -> float:
        value = function(reply, problem)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ScratchLMError(
                f"--reward {spec} returned {type(value).__name__} {value!r}; return a float"
            )
        return float(value)

    reward.__name__ = attribute
    return reward


def resolve_reward(spec: str | None, task: Task) -> RewardFunction:
    """The reward function `spec` names (None: the task's default; see the module docstring)."""
    if spec is None:
        return REWARDS[task.default_reward]
    if spec in REWARDS:
        return REWARDS[spec]
    if spec.startswith("regex:"):
        return regex_reward(spec[len("regex:") :])
    if ":" in spec:
        return user_reward(spec)
    raise ScratchLMError(f"unknown reward {spec!r}; use one of {SPEC_FORMS}")
