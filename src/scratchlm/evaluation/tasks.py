"""Benchmark tasks: read each dataset (local files in the upstream formats, or the canonical Hugging
Face dataset) and format its examples exactly as lm-evaluation-harness's task YAMLs do, few-shot
prefix included, so the scorer sees plain (context, continuation) text and knows no dataset.

Formatting follows lm-eval (lm_eval/tasks/*, api/task.py `fewshot_context`/`build_qa_turn`):
a solved few-shot example is `doc_to_text + " " + answer`, examples are joined by "\\n\\n", and each
continuation is `" " + choice` (target_delimiter " "). Few-shot examples come from the task's
few-shot split with one `random.Random(seed)` per task drawn in example order (lm-eval's default
sampler, so the first N examples get the same shots with or without `limit`). Where lm-eval's
configured few-shot split equals its test split (both unset for HellaSwag, PIQA, Winogrande and
BoolQ), its sampler draws K+1 and drops any shot equal to the example; we draw the same way, so the
shots match lm-eval's. MMLU takes the first K dev questions (lm-eval's `first_n` sampler). LAMBADA
has only its test split: we draw K+1 and drop the example itself (lm-eval draws K there and can
hand a model the very passage it is asked to complete).

`load_questions` reads the same records through the same parsers for the chat evaluation
(`scratchlm.evaluation.chat_eval`): the bare question, its choice texts and gold index, or GSM8K's
final answer, with no lm-eval framing and no shots.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from scratchlm.errors import ScratchLMError
from scratchlm.evaluation.examples import (
    Continuation,
    Example,
    GenerativeExample,
    LastWordExample,
    MultipleChoiceExample,
    TaskKind,
    TaskSpec,
)

# The 57 MMLU subjects (cais/mmlu configs, lm-eval's mmlu_<subject> tasks).
MMLU_SUBJECTS: tuple[str, ...] = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge",
    "college_biology", "college_chemistry", "college_computer_science", "college_mathematics",
    "college_medicine", "college_physics", "computer_security", "conceptual_physics", "econometrics",
    "electrical_engineering", "elementary_mathematics", "formal_logic", "global_facts",
    "high_school_biology", "high_school_chemistry", "high_school_computer_science",
    "high_school_european_history", "high_school_geography",
    "high_school_government_and_politics", "high_school_macroeconomics", "high_school_mathematics",
    "high_school_microeconomics", "high_school_physics", "high_school_psychology",
    "high_school_statistics", "high_school_us_history", "high_school_world_history", "human_aging",
    "human_sexuality", "international_law", "jurisprudence", "logical_fallacies",
    "machine_learning", "management", "marketing", "medical_genetics", "miscellaneous",
    "moral_disputes", "moral_scenarios", "nutrition", "philosophy", "prehistory",
    "professional_accounting", "professional_law", "professional_medicine",
    "professional_psychology", "public_relations", "security_studies", "sociology",
    "us_foreign_policy", "virology", "world_religions",
)  # fmt: skip

BASE_TASKS: tuple[str, ...] = (
    "hellaswag", "arc_easy", "arc_challenge", "piqa", "winogrande", "openbookqa", "boolq", "mmlu",
    "lambada", "gsm8k",
)  # fmt: skip

# The default base-model set (`--tasks core`): the zero-shot log-likelihood tasks.
CORE_TASKS: tuple[str, ...] = (
    "hellaswag", "arc_easy", "arc_challenge", "piqa", "winogrande", "openbookqa", "boolq", "lambada",
)  # fmt: skip

# The tasks with a chat form (scratchlm.evaluation.chat_eval: zero-shot, through the chat template);
# `chat` in a `--chat` task list stands for all four.
CHAT_TASKS: tuple[str, ...] = ("arc_easy", "arc_challenge", "mmlu", "gsm8k")

TASK_NAMES: tuple[str, ...] = BASE_TASKS + tuple(f"mmlu_{subject}" for subject in MMLU_SUBJECTS)

DEFAULT_FEWSHOT_SEED = 1234  # lm-eval's default fewshot_random_seed

# Where greedy generation stops, per generative task: lm-eval's gsm8k.yaml `until` (without it a
# base model writes the next "Question:" of its few-shot pattern), plus the few-shot delimiter
# "\n\n", which ends an answer in that pattern: the same answers, minus the tokens a small model
# would spend before it reaches "Question:".
STOP_SEQUENCES: dict[str, tuple[str, ...]] = {"gsm8k": ("\n\n", "Question:", "</s>", "<|im_end|>")}

# (dataset id, config, split) -> records, each a dict of the dataset's fields.
RecordLoader = Callable[[str, str | None, str], list[dict[str, Any]]]

# A record with where it came from ("file:line" or "dataset split record i"), for error messages.
Record = tuple[str, dict[str, Any]]


# --- public API --------------------------------------------------------------------------------


def expand_task_names(spec: str) -> list[str]:
    """Turn "hellaswag,arc_easy", "mmlu" (its 57 subjects) or "core" into task names, in order,
    without repeats; an unknown name is a ScratchLMError that lists the valid ones."""
    names: list[str] = []
    parts = [part.strip() for part in spec.split(",") if part.strip()]
    if not parts:
        raise ScratchLMError(f"--tasks {spec!r} names no task; {_valid_names_hint()}")
    for part in parts:
        key = part.lower()
        if key == "core":
            expanded: list[str] = list(CORE_TASKS)
        elif key == "mmlu":
            expanded = [f"mmlu_{subject}" for subject in MMLU_SUBJECTS]
        elif key in TASK_NAMES:
            expanded = [key]
        else:
            raise ScratchLMError(f"unknown task {part!r}{_suggestion(key)}; {_valid_names_hint()}")
        names.extend(name for name in expanded if name not in names)
    return names


def load_task(
    name: str,
    *,
    task_data: Path | None = None,
    num_fewshot: int = 0,
    seed: int = DEFAULT_FEWSHOT_SEED,
    limit: int | None = None,
) -> tuple[TaskSpec, list[Example]]:
    """The task's spec and its formatted examples: from the files in `task_data` (upstream
    formats, the file names of shared/data/evals) or, without it, from the Hugging Face hub."""
    if task_data is None:
        return load_task_from_hub(name, num_fewshot=num_fewshot, seed=seed, limit=limit)
    return _load(name, _LocalReader(Path(task_data), name), num_fewshot, seed, limit)


def load_task_from_hub(
    name: str,
    *,
    loader: RecordLoader | None = None,
    num_fewshot: int = 0,
    seed: int = DEFAULT_FEWSHOT_SEED,
    limit: int | None = None,
) -> tuple[TaskSpec, list[Example]]:
    """As `load_task`, reading the canonical Hugging Face datasets through `loader` (the seam:
    `load_hub_records` by default; tests pass one that reads local `datasets` copies)."""
    return _load(name, _HubReader(loader or load_hub_records), num_fewshot, seed, limit)


def load_hub_records(path: str, config: str | None, split: str) -> list[dict[str, Any]]:
    """One split of a Hugging Face dataset as plain dicts, via `datasets.load_dataset`."""
    try:
        import datasets
    except ImportError:
        raise ScratchLMError(
            f"loading {path!r} from the Hugging Face hub needs the `datasets` package; install it "
            "with `pip install datasets` (or `pip install scratchlm[hf]`), or pass --task-data DIR"
        ) from None
    try:
        dataset = datasets.load_dataset(path, config, split=split)
    except Exception as error:  # datasets raises many types (hub, network, config errors)
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        raise ScratchLMError(
            f"cannot load the Hugging Face dataset {path!r} (config {config!r}, split {split!r}): "
            f"{reason}; check your network, or download the data and pass --task-data DIR"
        ) from None
    return [dict(row) for row in dataset]


@dataclass(frozen=True)
class ChatQuestion:
    """A record as a question for a chat model: the bare question (no lm-eval framing, no few-shot
    prefix), its choice texts and the gold choice's index (multiple choice), or GSM8K's reference
    final answer (`extract_final_number` of its worked answer, e.g. "72")."""

    id: str
    question: str
    choices: tuple[str, ...] = ()
    gold: int = 0
    answer: str = ""


def has_chat_form(name: str) -> bool:
    """Whether `load_questions` can read the task: ARC, MMLU (or one subject) and GSM8K."""
    key = name.strip().lower()
    return key in CHAT_TASKS or (key.startswith("mmlu_") and key in _TASKS)


def expand_chat_task_names(spec: str) -> list[str]:
    """`expand_task_names` for chat tasks: "chat" stands for arc_easy,arc_challenge,mmlu,gsm8k; a
    task without a chat form is a ScratchLMError that lists the chat tasks."""
    parts = [part.strip() for part in spec.split(",") if part.strip()]
    expanded = ",".join(",".join(CHAT_TASKS) if part.lower() == "chat" else part for part in parts)
    names = expand_task_names(expanded or spec)
    for name in names:
        if not has_chat_form(name):
            raise ScratchLMError(
                f"task {name!r} has no chat form; with --chat use arc_easy, arc_challenge, mmlu, "
                "mmlu_<subject>, gsm8k, or chat (all four)"
            )
    return names


def load_questions(
    name: str,
    *,
    task_data: Path | None = None,
    limit: int | None = None,
    loader: RecordLoader | None = None,
) -> tuple[TaskSpec, list[ChatQuestion]]:
    """A chat task's spec and its first `limit` records (per MMLU subject) as questions, read and
    parsed exactly as `load_task` reads them: from the files in `task_data`, or without it from
    the Hugging Face hub through `loader` (`load_hub_records` by default). The spec's random
    baseline is the mean over the questions of 1 / number of choices (0 for GSM8K)."""
    key = name.strip().lower()
    if limit is not None and limit < 1:
        raise ScratchLMError(f"--limit must be at least 1 (got {limit})")
    if not has_chat_form(key):
        raise ScratchLMError(
            f"task {name!r} has no chat form; chat tasks are arc_easy, arc_challenge, mmlu, "
            "mmlu_<subject> and gsm8k"
        )
    if key == "mmlu":  # all subjects as one task, `limit` per subject (as `load_task`)
        spec = _spec("mmlu", "multiple_choice", 0.25, "MMLU, 57 subjects (cais/mmlu, test)")
        members = [f"mmlu_{subject}" for subject in MMLU_SUBJECTS]
    else:
        spec, members = _TASKS[key].spec, [key]
    questions: list[ChatQuestion] = []
    for member in members:
        task = _TASKS[member]
        reader: _HubReader | _LocalReader = (
            _HubReader(loader or load_hub_records)
            if task_data is None
            else _LocalReader(Path(task_data), member)
        )
        records = reader.read(task.eval_split)
        questions.extend(_chat_question(doc) for doc in _docs(task, records[:limit]))
    if spec.kind == "multiple_choice" and questions:
        # ARC has a few questions with 3 or 5 choices: chance is per question.
        chance = sum(1 / len(question.choices) for question in questions) / len(questions)
        spec = replace(spec, random_baseline=chance)
    return spec, questions


def _chat_question(doc: _Doc) -> ChatQuestion:
    if not doc.choices:  # GSM8K
        answer = extract_final_number(doc.target)
        assert answer is not None, "the parser checked that the answer holds a number"
        return ChatQuestion(id=doc.id, question=doc.question, answer=answer)
    return ChatQuestion(
        id=doc.id, question=doc.question, choices=doc.options or doc.choices, gold=doc.gold
    )


_NUMBER = re.compile(r"-?\$?[0-9][0-9,]*(?:\.[0-9]+)?")
_AFTER_HASHES = re.compile(r"####\s*(-?\$?[0-9][0-9.,]*)")


def extract_final_number(text: str) -> str | None:
    """GSM8K's final answer: the number after '####' (the reference format, nanochat's and lm-eval's
    strict match), else the last number in the text (lm-eval's flexible extract); '$' and thousands
    commas removed, a trailing '.' dropped. None when the text holds no number."""
    match = _AFTER_HASHES.search(text)
    if match is not None:
        found = match.group(1)
    else:
        numbers = _NUMBER.findall(text)
        if not numbers:
            return None
        found = numbers[-1]
    return found.replace(",", "").replace("$", "").rstrip(".")


# --- formatted documents -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Doc:
    """One record after lm-eval's doc_to_text / doc_to_choice / doc_to_target."""

    id: str
    text: str  # doc_to_text (unused by Winogrande, whose text is one context per option)
    choices: tuple[str, ...] = ()  # answers without the target delimiter
    gold: int = 0
    contexts: tuple[str, ...] = ()  # Winogrande: the sentence up to '_' with each option
    target: str = ""  # Winogrande's shared rest, LAMBADA's " word", GSM8K's worked answer
    # The bare question, without lm-eval's framing ("Question: ...\nAnswer:", MMLU's lettered
    # choices): what a chat evaluation puts in the user message (ARC, MMLU, GSM8K).
    question: str = ""
    options: tuple[str, ...] = ()  # the choice texts where `choices` holds their letters (MMLU)

    def solved(self) -> str:
        """The doc as a few-shot example: question, target delimiter, gold answer."""
        if self.contexts:
            return self.contexts[self.gold] + " " + self.target
        if self.choices:
            return self.text + " " + self.choices[self.gold]
        # LAMBADA's target already starts with a space; lm-eval still adds the delimiter.
        return self.text + " " + self.target


Parser = Callable[[str, int, dict[str, Any]], _Doc]


@dataclass(frozen=True)
class _Split:
    files: tuple[str, ...]  # local file names, first found wins (relative to --task-data)
    hub: tuple[str, str | None, str]  # (dataset id, config, split)
    labels: str | None = None  # a labels sidecar (.lst, one per line) beside the JSONL


@dataclass(frozen=True)
class _Task:
    spec: TaskSpec
    eval_split: _Split
    fewshot_split: _Split | None  # None: shots come from the eval split, never the example itself
    parse: Parser
    prompt_description: str = ""  # lm-eval's `description`, once before the shots (MMLU)
    first_n: bool = False  # MMLU: the first K few-shot examples in order
    # Draw K+1 and drop shots equal to the example (lm-eval does where its fewshot split equals its
    # test split, which holds when both are unset: HellaSwag, PIQA, Winogrande, BoolQ).
    draw_extra: bool = False


# --- field access ------------------------------------------------------------------------------


def _str(where: str, record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise ScratchLMError(f"{where}: needs a string field {key!r} (got {_shown(value)})")
    return value


def _strings(where: str, value: Any, what: str, count: int | None = None) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
        raise ScratchLMError(f"{where}: {what} must be a list of strings (got {_shown(value)})")
    if count is not None and len(value) != count:
        raise ScratchLMError(f"{where}: {what} must hold {count} strings (got {len(value)})")
    if not value:
        raise ScratchLMError(f"{where}: {what} is empty")
    return tuple(value)


def _index(where: str, value: Any, what: str, count: int) -> int:
    """A gold index from an int, a digit string or a bool (BoolQ), checked against `count`."""
    if isinstance(value, bool):
        number = int(value)
    elif isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        number = int(value)
    else:
        raise ScratchLMError(f"{where}: {what} must be an integer (got {_shown(value)})")
    if not 0 <= number < count:
        raise ScratchLMError(f"{where}: {what} {number} is outside 0..{count - 1}")
    return number


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _record_id(record: dict[str, Any], key: str, index: int) -> str:
    value = record.get(key)
    return (
        str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else str(index)
    )


# --- parsers, one per dataset (each takes HF's schema and the local upstream file's) -------------


def _hellaswag_preprocess(text: str) -> str:
    # lm_eval/tasks/hellaswag/utils.py: brackets are WikiHow artifacts.
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def _parse_hellaswag(where: str, index: int, record: dict[str, Any]) -> _Doc:
    ctx = _str(where, record, "ctx_a") + " " + _str(where, record, "ctx_b").capitalize()
    endings = _strings(where, record.get("endings"), "'endings'")
    return _Doc(
        id=_record_id(record, "ind", index),
        text=_hellaswag_preprocess(_str(where, record, "activity_label") + ": " + ctx),
        choices=tuple(_hellaswag_preprocess(ending) for ending in endings),
        gold=_index(where, record.get("label"), "'label'", len(endings)),
    )


def _question_and_choices(
    where: str, record: dict[str, Any], stem_key: str
) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(question, choice texts, choice labels) from HF's schema (`question`/`question_stem` and
    `choices: {text: [...], label: [...]}`) or AI2's original one (`question: {stem, choices:
    [{text, label}, ...]}`)."""
    question = record.get("question")
    if isinstance(question, dict):  # AI2's original jsonl
        stem = _str(where, question, "stem")
        raw = question.get("choices")
        if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
            raise ScratchLMError(
                f"{where}: 'question.choices' must be a list of {{text, label}} objects"
            )
        texts = _strings(where, [item.get("text") for item in raw], "'question.choices[].text'")
        labels = _strings(where, [item.get("label") for item in raw], "'question.choices[].label'")
        return stem, texts, labels
    stem = _str(where, record, stem_key)
    choices = record.get("choices")
    if not isinstance(choices, dict):
        raise ScratchLMError(
            f"{where}: needs 'choices' as {{text: [...], label: [...]}} (got {_shown(choices)})"
        )
    texts = _strings(where, choices.get("text"), "'choices.text'")
    labels = _strings(where, choices.get("label"), "'choices.label'", len(texts))
    return stem, texts, labels


def _gold_label(where: str, record: dict[str, Any], labels: tuple[str, ...], strip: bool) -> int:
    key = _str(where, record, "answerKey")
    key = key.lstrip() if strip else key
    if key not in labels:
        raise ScratchLMError(f"{where}: answerKey {key!r} is not among the labels {list(labels)}")
    return labels.index(key)


def _parse_arc(where: str, index: int, record: dict[str, Any]) -> _Doc:
    question, texts, labels = _question_and_choices(where, record, "question")
    return _Doc(
        id=_record_id(record, "id", index),
        text=f"Question: {question}\nAnswer:",
        choices=texts,
        gold=_gold_label(where, record, labels, strip=False),
        question=question,
    )


def _parse_openbookqa(where: str, index: int, record: dict[str, Any]) -> _Doc:
    # lm-eval's openbookqa.yaml: doc_to_text is the bare question_stem, answerKey.lstrip().
    question, texts, labels = _question_and_choices(where, record, "question_stem")
    return _Doc(
        id=_record_id(record, "id", index),
        text=question,
        choices=texts,
        gold=_gold_label(where, record, labels, strip=True),
    )


def _parse_piqa(where: str, index: int, record: dict[str, Any]) -> _Doc:
    choices = (_str(where, record, "sol1"), _str(where, record, "sol2"))
    if "label" not in record:
        raise ScratchLMError(f"{where}: no 'label' (PIQA's labels sit in the -labels.lst file)")
    return _Doc(
        id=str(index),
        text=f"Question: {_str(where, record, 'goal')}\nAnswer:",
        choices=choices,
        gold=_index(where, record["label"], "'label'", 2),
    )


def _parse_winogrande(where: str, index: int, record: dict[str, Any]) -> _Doc:
    # lm_eval/tasks/winogrande/preprocess_winogrande.py (partial scoring: one context per option).
    sentence = _str(where, record, "sentence")
    if "_" not in sentence:
        raise ScratchLMError(f"{where}: 'sentence' has no '_' blank to fill")
    answer = record.get("answer") or record.get("label")  # the -labels.lst sidecar sets "label"
    if answer in ("1", "2", 1, 2):
        gold = int(answer) - 1
    else:
        raise ScratchLMError(f'{where}: \'answer\' must be "1" or "2" (got {_shown(answer)})')
    blank = sentence.index("_")
    options = (_str(where, record, "option1"), _str(where, record, "option2"))
    return _Doc(
        id=_record_id(record, "qID", index),
        text=sentence,
        contexts=tuple(sentence[:blank] + option for option in options),
        target=sentence[blank + 1 :].strip(),
        gold=gold,
    )


def _parse_boolq(where: str, index: int, record: dict[str, Any]) -> _Doc:
    # HF aps/super_glue has `label` (0/1); the upstream jsonl (and google/boolq) `answer` (bool).
    answer = record["label"] if "label" in record else record.get("answer")
    text = (
        f"{_str(where, record, 'passage')}\nQuestion: {_str(where, record, 'question')}?\nAnswer:"
    )
    return _Doc(
        id=_record_id(record, "idx", index),
        text=text,
        choices=("no", "yes"),
        gold=_index(where, answer, "'answer'", 2),
    )


def _parse_lambada(where: str, index: int, record: dict[str, Any]) -> _Doc:
    # lambada_openai.yaml: text.split(' ')[:-1] joined by ' ', and ' ' + the last piece.
    text = _str(where, record, "text")
    if " " not in text:
        raise ScratchLMError(f"{where}: 'text' has no space, so no last word to predict")
    context, last = text.rsplit(" ", 1)
    return _Doc(id=str(index), text=context, target=" " + last)


def _mmlu_parser(subject: str) -> Parser:
    def parse(where: str, index: int, record: dict[str, Any]) -> _Doc:
        if "choices" in record:  # cais/mmlu
            options = _strings(where, record["choices"], "'choices'", 4)
        else:  # the CSV export: choice0..choice3
            options = tuple(_str(where, record, f"choice{i}") for i in range(4))
        answer = record.get("answer")
        if isinstance(answer, str) and answer.strip() in ("A", "B", "C", "D"):
            answer = "ABCD".index(answer.strip())  # Berkeley's original CSVs use letters
        question = _str(where, record, "question").strip()
        lettered = "".join(
            f"\n{letter}. {option}" for letter, option in zip("ABCD", options, strict=True)
        )
        return _Doc(
            id=f"{subject}/{index}",
            text=f"{question}{lettered}\nAnswer:",
            choices=("A", "B", "C", "D"),
            gold=_index(where, answer, "'answer'", 4),
            question=question,
            options=options,
        )

    return parse


def _parse_gsm8k(where: str, index: int, record: dict[str, Any]) -> _Doc:
    answer = _str(where, record, "answer")
    if extract_final_number(answer) is None:
        raise ScratchLMError(f"{where}: 'answer' holds no final number (expected '#### N')")
    question = _str(where, record, "question")
    return _Doc(
        id=str(index), text=f"Question: {question}\nAnswer:", target=answer, question=question
    )


# --- the task table ----------------------------------------------------------------------------


def _spec(name: str, kind: TaskKind, baseline: float, description: str) -> TaskSpec:
    return TaskSpec(name=name, kind=kind, random_baseline=baseline, description=description)


def _arc(name: str, config: str, title: str) -> _Task:
    return _Task(
        _spec(name, "multiple_choice", 0.25, f"{title} (allenai/ai2_arc {config}, test)"),
        _Split((f"{name}_test.jsonl",), ("allenai/ai2_arc", config, "test")),
        _Split((f"{name}_train.jsonl",), ("allenai/ai2_arc", config, "train")),
        _parse_arc,
    )


def _mmlu(subject: str) -> _Task:
    title = subject.replace("_", " ")
    return _Task(
        _spec(f"mmlu_{subject}", "multiple_choice", 0.25, f"MMLU {title} (cais/mmlu, test)"),
        _Split((f"mmlu/test/{subject}_test.csv",), ("cais/mmlu", subject, "test")),
        _Split((f"mmlu/dev/{subject}_dev.csv",), ("cais/mmlu", subject, "dev")),
        _mmlu_parser(subject),
        prompt_description=(
            f"The following are multiple choice questions (with answers) about {title}.\n\n"
        ),
        first_n=True,
    )


_TASKS: dict[str, _Task] = {
    "hellaswag": _Task(
        _spec("hellaswag", "multiple_choice", 0.25, "HellaSwag (Rowan/hellaswag, validation)"),
        _Split(
            ("hellaswag_val.jsonl", "hellaswag_val_sample1000.jsonl"),
            ("Rowan/hellaswag", None, "validation"),
        ),
        _Split(("hellaswag_train.jsonl",), ("Rowan/hellaswag", None, "train")),
        _parse_hellaswag,
        draw_extra=True,
    ),
    "arc_easy": _arc("arc_easy", "ARC-Easy", "ARC-Easy"),
    "arc_challenge": _arc("arc_challenge", "ARC-Challenge", "ARC-Challenge"),
    "piqa": _Task(
        _spec("piqa", "multiple_choice", 0.5, "PIQA (baber/piqa, validation)"),
        _Split(("piqa_valid.jsonl",), ("baber/piqa", None, "validation"), "piqa_valid-labels.lst"),
        _Split(("piqa_train.jsonl",), ("baber/piqa", None, "train"), "piqa_train-labels.lst"),
        _parse_piqa,
        draw_extra=True,
    ),
    "winogrande": _Task(
        _spec("winogrande", "multiple_choice", 0.5, "WinoGrande (winogrande_xl, validation)"),
        _Split(
            ("winogrande_dev.jsonl",),
            ("allenai/winogrande", "winogrande_xl", "validation"),
            "winogrande_dev-labels.lst",
        ),
        _Split(
            ("winogrande_train_xl.jsonl",),
            ("allenai/winogrande", "winogrande_xl", "train"),
            "winogrande_train_xl-labels.lst",
        ),
        _parse_winogrande,
        draw_extra=True,
    ),
    "openbookqa": _Task(
        _spec("openbookqa", "multiple_choice", 0.25, "OpenBookQA (allenai/openbookqa main, test)"),
        _Split(("openbookqa_main_test.jsonl",), ("allenai/openbookqa", "main", "test")),
        _Split(("openbookqa_main_train.jsonl",), ("allenai/openbookqa", "main", "train")),
        _parse_openbookqa,
    ),
    "boolq": _Task(
        _spec("boolq", "multiple_choice", 0.5, "BoolQ (aps/super_glue boolq, validation)"),
        _Split(("boolq_dev.jsonl",), ("aps/super_glue", "boolq", "validation")),
        _Split(("boolq_train.jsonl",), ("aps/super_glue", "boolq", "train")),
        _parse_boolq,
        draw_extra=True,
    ),
    "lambada": _Task(
        _spec("lambada", "last_word", 0.0, "LAMBADA (EleutherAI/lambada_openai, test)"),
        _Split(("lambada_openai_test.jsonl",), ("EleutherAI/lambada_openai", "default", "test")),
        None,
        _parse_lambada,
    ),
    "gsm8k": _Task(
        _spec("gsm8k", "generative", 0.0, "GSM8K (openai/gsm8k main, test)"),
        _Split(("gsm8k_test.jsonl",), ("openai/gsm8k", "main", "test")),
        _Split(("gsm8k_train.jsonl",), ("openai/gsm8k", "main", "train")),
        _parse_gsm8k,
    ),
    **{f"mmlu_{subject}": _mmlu(subject) for subject in MMLU_SUBJECTS},
}


# --- readers -----------------------------------------------------------------------------------


class _HubReader:
    def __init__(self, loader: RecordLoader) -> None:
        self.loader = loader

    def read(self, split: _Split, *, fewshot: bool = False) -> list[Record]:
        path, config, name = split.hub
        rows = self.loader(path, config, name)
        label = f"{path}" + (f" ({config})" if config else "") + f" {name}"
        records: list[Record] = []
        for index, row in enumerate(rows):
            if not isinstance(row, dict):
                raise ScratchLMError(f"{label} record {index}: not a mapping of fields")
            records.append((f"{label} record {index}", row))
        return records


class _LocalReader:
    def __init__(self, directory: Path, task: str) -> None:
        self.directory = directory.expanduser()
        self.task = task
        if not self.directory.is_dir():
            raise ScratchLMError(
                f"--task-data {self.directory} is not a directory; pass the folder that holds the "
                "task files (named as in shared/data/evals, e.g. arc_easy_test.jsonl)"
            )

    def read(self, split: _Split, *, fewshot: bool = False) -> list[Record]:
        path = next(
            (self.directory / f for f in split.files if (self.directory / f).is_file()), None
        )
        if path is None:
            expected = " or ".join(split.files)
            why = "its few-shot examples need" if fewshot else "it needs"
            instead = " (or use --num-fewshot 0)" if fewshot else ""
            raise ScratchLMError(
                f"task {self.task}: {why} {expected} in --task-data {self.directory} (no "
                f"{self.directory / split.files[0]}); add the file in the upstream format{instead}, "
                f"or drop --task-data to load {split.hub[0]} from the Hugging Face hub"
            )
        records = _read_csv(path) if path.suffix == ".csv" else _read_jsonl(path)
        if split.labels is not None:
            labels_path = path.parent / split.labels
            if labels_path.is_file():
                _attach_labels(records, labels_path)
        return records


def _read_text(path: Path, newline: str | None = None) -> str:
    try:
        with path.open(encoding="utf-8", newline=newline) as file:
            return file.read()
    except UnicodeDecodeError:
        raise ScratchLMError(f"{path} is not UTF-8 text; save it as UTF-8") from None
    except OSError as error:
        raise ScratchLMError(f"cannot read {path}: {error.strerror or error}") from None


def _read_jsonl(path: Path) -> list[Record]:
    records: list[Record] = []
    # Split on "\n" only: str.splitlines would also split inside strings holding \u2028 or \x1c.
    for number, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ScratchLMError(
                f"{path}:{number}: not valid JSON ({error.msg}); the file needs one object per line"
            ) from None
        if not isinstance(record, dict):
            raise ScratchLMError(f"{path}:{number}: each line must be a JSON object")
        records.append((f"{path}:{number}", record))
    return records


_MMLU_HEADER = ["question", "choice0", "choice1", "choice2", "choice3", "answer"]


def _read_csv(path: Path) -> list[Record]:
    """MMLU CSVs: with the header question,choice0..choice3,answer (shared/data/evals), or the
    original Berkeley layout (no header, six columns, letter answers)."""
    # newline="" keeps the "\r\n" inside quoted fields (cais/mmlu has them) as the csv module wants.
    reader = csv.reader(io.StringIO(_read_text(path, newline=""), newline=""))
    records: list[Record] = []
    header: list[str] | None = None
    start = 1  # the line a record starts on (a quoted field may span lines)
    for row in reader:
        where, start = f"{path}:{start}", reader.line_num + 1
        if not row:
            continue
        if header is None:
            if row[0].strip() == "question":
                header = [cell.strip() for cell in row]
                continue
            header = _MMLU_HEADER
        if len(row) != len(header):
            raise ScratchLMError(
                f"{where}: {len(row)} columns, expected {len(header)} ({','.join(header)})"
            )
        records.append((where, dict(zip(header, row, strict=True))))
    return records


def _attach_labels(records: list[Record], labels_path: Path) -> None:
    labels = [line.strip() for line in _read_text(labels_path).splitlines() if line.strip()]
    if len(labels) != len(records):
        raise ScratchLMError(
            f"{labels_path} has {len(labels)} labels but its data file has {len(records)} records; "
            "they must pair up line by line"
        )
    for (_, record), label in zip(records, labels, strict=True):
        record["label"] = label


# --- building examples -------------------------------------------------------------------------


def _load(
    name: str, reader: _HubReader | _LocalReader, num_fewshot: int, seed: int, limit: int | None
) -> tuple[TaskSpec, list[Example]]:
    key = name.strip().lower()
    if num_fewshot < 0:
        raise ScratchLMError(f"--num-fewshot must be 0 or more (got {num_fewshot})")
    if limit is not None and limit < 1:
        raise ScratchLMError(f"--limit must be at least 1 (got {limit})")
    if key == "mmlu":
        # All subjects as one task (the micro average lm-eval's mmlu group reports); `limit`
        # applies per subject, as lm-eval applies it to each subtask.
        examples: list[Example] = []
        for subject in MMLU_SUBJECTS:
            examples.extend(_examples(_TASKS[f"mmlu_{subject}"], reader, num_fewshot, seed, limit))
        return _spec(
            "mmlu", "multiple_choice", 0.25, "MMLU, 57 subjects (cais/mmlu, test)"
        ), examples
    if key not in _TASKS:
        if key == "core":
            raise ScratchLMError(
                "'core' is a group of tasks, not one; expand it with expand_task_names('core')"
            )
        raise ScratchLMError(f"unknown task {name!r}{_suggestion(key)}; {_valid_names_hint()}")
    task = _TASKS[key]
    return task.spec, _examples(task, reader, num_fewshot, seed, limit)


def _docs(task: _Task, records: list[Record]) -> list[_Doc]:
    return [task.parse(where, index, record) for index, (where, record) in enumerate(records)]


def _examples(
    task: _Task, reader: _HubReader | _LocalReader, num_fewshot: int, seed: int, limit: int | None
) -> list[Example]:
    records = reader.read(task.eval_split)
    if limit is not None:
        records = records[:limit]
    docs = _docs(task, records)
    pool: list[_Doc] = []
    if num_fewshot > 0:
        if task.fewshot_split is None:
            # Shots come from the eval split itself (LAMBADA): all of it, not just the first N.
            pool = docs if limit is None else _docs(task, reader.read(task.eval_split))
        else:
            pool = _docs(task, reader.read(task.fewshot_split, fewshot=True))
        needed = num_fewshot + 1 if _draws_extra(task) else num_fewshot
        if needed > len(pool):
            raise ScratchLMError(
                f"task {task.spec.name}: --num-fewshot {num_fewshot} needs {needed} examples in its "
                f"few-shot split, which has {len(pool)}; lower --num-fewshot"
            )
    rnd = random.Random(seed)  # one per task, drawn in example order, as lm-eval's sampler
    examples: list[Example] = []
    for position, doc in enumerate(docs):
        shots = _shots(task, pool, doc, position, num_fewshot, rnd)
        prefix = task.prompt_description + "".join(shot.solved() + "\n\n" for shot in shots)
        examples.append(_example(task.spec.kind, doc, prefix))
    return examples


def _shots(
    task: _Task, pool: list[_Doc], doc: _Doc, position: int, k: int, rnd: random.Random
) -> list[_Doc]:
    if k == 0:
        return []
    if task.first_n:
        return pool[:k]
    # rnd.sample over indices draws exactly what lm-eval's rnd.sample over the documents draws.
    if task.fewshot_split is None:  # the eval split itself: drop the example by position
        picked = [i for i in rnd.sample(range(len(pool)), k + 1) if i != position][:k]
        return [pool[i] for i in picked]
    if task.draw_extra:  # lm-eval's rm_eval_doc: drop shots whose content equals the example
        drawn = [pool[i] for i in rnd.sample(range(len(pool)), k + 1)]
        return [shot for shot in drawn if not _same_content(shot, doc)][:k]
    return [pool[i] for i in rnd.sample(range(len(pool)), k)]


def _draws_extra(task: _Task) -> bool:
    return not task.first_n and (task.fewshot_split is None or task.draw_extra)


def _same_content(a: _Doc, b: _Doc) -> bool:
    # Ids are positions for some datasets; lm-eval compares the documents' fields.
    def content(doc: _Doc) -> tuple[object, ...]:
        return (doc.text, doc.choices, doc.gold, doc.contexts, doc.target)

    return content(a) == content(b)


def _example(kind: TaskKind, doc: _Doc, prefix: str) -> Example:
    if kind == "last_word":
        return LastWordExample(id=doc.id, context=prefix + doc.text, target=doc.target)
    if kind == "generative":
        answer = extract_final_number(doc.target)
        assert answer is not None, "the parser checked that the answer holds a number"
        return GenerativeExample(id=doc.id, prompt=prefix + doc.text, answer=answer)
    if doc.contexts:  # Winogrande: the option sits in the context, the rest is shared
        choices = tuple(Continuation(prefix + ctx, " " + doc.target) for ctx in doc.contexts)
    else:
        choices = tuple(Continuation(prefix + doc.text, " " + choice) for choice in doc.choices)
    return MultipleChoiceExample(id=doc.id, choices=choices, gold=doc.gold)


# --- messages ----------------------------------------------------------------------------------


def _valid_names_hint() -> str:
    return (
        f"valid tasks: core, {', '.join(BASE_TASKS)}, or mmlu_<subject> for one of the "
        f"{len(MMLU_SUBJECTS)} MMLU subjects ({', '.join(MMLU_SUBJECTS)})"
    )


def _suggestion(key: str) -> str:
    close = difflib.get_close_matches(key, (*TASK_NAMES, "core"), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
