"""`scratchlm eval`: loss and perplexity on a text, prompt suites, and benchmark tasks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scratchlm.cli.options import (
    add_checkpoint_argument,
    add_device_argument,
    add_quantize_argument,
    add_sampling_arguments,
    add_skip_checksums_argument,
    add_threads_argument,
    print_json,
    sampling_from_args,
)
from scratchlm.errors import ScratchLMError


def add_eval(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(parser)
    parser.add_argument("--data", help="text to evaluate (any --data source)")
    parser.add_argument(
        "--text-field", default="text", help="text field of .jsonl/.parquet/datasets"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="windows (--data) or scored continuations (--tasks) per forward pass",
    )
    parser.add_argument(
        "--prompts", help="prompt suite: one prompt per line, or JSONL with 'prompt'"
    )
    parser.add_argument(
        "--compare",
        action="append",
        metavar="CHECKPOINT",
        help="with --prompts: also answer with this checkpoint (repeatable)",
    )
    parser.add_argument(
        "--suite-name", help="with --prompts: output name (default: prompts-FILESTEM)"
    )
    benchmarks = parser.add_argument_group("benchmarks (--tasks)")
    benchmarks.add_argument(
        "--tasks",
        metavar="LIST",
        help="comma-separated benchmark tasks: hellaswag, arc_easy, arc_challenge, piqa, "
        "winogrande, openbookqa, boolq, lambada, gsm8k, mmlu (its 57 subjects), mmlu_SUBJECT, "
        "or core (the zero-shot log-likelihood set); or the story-world measures, on their own: "
        "story-coherence (distinct names per sampled story against the corpus, 1.0 = as the "
        "data; pronoun agreement) and story-qa (held-out story questions asked a chat model); "
        "--limit sets their stories or questions, --seed their seed",
    )
    benchmarks.add_argument(
        "--num-fewshot", type=int, default=0, help="solved examples before each question"
    )
    benchmarks.add_argument(
        "--limit", type=int, help="score only the first N examples of each task (default: all)"
    )
    benchmarks.add_argument(
        "--task-data",
        metavar="DIR",
        help="read the tasks from files in DIR (upstream formats) instead of the Hugging Face hub",
    )
    benchmarks.add_argument(
        "--chat",
        action="store_true",
        help="score a fine-tuned chat model through the chat template, zero-shot: arc_easy, "
        "arc_challenge, mmlu, mmlu_SUBJECT by the answer letter, gsm8k by its greedy reply; "
        "--tasks chat is all four",
    )
    parser.add_argument(
        "--harness",
        metavar="TASKS",
        help="run lm-evaluation-harness (pip install 'scratchlm[eval]') on these comma-separated "
        "lm-eval tasks through the scratchlm bridge; with --task-data, the local task YAMLs "
        "(arc_easy, arc_challenge, hellaswag, piqa, winogrande, openbookqa, boolq, lambada); "
        "takes --num-fewshot, --limit, --batch-size, --json",
    )
    # A prompt suite's replies: a little cooler and shorter than a free continuation.
    add_sampling_arguments(parser, temperature=0.7, max_new_tokens=128)
    add_quantize_argument(parser)
    add_threads_argument(parser)
    add_skip_checksums_argument(parser)
    add_device_argument(parser)
    parser.add_argument(
        "--json", action="store_true", help="print JSON (loss, perplexity, bits_per_byte, tokens)"
    )


def command_eval(args: argparse.Namespace) -> None:
    modes = [
        flag
        for flag, value in (
            ("--data", args.data),
            ("--prompts", args.prompts),
            ("--tasks", args.tasks),
            ("--harness", args.harness),
        )
        if value
    ]
    if len(modes) > 1:
        raise ScratchLMError(
            f"eval takes one of --data, --prompts or --tasks (or --harness), got "
            f"{' and '.join(modes)}"
        )
    if args.chat and not args.tasks:
        # --chat changes how --tasks are asked; any other mode would ignore it silently.
        raise ScratchLMError(
            "--chat scores benchmark tasks through the chat template; use it with --tasks "
            "(e.g. --tasks chat), not with " + (modes[0] if modes else "no mode")
        )
    if args.harness:
        from scratchlm.cli.harness import command_eval_harness

        command_eval_harness(args)
        return
    if args.tasks:
        command_eval_tasks(args)
        return
    if args.prompts:
        command_eval_prompts(args)
        return
    if not args.data:
        raise ScratchLMError(
            "eval needs --data TEXT (loss, perplexity, bits/byte), --prompts FILE (a prompt "
            "suite), --tasks LIST (benchmarks) or --harness TASKS (lm-evaluation-harness)"
        )
    from scratchlm.data import iter_documents
    from scratchlm.evaluation.perplexity import evaluate_text
    from scratchlm.inference.kernels.decoder import kernel_logits
    from scratchlm.inference.load import load_for_inference

    loaded, device = load_for_inference(
        args.checkpoint,
        args.device,
        args.quantize,
        verify=not args.skip_checksums,
        kv_cache=args.kv_cache,
    )
    # Raw text, uncleaned: the score is of the text exactly as given.
    documents = (
        "".join(document.pieces())
        for document in iter_documents(args.data, text_field=args.text_field)
    )
    result = evaluate_text(
        loaded.model,
        loaded.tokenizer,
        documents,
        device=device,
        batch_size=args.batch_size,
        fast_logits=kernel_logits,  # a quantized model's forwards through the decode kernels
    )
    if result.tokens == 0:
        raise ScratchLMError(f"{args.data} holds no text to evaluate; pass a non-empty file")
    values = result.as_dict()
    if args.json:
        print_json(values)
        return
    print(
        f"loss {values['loss']:.4f} nats/token | perplexity {values['perplexity']:.3f} | "
        f"{values['bits_per_byte']:.4f} bits/byte | {values['tokens']:,} tokens"
    )


def command_eval_prompts(args: argparse.Namespace) -> None:
    from scratchlm.checkpoint import load_checkpoint
    from scratchlm.evaluation.prompts import read_prompts, run_prompt_suite
    from scratchlm.inference.load import load_for_inference

    prompts = read_prompts(args.prompts)
    verify = not args.skip_checksums
    loaded, device = load_for_inference(
        args.checkpoint, args.device, args.quantize, verify=verify, kv_cache=args.kv_cache
    )
    others = [load_checkpoint(path, device, verify=verify) for path in args.compare or []]
    markdown, jsonl = run_prompt_suite(
        [loaded, *others],
        prompts,
        sampling=sampling_from_args(args),
        max_new_tokens=args.max_new_tokens,
        seed=args.seed if args.seed is not None else 0,
        suite_name=args.suite_name or f"prompts-{Path(args.prompts).stem}",
    )
    if args.json:
        print_json({"markdown": str(markdown), "jsonl": str(jsonl), "prompts": len(prompts)})
        return
    print(f"{len(prompts)} prompts x {1 + len(others)} checkpoint(s): wrote {markdown} and {jsonl}")


def command_eval_tasks(args: argparse.Namespace) -> None:
    from scratchlm.evaluation.chat_eval import check_chat_checkpoint, run_chat_benchmarks
    from scratchlm.evaluation.scoring import run_benchmarks
    from scratchlm.evaluation.tasks import (
        DEFAULT_FEWSHOT_SEED,
        expand_chat_task_names,
        expand_task_names,
        load_questions,
        load_task,
    )
    from scratchlm.inference.load import load_for_inference

    if args.num_fewshot < 0:
        raise ScratchLMError(f"--num-fewshot must be >= 0, got {args.num_fewshot}")
    if args.chat and args.num_fewshot > 0:
        raise ScratchLMError(
            f"--chat is zero-shot (the question alone in the user message), got --num-fewshot "
            f"{args.num_fewshot}; drop --num-fewshot"
        )
    if args.limit is not None and args.limit < 1:
        raise ScratchLMError(f"--limit must be >= 1, got {args.limit}")
    if args.batch_size < 1:
        raise ScratchLMError(f"--batch-size must be >= 1, got {args.batch_size}")
    if story_task_names(args.tasks):
        command_eval_stories(args)
        return
    names = expand_chat_task_names(args.tasks) if args.chat else expand_task_names(args.tasks)
    seed = DEFAULT_FEWSHOT_SEED if args.seed is None else args.seed
    task_data = Path(args.task_data) if args.task_data else None
    # Every task is read before the model is loaded: a missing file fails in seconds.
    if args.chat:
        questions = [load_questions(name, task_data=task_data, limit=args.limit) for name in names]
    else:
        tasks = [
            load_task(
                name, task_data=task_data, num_fewshot=args.num_fewshot, seed=seed, limit=args.limit
            )
            for name in names
        ]
    loaded, _ = load_for_inference(
        args.checkpoint,
        args.device,
        args.quantize,
        verify=not args.skip_checksums,
        kv_cache=args.kv_cache,
    )
    if args.chat:
        check_chat_checkpoint(loaded.metadata)

    def progress(line: str) -> None:
        if not args.json:
            print(line, file=sys.stderr, flush=True)

    if args.chat:
        report = run_chat_benchmarks(
            loaded.model, loaded.tokenizer, questions, batch_size=args.batch_size, progress=progress
        )
    else:
        report = run_benchmarks(
            loaded.model, loaded.tokenizer, tasks, batch_size=args.batch_size, progress=progress
        )
    values = report.as_dict()
    values.update(
        {"checkpoint": args.checkpoint, "num_fewshot": args.num_fewshot, "limit": args.limit}
    )
    if args.chat:
        values["chat"] = True
    if args.json:
        print_json(values)
        return
    print(f"{'task':<22} {'metric':<12} {'value':>9} {'chance':>7} {'centered':>9}  examples")
    by_name = {result.spec.name: result for result in report.results}
    for entry in report.entries:
        print(
            f"{entry.name:<22} {entry.metric:<12} {entry.value:>9.4f} "
            f"{entry.random_baseline:>7.3f} {entry.centered:>9.4f}  {entry.examples}"
        )
        # The task's other metrics, uncentered (a pooled MMLU row has only its accuracy).
        single = by_name.get(entry.name)
        for metric, value in single.metrics.items() if single else ():
            if metric != entry.metric:
                shown = f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"
                print(f"{'':<22} {metric:<12} {shown:>9}")
    stats = report.stats
    print(
        f"centered aggregate: {report.aggregate:.4f} (mean of {len(report.entries)} "
        f"task{'s' if len(report.entries) > 1 else ''}; "
        f"{'chat, ' if args.chat else ''}{args.num_fewshot}-shot)"
    )
    note = (
        f"; {stats.truncated} requests left-truncated to the model's context"
        if stats.truncated
        else ""
    )
    if stats.skipped:
        skipped = [f"{r.spec.name} {r.skipped}" for r in report.results if r.skipped]
        note += (
            f"; {stats.skipped} examples skipped, an answer longer than the model's context "
            f"({', '.join(skipped)})"
        )
    print(
        f"{stats.tokens + stats.generated_tokens:,} tokens in {stats.seconds:.1f} s "
        f"({stats.tokens_per_second:,.0f} tokens/s){note}"
    )


def story_task_names(spec: str) -> list[str]:
    """The story-world tasks `spec` names; [] when it names none. They run on their own: a list
    that mixes them with benchmarks is an error."""
    from scratchlm.evaluation.stories import STORY_TASKS

    parts = list(dict.fromkeys(part.strip().lower() for part in spec.split(",") if part.strip()))
    stories = [part for part in parts if part in STORY_TASKS]
    if stories and len(stories) < len(parts):
        others = ", ".join(part for part in parts if part not in STORY_TASKS)
        raise ScratchLMError(
            f"--tasks {spec}: the story tasks ({', '.join(STORY_TASKS)}) run on their own; "
            f"evaluate {others} in another eval call"
        )
    return stories


def command_eval_stories(args: argparse.Namespace) -> None:
    """`eval --tasks story-coherence,story-qa`: the story-world measures (scratchlm.evaluation.
    stories), one JSON object per task under "tasks" with --json."""
    from scratchlm.evaluation.stories import (
        DEFAULT_QUESTIONS,
        DEFAULT_SAMPLES,
        STORY_QA_SEED,
        character_coherence,
        check_story_qa_checkpoint,
        story_question_answering,
    )
    from scratchlm.inference.load import load_for_inference

    names = story_task_names(args.tasks)
    if args.num_fewshot > 0:
        raise ScratchLMError(
            f"the story tasks are zero-shot, got --num-fewshot {args.num_fewshot}; drop it"
        )
    if args.task_data:
        raise ScratchLMError(
            "the story tasks are generated offline from the story world; drop --task-data"
        )
    if args.chat and "story-coherence" in names:
        raise ScratchLMError(
            "story-coherence samples stories as a base model does (story-qa always asks through "
            "the chat template); drop --chat"
        )
    loaded, _ = load_for_inference(
        args.checkpoint,
        args.device,
        args.quantize,
        verify=not args.skip_checksums,
        kv_cache=args.kv_cache,
    )
    if "story-qa" in names:
        check_story_qa_checkpoint(loaded.metadata)  # before any story is sampled
    results: list[dict[str, object]] = []
    for name in names:
        if name == "story-coherence":
            coherence = character_coherence(
                loaded.model,
                loaded.tokenizer,
                samples=args.limit or DEFAULT_SAMPLES,
                seed=0 if args.seed is None else args.seed,
            )
            results.append(coherence.as_dict())
            if not args.json:
                ratio = "n/a" if coherence.ratio is None else f"{coherence.ratio:.3f}"
                agreement = coherence.pronouns.agreement
                corpus = coherence.corpus_pronouns.agreement
                print(
                    f"story-coherence: distinct-names ratio {ratio} (1.0 = as the data): "
                    f"{coherence.mean_distinct_names:.2f} distinct names per story, the corpus "
                    f"{coherence.corpus_mean_distinct_names:.2f} at the same length "
                    f"({len(coherence.samples)} stories, {coherence.seconds:.1f} s)"
                )
                print(
                    "  pronoun agreement "
                    + ("n/a" if agreement is None else f"{agreement:.3f}")
                    + f" of {coherence.pronouns.checked} checked (corpus "
                    + ("n/a" if corpus is None else f"{corpus:.3f}")
                    + ")"
                )
        else:
            qa = story_question_answering(
                loaded.model,
                loaded.tokenizer,
                count=args.limit or DEFAULT_QUESTIONS,
                seed=STORY_QA_SEED if args.seed is None else args.seed,
            )
            results.append(qa.as_dict())
            if not args.json:
                print(
                    f"story-qa: exact_match {qa.accuracy:.4f} on {len(qa.answers)} held-out "
                    f"questions; {qa.did_not_fit} did not fit the context ({qa.seconds:.1f} s)"
                )
                for kind, row in qa.by_kind().items():
                    print(f"  {kind:<8} {row['accuracy']:.4f} of {row['questions']:.0f}")
                for answer in qa.answers[:3]:
                    print(
                        f"  Q: {answer.question} | expected {answer.answer!r} | reply "
                        f"{answer.reply!r} ({'right' if answer.correct else 'wrong'})"
                    )
    if args.json:
        print_json({"checkpoint": args.checkpoint, "limit": args.limit, "tasks": results})
