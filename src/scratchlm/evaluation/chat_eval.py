"""Score a chat (fine-tuned) model on benchmark tasks through the chat template, zero-shot, as
nanochat's chat eval does (scripts/chat_eval.py, tasks/{arc,mmlu,gsm8k}.py).

Multiple choice (ARC-Easy, ARC-Challenge, MMLU): the user message is the question, its choices
lettered A, B, C, ... by position (ARC's numeric labels become letters too) and a line asking for
the letter (`format_multiple_choice`), rendered by `chat_template.render` with the generation
prompt, so the sequence ends with `<|assistant|>` (and a newline, in template v2). One forward
pass; the logits at that last position, restricted to the letters of the question's choices,
give the prediction by argmax (the first letter on a tie). Many questions share a forward:
right-padded rows, each read at its own last real position (causal attention: padding after a row
never reaches it).

The letter tokens are `tokenizer.encode("A")`, with no leading space: `render` encodes an assistant
message's content after `<|assistant|>` (v2: after its newline, which GPT-2's pre-tokenizer never
joins to a letter), so a fine-tuned model that replies "B" learned `encode("B")` as the first token
of its reply. With our byte-level BPE (`add_prefix_space=False`)
a bare capital letter is always one token (every byte is in the vocabulary); " B" is another token
(or two), one the model never saw in that position. A letter that is not one token (a character
tokenizer that never saw it) is an error.

GSM8K: the user message is the question alone; the reply is greedy (temperature 0) through the
Engine until `<|end|>`, the end of document or 256 new tokens; the final number of the reply
(`tasks.extract_final_number`: after "####", else the last number) must equal the reference's.

Metrics: `acc` for multiple choice, `exact_match` for GSM8K. The centered aggregate is the base
path's (`scoring.aggregate_entries`, `scoring.centered`): mean over tasks of (acc - baseline) /
(1 - baseline), the baseline being the mean over questions of 1 / number of choices (0 for GSM8K),
MMLU's subjects pooled over all their questions into one task. It is comparable only between runs
on the same task list and limit, and not with the base path's (log-likelihood, lm-eval framing).
"""

from __future__ import annotations

import string
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from scratchlm.chat_template import Message, check_version, end_of_turn_id, render
from scratchlm.errors import ScratchLMError
from scratchlm.evaluation.examples import TaskSpec
from scratchlm.evaluation.scoring import (
    MAX_GENERATION_TOKENS,
    BenchmarkReport,
    ScoringStats,
    TaskResult,
)
from scratchlm.evaluation.tasks import ChatQuestion, extract_final_number
from scratchlm.model import GPT
from scratchlm.tokenizer import Tokenizer

LETTERS = string.ascii_uppercase


class ChatTaskResult(TaskResult):
    """A chat task's metrics: reported and centered by plain `acc` (no acc_norm: one letter token
    per choice) or GSM8K's `exact_match`."""

    @property
    def metric(self) -> str:
        return "exact_match" if self.spec.kind == "generative" else "acc"


def check_chat_checkpoint(metadata: dict[str, Any]) -> None:
    """A checkpoint written with a chat template this scratchlm renders (its config.json records
    the version; the loaded tokenizer carries it, so `render` uses the model's own format)."""
    version = metadata.get("chat_template_version")
    if version is None:
        raise ScratchLMError(
            "the checkpoint has no chat template; fine-tune it with `scratchlm finetune` first, "
            "then evaluate the result with --chat"
        )
    check_version(version, "the checkpoint")


def _letters(count: int) -> str:
    if not 2 <= count <= len(LETTERS):
        raise ScratchLMError(
            f"a multiple-choice question needs 2 to {len(LETTERS)} choices, got {count}; "
            "fix the task's data"
        )
    return LETTERS[:count]


def format_multiple_choice(question: ChatQuestion) -> str:
    """The user message for a multiple-choice question, e.g.

    Which gas do plants take in?

    A. oxygen
    B. carbon dioxide
    C. helium

    Answer with the letter of the correct choice only (A, B or C).
    """
    letters = _letters(len(question.choices))
    lettered = "\n".join(
        f"{letter}. {choice.strip()}"
        for letter, choice in zip(letters, question.choices, strict=True)
    )
    named = ", ".join(letters[:-1]) + f" or {letters[-1]}"
    return (
        f"{question.question.strip()}\n\n{lettered}\n\n"
        f"Answer with the letter of the correct choice only ({named})."
    )


def chat_prompt(tokenizer: Tokenizer, content: str) -> list[int]:
    """One user message through the chat template, ending with the generation prompt."""
    messages: list[Message] = [{"role": "user", "content": content}]
    ids, _ = render(messages, tokenizer, add_generation_prompt=True)
    return ids


def letter_ids(tokenizer: Tokenizer, count: int) -> list[int]:
    """The token of each of the first `count` letters as the reply's first token (no space)."""
    ids = []
    for letter in _letters(count):
        encoded = tokenizer.encode(letter)
        if len(encoded) != 1 or encoded[0] == tokenizer.unk_id:
            raise ScratchLMError(
                f"the tokenizer spells the answer letter {letter!r} as {len(encoded)} token(s) "
                f"{encoded}, not one known token; evaluate a model with a BPE tokenizer"
            )
        ids.append(encoded[0])
    return ids


@dataclass(frozen=True)
class LetterPrediction:
    predicted: int  # index of the argmax letter among the question's choices
    logits: tuple[float, ...]  # the letters' logits at the answer position, float32


@torch.inference_mode()
def score_letters(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    candidates: Sequence[Sequence[int]],
    *,
    batch_size: int = 8,
    stats: ScoringStats | None = None,
) -> list[LetterPrediction]:
    """For each prompt, the logits of its candidate tokens at its last position and their argmax.
    A prompt longer than the model's context keeps its last `context_length` tokens."""
    if batch_size < 1:
        raise ScratchLMError(f"--batch-size must be >= 1, got {batch_size}")
    stats = stats if stats is not None else ScoringStats()
    context_length = model.config.context_length
    fitted = [list(prompt[-context_length:]) for prompt in prompts]
    stats.truncated += sum(len(prompt) > context_length for prompt in prompts)
    device = model.token_embedding.weight.device
    # Longest first: rows of similar length share a batch (little padding).
    order = sorted(range(len(fitted)), key=lambda index: len(fitted[index]), reverse=True)
    results: dict[int, LetterPrediction] = {}
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            width = len(fitted[rows[0]])
            inputs = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T), pad id 0
            for row, index in enumerate(rows):
                inputs[row, : len(fitted[index])] = torch.tensor(fitted[index])
            last = torch.tensor([len(fitted[index]) - 1 for index in rows], device=device)
            logits = model(inputs.to(device))  # (B, T, padded_vocab)
            answer = logits[torch.arange(len(rows), device=device), last].float()  # (B, vocab)
            for row, index in enumerate(rows):
                values = answer[row, list(candidates[index])].tolist()
                # The first of equal logits, as torch's and nanochat's argmax.
                best = max(range(len(values)), key=lambda i: (values[i], -i))
                results[index] = LetterPrediction(best, tuple(values))
            stats.tokens += sum(len(fitted[index]) for index in rows)
    finally:
        model.train(was_training)
        stats.seconds += time.perf_counter() - started
    return [results[index] for index in range(len(fitted))]


def score_chat_multiple_choice(
    model: GPT,
    tokenizer: Tokenizer,
    spec: TaskSpec,
    questions: Sequence[ChatQuestion],
    *,
    batch_size: int = 8,
    stats: ScoringStats | None = None,
) -> ChatTaskResult:
    """`acc`: the argmax letter at the reply's first position is the gold choice's."""
    prompts, candidates = [], []
    for question in questions:
        if not 0 <= question.gold < len(question.choices):
            raise ScratchLMError(
                f"task {spec.name} question {question.id}: gold {question.gold} is not one of its "
                f"{len(question.choices)} choices; fix the task's data"
            )
        prompts.append(chat_prompt(tokenizer, format_multiple_choice(question)))
        candidates.append(letter_ids(tokenizer, len(question.choices)))
    predictions = score_letters(model, prompts, candidates, batch_size=batch_size, stats=stats)
    correct = [
        prediction.predicted == question.gold
        for prediction, question in zip(predictions, questions, strict=True)
    ]
    return ChatTaskResult(spec, len(questions), {"acc": _mean(correct)}, correct)


def score_chat_gsm8k(
    model: GPT,
    tokenizer: Tokenizer,
    spec: TaskSpec,
    questions: Sequence[ChatQuestion],
    *,
    max_new_tokens: int = MAX_GENERATION_TOKENS,
    stats: ScoringStats | None = None,
) -> ChatTaskResult:
    """`exact_match`: the greedy reply's final number equals the reference answer."""
    from scratchlm.inference.engine import Engine
    from scratchlm.inference.settings import GREEDY

    stats = stats if stats is not None else ScoringStats()
    engine = Engine(model)
    stop_ids = frozenset({end_of_turn_id(tokenizer), tokenizer.eos_id})
    correct = []
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    try:
        for question in questions:
            prompt = chat_prompt(tokenizer, question.question)
            reply = list(
                engine.generate(
                    prompt,
                    max_new_tokens=max_new_tokens,
                    sampling=GREEDY,
                    stop_ids=stop_ids,
                    truncate=True,
                )
            )
            stats.tokens += len(prompt) - engine.truncated_tokens
            stats.generated_tokens += len(reply)
            stats.truncated += engine.truncated_tokens > 0
            predicted = extract_final_number(tokenizer.decode(reply))
            correct.append(predicted is not None and predicted == question.answer)
    finally:
        model.train(was_training)
        stats.seconds += time.perf_counter() - started
    return ChatTaskResult(spec, len(questions), {"exact_match": _mean(correct)}, correct)


def score_chat_task(
    model: GPT,
    tokenizer: Tokenizer,
    spec: TaskSpec,
    questions: Sequence[ChatQuestion],
    *,
    batch_size: int = 8,
    stats: ScoringStats | None = None,
    max_new_tokens: int = MAX_GENERATION_TOKENS,
) -> ChatTaskResult:
    if not questions:
        raise ScratchLMError(
            f"task {spec.name} has no questions; check its data (or a --limit of at least 1)"
        )
    if spec.kind == "generative":
        return score_chat_gsm8k(
            model, tokenizer, spec, questions, max_new_tokens=max_new_tokens, stats=stats
        )
    if spec.kind != "multiple_choice":
        raise ScratchLMError(f"task {spec.name} ({spec.kind}) has no chat form")
    return score_chat_multiple_choice(
        model, tokenizer, spec, questions, batch_size=batch_size, stats=stats
    )


def run_chat_benchmarks(
    model: GPT,
    tokenizer: Tokenizer,
    tasks: Sequence[tuple[TaskSpec, Sequence[ChatQuestion]]],
    *,
    batch_size: int = 8,
    progress: Callable[[str], None] | None = None,
) -> BenchmarkReport:
    """Score every (spec, questions) task; the report's aggregate is the centered chat one."""
    stats = ScoringStats()
    results: list[TaskResult] = []
    for spec, questions in tasks:
        result = score_chat_task(
            model, tokenizer, spec, questions, batch_size=batch_size, stats=stats
        )
        results.append(result)
        if progress is not None:
            progress(
                f"{spec.name}: {result.metric} {result.value:.4f} ({result.examples} questions)"
            )
    return BenchmarkReport(results, stats)


def _mean(values: Sequence[bool]) -> float:
    return sum(values) / len(values)
