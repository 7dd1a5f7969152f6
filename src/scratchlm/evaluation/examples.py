"""What a benchmark task hands the scorer: examples as plain text, already formatted (few-shot
prefix included), so the scorer knows nothing of any dataset and the tasks nothing of the model.

- `MultipleChoiceExample`: each choice is a (context, continuation) pair scored by the summed
  log-probability of the continuation's tokens given its context. Most tasks share one context over
  all choices (HellaSwag, ARC, MMLU, ...); Winogrande's partial scoring has one context per choice
  and a shared continuation. `acc` takes the argmax of the sums; `acc_norm` divides each sum by the
  continuation's length in characters first (lm-evaluation-harness's definition).
- `LastWordExample`: LAMBADA: the target word must be the model's greedy continuation (accuracy),
  and its log-probability gives the perplexity.
- `GenerativeExample`: GSM8K: a question answered by free generation; the final number is compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TaskKind = Literal["multiple_choice", "last_word", "generative"]


@dataclass(frozen=True)
class Continuation:
    context: str
    continuation: str


@dataclass(frozen=True)
class MultipleChoiceExample:
    id: str
    choices: tuple[Continuation, ...]
    gold: int


@dataclass(frozen=True)
class LastWordExample:
    id: str
    context: str
    target: str  # with its leading space, as it follows the context


@dataclass(frozen=True)
class GenerativeExample:
    id: str
    prompt: str
    answer: str  # the reference final answer, e.g. "72"


Example = MultipleChoiceExample | LastWordExample | GenerativeExample


@dataclass(frozen=True)
class TaskSpec:
    name: str  # e.g. "arc_easy", "mmlu_anatomy"
    kind: TaskKind
    random_baseline: float  # accuracy by chance, for the centered aggregate
    description: str = ""
