"""The documents of the local task YAMLs: lm-eval's `custom_dataset` hook, one function per task.

lm-eval loads this file by path (`!function local_data.arc_easy` in a YAML beside it) and calls
the function with the task's metadata as keyword arguments; `task_data` (or the environment
variable SCRATCHLM_TASK_DATA) names the folder of upstream-format files. The files are found and
read exactly as `scratchlm eval --tasks ... --task-data DIR` reads them (same names, same labels
sidecars, same one-line errors), each record is checked by that task's parser, and the records
are handed to lm-eval in the schema of the Hugging Face dataset its stock task reads, so the
stock YAML's templates apply unchanged.

This module must not import `scratchlm.evaluation.harness`: under `python -m
scratchlm.evaluation.harness` that module runs as __main__ and a second import would register the
model class twice.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scratchlm.errors import ScratchLMError
from scratchlm.evaluation import tasks as builtin

ENVIRONMENT_VARIABLE = "SCRATCHLM_TASK_DATA"

# lm-eval task name -> scratchlm task name (the names `--tasks` and the file table use).
_BUILTIN_NAMES = {"lambada_openai": "lambada"}

Row = dict[str, Any]


def task_data_directory(metadata: dict[str, Any]) -> Path:
    """The folder of task files: the `task_data` metadata, else $SCRATCHLM_TASK_DATA."""
    value = metadata.get("task_data") or os.environ.get(ENVIRONMENT_VARIABLE)
    if not value:
        raise ScratchLMError(
            "the local lm-eval tasks need the folder of task files: pass "
            '--metadata \'{"task_data": "DIR"}\' to lm-eval (or TaskManager(metadata=...)), '
            f"or set {ENVIRONMENT_VARIABLE}=DIR"
        )
    return Path(str(value)).expanduser()


# --- records in the Hugging Face schemas of lm-eval's stock tasks ------------------------------


def _arc_row(where: str, record: Row, stem_key: str) -> Row:
    # allenai/ai2_arc and allenai/openbookqa: flat question, choices {text, label}; AI2's original
    # files nest both under `question`.
    stem, texts, labels = builtin._question_and_choices(where, record, stem_key)
    return {
        "id": str(record.get("id", "")),
        stem_key: stem,
        "choices": {"text": list(texts), "label": list(labels)},
        "answerKey": builtin._str(where, record, "answerKey"),
    }


def _hellaswag_row(where: str, record: Row) -> Row:
    # Rowan/hellaswag: the label is a string there.
    return {
        "ind": int(record["ind"]) if isinstance(record.get("ind"), int) else -1,
        "activity_label": record["activity_label"],
        "ctx_a": record["ctx_a"],
        "ctx_b": record["ctx_b"],
        "endings": list(record["endings"]),
        "label": str(record["label"]),
    }


def _piqa_row(where: str, record: Row) -> Row:
    # baber/piqa: an integer label (the upstream file keeps it in the -labels.lst sidecar).
    return {
        "goal": record["goal"],
        "sol1": record["sol1"],
        "sol2": record["sol2"],
        "label": int(record["label"]),
    }


def _winogrande_row(where: str, record: Row) -> Row:
    # allenai/winogrande: answer "1"/"2" (from the record, or the -labels.lst sidecar's label).
    answer = record.get("answer") or record.get("label")
    return {
        "sentence": record["sentence"],
        "option1": record["option1"],
        "option2": record["option2"],
        "answer": str(answer),
    }


def _boolq_row(where: str, record: Row) -> Row:
    # aps/super_glue boolq: label 0/1 (the upstream jsonl has answer true/false).
    answer = record["label"] if "label" in record else record.get("answer")
    return {
        "question": record["question"],
        "passage": record["passage"],
        "idx": int(record["idx"]) if isinstance(record.get("idx"), int) else -1,
        "label": int(answer) if isinstance(answer, (bool, int)) else int(str(answer)),
    }


def _lambada_row(where: str, record: Row) -> Row:
    return {"text": record["text"]}


_ROWS: dict[str, Callable[[str, Row], Row]] = {
    "arc_easy": lambda where, record: _arc_row(where, record, "question"),
    "arc_challenge": lambda where, record: _arc_row(where, record, "question"),
    "openbookqa": lambda where, record: _arc_row(where, record, "question_stem"),
    "hellaswag": _hellaswag_row,
    "piqa": _piqa_row,
    "winogrande": _winogrande_row,
    "boolq": _boolq_row,
    "lambada_openai": _lambada_row,
}


def load(task: str, metadata: dict[str, Any], splits: dict[str, str]) -> Any:
    """A `datasets.DatasetDict` of the task's local files: `splits` maps lm-eval's split names to
    "eval" or "fewshot" (the built-in task's eval and few-shot files). A missing few-shot file
    gives an empty split, so that a zero-shot run needs only the eval file (lm-eval reads the
    few-shot split when it builds the task, used or not)."""
    import datasets

    directory = task_data_directory(metadata)
    name = _BUILTIN_NAMES.get(task, task)
    spec = builtin._TASKS[name]
    reader = builtin._LocalReader(directory, name)
    to_row = _ROWS[task]
    result = {}
    for split_name, role in splits.items():
        split = spec.eval_split if role == "eval" else spec.fewshot_split
        assert split is not None, f"{task} has no few-shot files; its YAML names no such split"
        present = any((directory / file).is_file() for file in split.files)
        records = reader.read(split, fewshot=role == "fewshot") if present or role == "eval" else []
        rows = []
        for index, (where, record) in enumerate(records):
            spec.parse(where, index, record)  # the built-in parser's checks and messages
            rows.append(to_row(where, record))
        result[split_name] = datasets.Dataset.from_list(rows)
    return datasets.DatasetDict(result)


# --- one hook per YAML (lm-eval calls it with the task's metadata as keyword arguments) ---------


def arc_easy(**metadata: Any) -> Any:
    return load("arc_easy", metadata, {"test": "eval", "train": "fewshot"})


def arc_challenge(**metadata: Any) -> Any:
    return load("arc_challenge", metadata, {"test": "eval", "train": "fewshot"})


def openbookqa(**metadata: Any) -> Any:
    return load("openbookqa", metadata, {"test": "eval", "train": "fewshot"})


def hellaswag(**metadata: Any) -> Any:
    return load("hellaswag", metadata, {"validation": "eval", "train": "fewshot"})


def piqa(**metadata: Any) -> Any:
    return load("piqa", metadata, {"validation": "eval", "train": "fewshot"})


def winogrande(**metadata: Any) -> Any:
    return load("winogrande", metadata, {"validation": "eval", "train": "fewshot"})


def boolq(**metadata: Any) -> Any:
    return load("boolq", metadata, {"validation": "eval", "train": "fewshot"})


def lambada_openai(**metadata: Any) -> Any:
    return load("lambada_openai", metadata, {"test": "eval"})


# lm-eval's own document functions, reused so that the local tasks format exactly as the stock
# ones (the stock YAMLs name them by a path relative to lm-eval's task folders).
def hellaswag_process_docs(dataset: Any) -> Any:
    from lm_eval.tasks.hellaswag.utils import process_docs

    return process_docs(dataset)


def winogrande_doc_to_text(doc: Row) -> Any:
    from lm_eval.tasks.winogrande.preprocess_winogrande import doc_to_text

    return doc_to_text(doc)


def winogrande_doc_to_target(doc: Row) -> Any:
    from lm_eval.tasks.winogrande.preprocess_winogrande import doc_to_target

    return doc_to_target(doc)


def winogrande_doc_to_choice(doc: Row) -> Any:
    from lm_eval.tasks.winogrande.preprocess_winogrande import doc_to_choice

    return doc_to_choice(doc)
