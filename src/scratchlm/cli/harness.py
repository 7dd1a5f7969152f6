"""`scratchlm eval --harness TASKS`: lm-evaluation-harness's `simple_evaluate` on our model (the
bridge in `scratchlm.evaluation.harness`), its per-task metrics printed as a table or JSON."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

from scratchlm.cli.options import print_json
from scratchlm.errors import ScratchLMError

# Our task names whose lm-eval task has another name.
LM_EVAL_NAMES = {"lambada": "lambada_openai"}


def harness_task_names(spec: str, *, local: bool) -> list[str]:
    """lm-eval task names from "arc_easy,lambada" or "core": ours are renamed where lm-eval's
    differ; with `local` (--task-data) only the tasks that have a local YAML are accepted."""
    from scratchlm.evaluation.harness_tasks import LOCAL_TASKS
    from scratchlm.evaluation.tasks import CORE_TASKS

    names: list[str] = []
    for part in (part.strip() for part in spec.split(",")):
        if not part:
            continue
        expanded = list(CORE_TASKS) if part.lower() == "core" else [part]
        for name in (LM_EVAL_NAMES.get(item, item) for item in expanded):
            if name not in names:
                names.append(name)
    if not names:
        raise ScratchLMError(f"--harness {spec!r} names no task; pass e.g. --harness arc_easy")
    unknown = [name for name in names if name not in LOCAL_TASKS]
    if local and unknown:
        raise ScratchLMError(
            f"--task-data has local lm-eval tasks for {', '.join(LOCAL_TASKS)} (lambada = "
            f"lambada_openai), not {', '.join(unknown)}; drop --task-data to run lm-eval's stock "
            "tasks from the Hugging Face hub"
        )
    return names


def _check_local_files(names: list[str], task_data: Path, args: argparse.Namespace) -> None:
    """Read each task as the built-in scorer would: a missing or malformed file (or too few
    few-shot examples) fails here in one line, before lm-eval and the model load."""
    from scratchlm.evaluation.tasks import load_task

    reverse = {lm_eval: ours for ours, lm_eval in LM_EVAL_NAMES.items()}
    for name in names:
        load_task(
            reverse.get(name, name),
            task_data=task_data,
            num_fewshot=args.num_fewshot,
            limit=args.limit,
        )


def _metrics(task_results: dict[str, Any]) -> dict[str, float]:
    """lm-eval's "acc,none", "acc_stderr,none", ... as {"acc": ..., "acc_stderr": ...}."""
    metrics = {}
    for key, value in task_results.items():
        metric, _, filter_name = key.partition(",")
        # Numbers only: a stderr lm-eval could not compute is the string "N/A".
        if filter_name and isinstance(value, (int, float)):
            metrics[metric] = float(value)
    return metrics


def _task_manager(task_data: Path | None) -> Any:
    """lm-eval's task index: the local YAMLs over `task_data`, else lm-eval's stock tasks."""
    from lm_eval.tasks import TaskManager

    if task_data is None:
        return TaskManager()
    from scratchlm.evaluation.harness_tasks import DIRECTORY

    # Only the local YAMLs: indexing lm-eval's thousands of stock tasks takes most of a minute.
    return TaskManager(
        include_path=str(DIRECTORY),
        include_defaults=False,
        metadata={"task_data": str(task_data.expanduser().resolve())},
    )


def run_harness(args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    """The task names and lm-eval's results dictionary (`simple_evaluate`'s return)."""
    if args.num_fewshot < 0:
        raise ScratchLMError(f"--num-fewshot must be >= 0, got {args.num_fewshot}")
    if args.limit is not None and args.limit < 1:
        raise ScratchLMError(f"--limit must be >= 1, got {args.limit}")
    if args.batch_size < 1:
        raise ScratchLMError(f"--batch-size must be >= 1, got {args.batch_size}")
    task_data = Path(args.task_data) if args.task_data else None
    names = harness_task_names(args.harness, local=task_data is not None)
    if task_data is not None:
        _check_local_files(names, task_data, args)

    # The bridge first: it turns a missing lm-eval into the one-line pip hint.
    from scratchlm.evaluation.harness import ScratchLMHarness
    from scratchlm.evaluation.tasks import DEFAULT_FEWSHOT_SEED
    from scratchlm.inference.load import load_for_inference

    manager = _task_manager(task_data)
    loaded, _ = load_for_inference(
        args.checkpoint,
        args.device,
        args.quantize,
        verify=not args.skip_checksums,
        kv_cache=args.kv_cache,
    )
    model = ScratchLMHarness(
        model=loaded.model, tokenizer=loaded.tokenizer, batch_size=args.batch_size
    )
    model.checkpoint = str(loaded.path)
    seed = DEFAULT_FEWSHOT_SEED if args.seed is None else args.seed
    from lm_eval import simple_evaluate

    # lm-eval prints progress notes ("bootstrapping for stddev: ...") to stdout: keep stdout for
    # our table or JSON.
    with contextlib.redirect_stdout(sys.stderr):
        results = simple_evaluate(
            model=model,
            tasks=names,
            num_fewshot=args.num_fewshot,
            limit=args.limit,
            task_manager=manager,
            log_samples=False,
            fewshot_random_seed=seed,
        )
    assert results is not None, "a single process is rank 0: simple_evaluate returns results"
    return names, results


def _number(value: float | None) -> str:
    if value is None:
        return f"{'':>9}"
    # A perplexity of a barely trained model runs to many digits.
    return f"{value:>9.4f}" if abs(value) < 1e4 else f"{value:>9.4g}"


def command_eval_harness(args: argparse.Namespace) -> None:
    names, results = run_harness(args)
    rows = {name: _metrics(results["results"].get(name, {})) for name in names}
    samples = {
        name: int(results.get("n-samples", {}).get(name, {}).get("effective", 0)) for name in names
    }
    if args.json:
        import lm_eval

        print_json(
            {
                "checkpoint": args.checkpoint,
                "lm_eval_version": lm_eval.__version__,
                "num_fewshot": args.num_fewshot,
                "limit": args.limit,
                "tasks": {
                    name: {"metrics": rows[name], "examples": samples[name]} for name in names
                },
                "versions": results.get("versions", {}),
            }
        )
        return
    print(f"{'task':<18} {'metric':<12} {'value':>9} {'stderr':>9}  examples")
    for name in names:
        first = True
        for metric, value in rows[name].items():
            if metric.endswith("_stderr"):
                continue
            stderr = rows[name].get(f"{metric}_stderr")
            count = str(samples[name]) if first else ""
            print(
                f"{name if first else '':<18} {metric:<12} {_number(value)} "
                f"{_number(stderr)}  {count}"
            )
            first = False
    print(
        f"lm-evaluation-harness, {args.num_fewshot}-shot"
        + (f", first {args.limit} examples per task" if args.limit else ""),
        file=sys.stderr,
    )
