"""Score a base model on benchmark tasks: log-likelihoods of continuations, greedy generation, the
per-task metrics and one centered aggregate.

Log-likelihood scoring (lm-evaluation-harness's `loglikelihood`, on our token ids):

- Tokenization (`encode_pair`, lm-eval's `_encode_pair`): spaces that end the context move to the
  start of the continuation; the context is `encode(context)` and the continuation is
  `encode(context + continuation)[len(encode(context)):]`, so a merge across the boundary is
  scored as the continuation's. An empty context is the end-of-document token alone (as
  `scratchlm generate` starts an empty prompt). No token is added in front of a non-empty context
  (lm-eval's default for models without a BOS).
- A context and continuation longer than the model's context are left-truncated: the oldest
  context tokens are dropped and the continuation is always scored whole (as lm-eval's
  `[-(max_length + 1):]`); `ScoringStats.truncated` counts such requests. A continuation that
  alone does not fit is an error.
- Choices that share a context compute it once: the context (less its last token) is prefilled
  into a KV cache, its rows are copied to one row per choice, and the choices' tokens (after the
  context's last token) run as one batch at their own positions. Requests are grouped by their
  (truncated) context ids, sorted by length and batched up to `batch_size` rows, right-padded.
- Per request: the summed log-probability of the continuation's tokens, their count, and whether
  every one is the greedy (argmax) token. The padded rows of the vocabulary are never counted.

Metrics (lm-eval's definitions):

- multiple choice: `acc` = argmax of the summed log-probabilities is the gold choice; `acc_norm`
  = argmax of sum / len(choice) in characters, where the choice is the continuation without the
  one leading space that joins it to the context (lm-eval divides by `len(choice)` of the
  doc's choices, which do not hold the `target_delimiter`).
- LAMBADA (last word): `acc` = the target's every token is the greedy one; `perplexity` =
  exp(-mean over documents of the target's summed log-likelihood) (lm-eval's `perplexity`
  aggregation of per-document log-likelihoods: per word, not per token).
- generative (GSM8K): greedy generation until "\\n\\n", "Question:", the end of document or
  256 new tokens; `exact_match` = `tasks.extract_final_number` of the completion equals the
  reference answer.

Centered aggregate (DCLM's "core centered" / nanochat's CORE): for each task,

    centered = (accuracy - baseline) / (1 - baseline)

where baseline is the task's accuracy by chance (`TaskSpec.random_baseline`: 1 / number of
choices for multiple choice, 0 for LAMBADA and GSM8K), and the aggregate is the plain mean of the
tasks' centered values. 0 is chance, 1 is perfect, below 0 worse than chance. The accuracy is
`acc_norm` for hellaswag, arc_easy, arc_challenge, openbookqa and piqa (where lm-eval's and DCLM's
reports use it) and `acc` (`exact_match` for GSM8K) for every other task. MMLU counts as one task:
its subjects' results are pooled over all questions (the micro average, lm-eval's `mmlu` group
with `weight_by_size`), then centered once. The aggregate is comparable between runs only on the
same task list, few-shot count and limit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from scratchlm.errors import ScratchLMError
from scratchlm.evaluation.examples import (
    Example,
    GenerativeExample,
    LastWordExample,
    MultipleChoiceExample,
    TaskSpec,
)
from scratchlm.inference.kernels.decoder import quantized_fast_decoder
from scratchlm.kv_cache import KVCache, cache_dtype
from scratchlm.model import GPT
from scratchlm.tokenizer import Tokenizer

# Tasks whose headline accuracy is length-normalized (lm-eval's and DCLM's reports use acc_norm).
ACC_NORM_TASKS = frozenset({"hellaswag", "arc_easy", "arc_challenge", "openbookqa", "piqa"})
MAX_GENERATION_TOKENS = 256


# --- log-likelihood of continuations ---------------------------------------------------------


@dataclass(frozen=True)
class LoglikelihoodRequest:
    context_ids: tuple[int, ...]  # at least one token
    continuation_ids: tuple[int, ...]  # at least one token


@dataclass(frozen=True)
class Loglikelihood:
    logprob: float  # summed over the continuation's tokens
    tokens: int  # the continuation's tokens
    is_greedy: bool  # every continuation token is the argmax given what precedes it


@dataclass
class ScoringStats:
    """Work done: tokens through the model (no padding; a shared context counted once),
    generated tokens, seconds spent, requests whose context was left-truncated, examples skipped
    because an answer alone is longer than the model's context."""

    tokens: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0
    truncated: int = 0
    skipped: int = 0

    @property
    def tokens_per_second(self) -> float:
        return (self.tokens + self.generated_tokens) / self.seconds if self.seconds > 0 else 0.0


def encode_pair(tokenizer: Tokenizer, context: str, continuation: str) -> LoglikelihoodRequest:
    """lm-eval's `_encode_pair`: context ids and continuation ids (see the module docstring)."""
    if not context:
        return LoglikelihoodRequest((tokenizer.eos_id,), tuple(tokenizer.encode(continuation)))
    spaces = len(context) - len(context.rstrip())
    if spaces:
        # "The answer is " + "42": a BPE tokenizer spells the space with the word that follows.
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer.encode(context + continuation)
    context_ids = tokenizer.encode(context)
    if not context_ids:  # a context of spaces only
        return LoglikelihoodRequest((tokenizer.eos_id,), tuple(whole))
    return LoglikelihoodRequest(tuple(context_ids), tuple(whole[len(context_ids) :]))


def fit_request(
    request: LoglikelihoodRequest, context_length: int
) -> tuple[LoglikelihoodRequest, int]:
    """The request as scored within `context_length` positions, and how many context tokens were
    dropped. The model reads context + continuation less its last token, so
    len(context) + len(continuation) - 1 positions must fit."""
    room = context_length + 1 - len(request.continuation_ids)  # context tokens that fit
    if room < 1:
        raise ScratchLMError(
            f"a continuation of {len(request.continuation_ids)} tokens does not fit the model's "
            f"context of {context_length} tokens; evaluate a model with a longer context"
        )
    dropped = max(0, len(request.context_ids) - room)
    if not dropped:
        return request, 0
    return LoglikelihoodRequest(request.context_ids[dropped:], request.continuation_ids), dropped


@dataclass
class _Group:
    """Requests (indices) that share one context: it is computed once for all of them."""

    context: tuple[int, ...]
    members: list[int] = field(default_factory=list)


def _plan_batches(
    requests: Sequence[LoglikelihoodRequest], batch_size: int, context_length: int
) -> list[list[_Group]]:
    groups: dict[tuple[int, ...], _Group] = {}
    for index, request in enumerate(requests):
        groups.setdefault(request.context_ids, _Group(request.context_ids)).members.append(index)
    units = [
        _Group(group.context, group.members[start : start + batch_size])
        for group in groups.values()
        for start in range(0, len(group.members), batch_size)
    ]

    def longest(unit: _Group) -> int:
        return max(len(requests[index].continuation_ids) for index in unit.members)

    # Longest first: similar lengths share a batch (little padding), and a batch that runs out
    # of memory does so at the start.
    units.sort(key=lambda unit: len(unit.context) + longest(unit), reverse=True)
    batches: list[list[_Group]] = []
    rows = widest = deepest = 0
    for unit in units:
        width = max(widest, longest(unit))
        depth = max(deepest, len(unit.context))
        # Every row runs `width` positions from its context's last token: padding must not place
        # a token past the model's context (no position embedding there).
        fits = rows + len(unit.members) <= batch_size and depth - 1 + width <= context_length
        if batches and fits:
            batches[-1].append(unit)
            rows, widest, deepest = rows + len(unit.members), width, depth
        else:
            batches.append([unit])
            rows, widest, deepest = len(unit.members), longest(unit), len(unit.context)
    return batches


@torch.inference_mode()
def _score_batch(
    model: GPT, requests: Sequence[LoglikelihoodRequest], units: list[_Group], stats: ScoringStats
) -> dict[int, Loglikelihood]:
    config = model.config
    device = model.token_embedding.weight.device
    dtype = cache_dtype(model)
    row_requests = [index for unit in units for index in unit.members]
    row_units = [number for number, unit in enumerate(units) for _ in unit.members]
    rows = len(row_requests)
    prefill = max(len(unit.context) - 1 for unit in units)
    width = max(len(requests[index].continuation_ids) for index in row_requests)
    span = max(len(unit.context) - 1 for unit in units) + width
    cache = KVCache.for_model(config, rows, max(prefill, span), dtype=dtype, device=device)
    fast = quantized_fast_decoder(model, cache)
    if prefill:
        if fast is not None:  # each context less its last token, into its unit's row
            context_ids = [unit.context[:-1] for unit in units]
            fast.forward(
                [token for context in context_ids for token in context],
                [number for number, context in enumerate(context_ids) for _ in context],
                [position for context in context_ids for position in range(len(context))],
                logits_for=[],
            )
        else:
            # Each context less its last token, right-padded (padding lands at positions that
            # the continuation rows overwrite or never see).
            contexts = torch.zeros((len(units), prefill), dtype=torch.long)
            for number, unit in enumerate(units):
                contexts[number, : len(unit.context) - 1] = torch.tensor(unit.context[:-1])
            model(contexts.to(device), kv_cache=cache, last_token_only=True)
        # One cache row per continuation, a copy of its context's row.
        cache.reorder_rows(torch.tensor(row_units, device=device))
        stats.tokens += sum(len(unit.context) - 1 for unit in units)
    inputs = torch.zeros((rows, width), dtype=torch.long)
    targets = torch.zeros((rows, width), dtype=torch.long)
    positions = torch.zeros((rows, width), dtype=torch.long)
    lengths = torch.zeros(rows, dtype=torch.long)
    for row, index in enumerate(row_requests):
        request = requests[index]
        count = len(request.continuation_ids)
        start = len(request.context_ids) - 1
        # The context's last token, then the continuation less its last: their logits predict
        # the continuation's tokens.
        inputs[row, :count] = torch.tensor(
            (request.context_ids[-1], *request.continuation_ids[:-1])
        )
        targets[row, :count] = torch.tensor(request.continuation_ids)
        positions[row] = torch.arange(start, start + width)
        lengths[row] = count
        stats.tokens += count
    scored = torch.arange(width)[None, :] < lengths[:, None]  # (rows, width)
    if fast is not None:
        # Only the real tokens, row by row; their logits fill the scored slots (the same
        # row-major order), padding keeps zeros that nothing reads.
        slot_rows, slot_positions = _rows_and_positions(positions, scored)
        flat = fast.forward(inputs[scored].tolist(), slot_rows.tolist(), slot_positions.tolist())
        logits = torch.zeros((rows, width, flat.shape[-1]))
        logits[scored] = flat
    else:
        logits = model(inputs.to(device), positions=positions.to(device), kv_cache=cache)
    logits = logits[..., : config.vocab_size].float()
    targets, lengths, scored = targets.to(device), lengths.to(device), scored.to(device)
    logprobs = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None]).squeeze(-1)
    sums = (logprobs * scored).sum(dim=1).tolist()
    greedy = ((logits.argmax(dim=-1) == targets) | ~scored).all(dim=1).tolist()
    return {
        index: Loglikelihood(sums[row], int(lengths[row]), bool(greedy[row]))
        for row, index in enumerate(row_requests)
    }


def _rows_and_positions(
    positions: torch.Tensor, scored: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and position of each scored slot of (rows, width), in row-major order."""
    rows = torch.arange(positions.shape[0])[:, None].expand_as(positions)
    return rows[scored], positions[scored]


def score_loglikelihoods(
    model: GPT,
    requests: Sequence[LoglikelihoodRequest],
    *,
    batch_size: int = 8,
    stats: ScoringStats | None = None,
) -> list[Loglikelihood]:
    """The log-likelihood of each request's continuation given its context, in request order.
    `batch_size`: continuation rows per forward pass."""
    if batch_size < 1:
        raise ScratchLMError(f"--batch-size must be >= 1, got {batch_size}")
    stats = stats if stats is not None else ScoringStats()
    context_length = model.config.context_length
    fitted: list[LoglikelihoodRequest] = []
    for request in requests:
        if not request.context_ids or not request.continuation_ids:
            raise ScratchLMError(
                "a request needs at least one context and one continuation token; "
                "give the continuation some text"
            )
        request, dropped = fit_request(request, context_length)
        stats.truncated += dropped > 0
        fitted.append(request)
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    results: dict[int, Loglikelihood] = {}
    try:
        for units in _plan_batches(fitted, batch_size, context_length):
            results.update(_score_batch(model, fitted, units, stats))
    finally:
        model.train(was_training)
        stats.seconds += time.perf_counter() - started
    return [results[index] for index in range(len(fitted))]


# --- tasks -----------------------------------------------------------------------------------


def primary_metric(spec: TaskSpec) -> str:
    """The metric a task is reported and centered by (see the module docstring)."""
    if spec.kind == "generative":
        return "exact_match"
    if spec.kind == "multiple_choice" and spec.name in ACC_NORM_TASKS:
        return "acc_norm"
    return "acc"


def aggregate_name(spec: TaskSpec) -> str:
    """The task a result counts toward in the aggregate: MMLU's subjects count as "mmlu"."""
    return "mmlu" if spec.name.startswith("mmlu_") else spec.name


@dataclass
class TaskResult:
    """A task's metrics: `correct` holds each example's correctness by primary metric, so that
    subjects can be pooled (MMLU)."""

    spec: TaskSpec
    examples: int  # scored
    metrics: dict[str, float]
    correct: list[bool] = field(default_factory=list, repr=False)
    # Examples left out: an answer longer than the model's whole context cannot be scored whole.
    skipped: int = 0

    @property
    def metric(self) -> str:
        return primary_metric(self.spec)

    @property
    def value(self) -> float:
        return self.metrics[self.metric]

    @property
    def centered(self) -> float:
        return centered(self.value, self.spec.random_baseline)

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.spec.name,
            "kind": self.spec.kind,
            "examples": self.examples,
            "skipped": self.skipped,
            "metrics": dict(self.metrics),
            "metric": self.metric,
            "value": self.value,
            "random_baseline": self.spec.random_baseline,
            "centered": self.centered,
        }


def centered(value: float, baseline: float) -> float:
    """(value - baseline) / (1 - baseline): 0 at chance, 1 at perfect."""
    if not 0.0 <= baseline < 1.0:
        raise ScratchLMError(
            f"a random baseline must be in [0, 1), got {baseline}; fix the task's TaskSpec"
        )
    return (value - baseline) / (1.0 - baseline)


def _argmax(values: Sequence[float]) -> int:
    # The first of equal values, as numpy's argmax (lm-eval's).
    return max(range(len(values)), key=lambda index: (values[index], -index))


def _choice_length(continuation: str) -> int:
    """The characters acc_norm divides by: the choice without the space that joins it to the
    context (lm-eval's len(choice) excludes its target_delimiter)."""
    choice = continuation.removeprefix(" ")
    return max(1, len(choice))


def score_task(
    model: GPT,
    tokenizer: Tokenizer,
    spec: TaskSpec,
    examples: Sequence[Example],
    *,
    batch_size: int = 8,
    stats: ScoringStats | None = None,
    max_new_tokens: int = MAX_GENERATION_TOKENS,
) -> TaskResult:
    """Score one task's examples (all of the task's kind) and compute its metrics."""
    stats = stats if stats is not None else ScoringStats()
    if not examples:
        raise ScratchLMError(
            f"task {spec.name} has no examples; check its data (or a --limit of at least 1)"
        )
    wrong = [example.id for example in examples if _kind_of(example) != spec.kind]
    if wrong:
        raise ScratchLMError(
            f"task {spec.name} is {spec.kind} but example {wrong[0]} is not; fix the task loader"
        )
    # (Every example is of the task's kind: the filters only tell the type checker.)
    if spec.kind == "multiple_choice":
        choices = [e for e in examples if isinstance(e, MultipleChoiceExample)]
        return _score_multiple_choice(model, tokenizer, spec, choices, batch_size, stats)
    if spec.kind == "last_word":
        words = [e for e in examples if isinstance(e, LastWordExample)]
        return _score_last_word(model, tokenizer, spec, words, batch_size, stats)
    questions = [e for e in examples if isinstance(e, GenerativeExample)]
    return _score_generative(model, tokenizer, spec, questions, max_new_tokens, stats)


def _kind_of(example: Example) -> str:
    if isinstance(example, MultipleChoiceExample):
        return "multiple_choice"
    if isinstance(example, LastWordExample):
        return "last_word"
    return "generative"


def _fits(model: GPT, request: LoglikelihoodRequest) -> bool:
    """Whether the continuation can be scored whole: at least one context token and every
    continuation token within the model's context (lm-eval would cut the answer itself)."""
    return len(request.continuation_ids) <= model.config.context_length


def _none_fit(spec: TaskSpec, model: GPT, count: int) -> ScratchLMError:
    return ScratchLMError(
        f"task {spec.name}: all {count} examples have an answer longer than the model's context "
        f"of {model.config.context_length} tokens; evaluate a model with a longer context, or "
        "leave the task out"
    )


def _score_multiple_choice(
    model: GPT,
    tokenizer: Tokenizer,
    spec: TaskSpec,
    examples: Sequence[MultipleChoiceExample],
    batch_size: int,
    stats: ScoringStats,
) -> TaskResult:
    requests: list[LoglikelihoodRequest] = []
    scored: list[MultipleChoiceExample] = []
    for example in examples:
        if not 0 <= example.gold < len(example.choices):
            raise ScratchLMError(
                f"task {spec.name} example {example.id}: gold {example.gold} is not one of its "
                f"{len(example.choices)} choices; fix the task loader"
            )
        pairs = []
        for number, choice in enumerate(example.choices):
            request = encode_pair(tokenizer, choice.context, choice.continuation)
            if not request.continuation_ids:
                raise ScratchLMError(
                    f"task {spec.name} example {example.id}: choice {number} has an empty "
                    "continuation; fix the task loader"
                )
            pairs.append(request)
        # A choice that cannot be scored whole would be compared unfairly: skip the question.
        if all(_fits(model, request) for request in pairs):
            scored.append(example)
            requests.extend(pairs)
    if not scored:
        raise _none_fit(spec, model, len(examples))
    scores = iter(score_loglikelihoods(model, requests, batch_size=batch_size, stats=stats))
    correct, correct_norm = [], []
    for example in scored:
        sums = [next(scores).logprob for _ in example.choices]
        normalized = [
            total / _choice_length(choice.continuation)
            for total, choice in zip(sums, example.choices, strict=True)
        ]
        correct.append(_argmax(sums) == example.gold)
        correct_norm.append(_argmax(normalized) == example.gold)
    metrics = {"acc": _mean(correct), "acc_norm": _mean(correct_norm)}
    result = TaskResult(spec, len(scored), metrics, skipped=len(examples) - len(scored))
    result.correct = correct_norm if result.metric == "acc_norm" else correct
    stats.skipped += result.skipped
    return result


def _score_last_word(
    model: GPT,
    tokenizer: Tokenizer,
    spec: TaskSpec,
    examples: Sequence[LastWordExample],
    batch_size: int,
    stats: ScoringStats,
) -> TaskResult:
    requests = []
    for example in examples:
        request = encode_pair(tokenizer, example.context, example.target)
        if not request.continuation_ids:
            raise ScratchLMError(
                f"task {spec.name} example {example.id} has an empty target; fix the task loader"
            )
        if _fits(model, request):
            requests.append(request)
    if not requests:
        raise _none_fit(spec, model, len(examples))
    scores = score_loglikelihoods(model, requests, batch_size=batch_size, stats=stats)
    correct = [score.is_greedy for score in scores]
    mean_loglikelihood = sum(score.logprob for score in scores) / len(scores)
    metrics = {"acc": _mean(correct), "perplexity": math.exp(min(-mean_loglikelihood, 700.0))}
    skipped = len(examples) - len(requests)
    stats.skipped += skipped
    return TaskResult(spec, len(requests), metrics, correct, skipped=skipped)


def _score_generative(
    model: GPT,
    tokenizer: Tokenizer,
    spec: TaskSpec,
    examples: Sequence[GenerativeExample],
    max_new_tokens: int,
    stats: ScoringStats,
) -> TaskResult:
    from scratchlm.evaluation.tasks import STOP_SEQUENCES, extract_final_number
    from scratchlm.inference.engine import Engine
    from scratchlm.inference.settings import GREEDY
    from scratchlm.inference.streaming import TextStream

    engine = Engine(model)
    correct = []
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    try:
        for example in examples:
            prompt_ids = tokenizer.encode(example.prompt) if example.prompt else [tokenizer.eos_id]
            generated: list[int] = []
            tokens = engine.generate(
                prompt_ids,
                max_new_tokens=max_new_tokens,
                sampling=GREEDY,
                stop_ids=frozenset({tokenizer.eos_id}),
                truncate=True,
            )
            # The stream stops pulling tokens at the first stop string.
            stream = TextStream(tokenizer, STOP_SEQUENCES.get(spec.name, ("\n\n",)))
            text = "".join(stream.feed(_recorded(tokens, generated)))
            stats.tokens += len(prompt_ids) - engine.truncated_tokens
            stats.generated_tokens += len(generated)
            stats.truncated += engine.truncated_tokens > 0
            predicted = extract_final_number(text)
            reference = extract_final_number(example.answer) or example.answer.strip()
            correct.append(predicted is not None and predicted == reference)
    finally:
        model.train(was_training)
        stats.seconds += time.perf_counter() - started
    return TaskResult(spec, len(examples), {"exact_match": _mean(correct)}, correct)


def _recorded(tokens: Iterator[int], into: list[int]) -> Iterator[int]:
    for token in tokens:
        into.append(token)
        yield token


def _mean(values: Sequence[bool]) -> float:
    return sum(values) / len(values)


# --- the aggregate ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AggregateEntry:
    """One task of the aggregate (MMLU's subjects pooled into one)."""

    name: str
    metric: str
    value: float
    random_baseline: float
    examples: int
    subtasks: int

    @property
    def centered(self) -> float:
        return centered(self.value, self.random_baseline)

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "metric": self.metric,
            "value": self.value,
            "random_baseline": self.random_baseline,
            "centered": self.centered,
            "examples": self.examples,
            "subtasks": self.subtasks,
        }


def aggregate_entries(results: Sequence[TaskResult]) -> list[AggregateEntry]:
    """The tasks of the aggregate, in first-seen order: a task as it is, MMLU's subjects pooled
    over all their questions (the micro average; its baseline the questions' mean baseline)."""
    pooled: dict[str, list[TaskResult]] = {}
    for result in results:
        pooled.setdefault(aggregate_name(result.spec), []).append(result)
    entries = []
    for name, members in pooled.items():
        if len(members) == 1:  # a task, or one MMLU subject alone: under its own name
            only = members[0]
            entries.append(
                AggregateEntry(
                    only.spec.name,
                    only.metric,
                    only.value,
                    only.spec.random_baseline,
                    only.examples,
                    1,
                )
            )
            continue
        examples = sum(member.examples for member in members)
        correct = sum(sum(member.correct) for member in members)
        baseline = sum(m.spec.random_baseline * m.examples for m in members) / examples
        entries.append(
            AggregateEntry(
                name, members[0].metric, correct / examples, baseline, examples, len(members)
            )
        )
    return entries


def centered_aggregate(results: Sequence[TaskResult]) -> float:
    """The mean over tasks (MMLU as one) of (accuracy - baseline) / (1 - baseline)."""
    entries = aggregate_entries(results)
    if not entries:
        raise ScratchLMError("no task results to aggregate; pass at least one task")
    return sum(entry.centered for entry in entries) / len(entries)


# --- a whole run -----------------------------------------------------------------------------


@dataclass
class BenchmarkReport:
    results: list[TaskResult]
    stats: ScoringStats

    @property
    def entries(self) -> list[AggregateEntry]:
        return aggregate_entries(self.results)

    @property
    def aggregate(self) -> float:
        return centered_aggregate(self.results)

    def as_dict(self) -> dict[str, Any]:
        return {
            "tasks": [result.as_dict() for result in self.results],
            "aggregate_tasks": [entry.as_dict() for entry in self.entries],
            "centered_aggregate": self.aggregate,
            "tokens": self.stats.tokens,
            "generated_tokens": self.stats.generated_tokens,
            "seconds": self.stats.seconds,
            "tokens_per_second": self.stats.tokens_per_second,
            "truncated_requests": self.stats.truncated,
            "skipped_examples": self.stats.skipped,
        }


def run_benchmarks(
    model: GPT,
    tokenizer: Tokenizer,
    tasks: Sequence[tuple[TaskSpec, Sequence[Example]]],
    *,
    batch_size: int = 8,
    progress: Callable[[str], None] | None = None,
) -> BenchmarkReport:
    """Score every (spec, examples) task; `progress` hears a line as each task ends."""
    stats = ScoringStats()
    results = []
    for spec, examples in tasks:
        result = score_task(model, tokenizer, spec, examples, batch_size=batch_size, stats=stats)
        results.append(result)
        if progress is not None:
            progress(
                f"{spec.name}: {result.metric} {result.value:.4f} ({result.examples} examples)"
            )
    return BenchmarkReport(results, stats)
