"""lm-evaluation-harness task YAMLs that read the local benchmark files (the upstream formats and
file names `scratchlm eval --task-data DIR` reads) instead of the Hugging Face hub.

Pass `DIRECTORY` as lm-eval's `--include_path` (`TaskManager(include_path=...)`) and the data
folder as the task metadata `task_data` (`--metadata '{"task_data": "DIR"}'`, or the environment
variable `SCRATCHLM_TASK_DATA`). Each YAML stands in for lm-eval's stock task of the same name:
the same splits, doc_to_text, doc_to_choice, doc_to_target and metrics; only where the documents
come from differs (`local_data.py`, lm-eval's `custom_dataset` hook).
"""

from __future__ import annotations

from pathlib import Path

DIRECTORY = Path(__file__).resolve().parent

# The tasks with a local YAML here, by lm-eval task name.
LOCAL_TASKS: tuple[str, ...] = (
    "arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande", "openbookqa", "boolq",
    "lambada_openai",
)  # fmt: skip
