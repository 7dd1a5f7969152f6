"""Measures on the built-in story world, where the truth is known: does a base model keep its
characters, and does a chat model answer from the story it was told?

**Character coherence** (`character_coherence`, the `story-coherence` task of `scratchlm eval`):
the base model writes `samples` stories, each from the document start (the end-of-document token
the training data puts before every story, then the quickstart's story opening "Once upon a
time"), sampled as the quickstart samples (temperature 0.7, top-k 40; story i with seed
`seed + i`) until the end of document or `max_new_tokens`. Two numbers:

- *distinct names*: the character names of the story world (`NAMES_BY_PRONOUN`) in the text as
  whole, case-sensitive words (`story_names`: "Tom" and "Tom's" count, "Tommy" and "tom" do not;
  "Lily pads", a plant of the pond's sights, is not a name). A corpus story names two characters
  (the hero and the friend) and keeps them. The reference is the corpus itself at the same length:
  for every sample of W words, the first W words of each of `CORPUS_REFERENCE_STORIES` corpus
  stories (`generate_stories(seed=0)`, the quickstart's training corpus). The ratio is the mean
  distinct names per sample over the mean per reference text: 1.0 is as coherent as the data,
  above 1 a story that drifts to new names (lower is fine: fewer names than the data).
- *pronoun agreement* (`pronoun_agreement`): every subject pronoun "he"/"she" (any case) outside
  quoted speech refers to the first name outside quoted speech earlier in its sentence, else to
  the first such name of the sentence before; it agrees when the name's character uses that
  pronoun (Tom is "he", Lily "she", Sam "they"). Not checked: "they" (a group as often as one
  character), pronouns inside quotes, a pronoun with no such name to refer to, and a pronoun after
  a family member (mom, dad, grandma, grandpa, who has a pronoun of their own) in its sentence or,
  when its sentence names nobody before it, in the sentence before. Sentences end at . ! ? before
  a capital letter (or the end), so `"Oh no!" she cried.` is one sentence. Why not simply the
  nearest name before the pronoun: on the corpus that rule agrees only 75% ("Timmy sat close to
  Lily. 'It's okay,' he said."; "Tom and his mom ... She"), this one 100% (6,708 checks over 3,000
  stories), so a sample's shortfall is the model's. The corpus's own agreement on the reference
  texts is reported beside it.

**Story question answering** (`story_question_answering`, the `story-qa` task): held-out story-qa
problems (`scratchlm.finetune.tasks.story_qa_examples("heldout", count, seed)`): a story of at
most 150 words and one question it answers (the hero's or the friend's name, what kind of animal
or child a character is, what the hero lost, shared or got, the object's color, where the hero
went). The held-out split is never trained on: `scratchlm rl` trains on the "train" split, a
problem belongs to a split by the hash of its plan (cast, arc, object), the splits draw from string
seeds disjoint from the integer seeds of the corpus (0) and of the instruction data (the run seed),
and tests/evaluation/test_stories.py checks that no held-out plan is in the quickstart's corpus or
instruction data. The user message is the story, a blank line and the question (the layout of the
instruction data's story questions), rendered through the chat template with the generation
prompt; the reply is greedy until `<|end|>`, the end of document or `QA_REPLY_TOKENS`.

A reply is correct (`story_answer_correct`) when the story-qa reward (`story-answer`: the answer as
whole words, case-insensitive, after `normalize`) pays for it and the reply names no rival answer:
no other character name (for a name question), kind (kind), object (thing), color (color) or place
(place) of the story world. So "The kid was named Ethan." answers "Ethan", and "Ethan and Pip" or
"Ethan, Leo, Sam" do not: listing many names cannot collect the point. A prompt that does not fit
the model's context with room for one new token (the rule of `scratchlm rl`) is counted wrong and
as "did not fit": left truncation would cut off the question.

Both are deterministic for a checkpoint and a seed (seeded sampling, greedy replies).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from scratchlm.chat_template import end_of_turn_id
from scratchlm.data.stories.answers import (
    NAME_ALTERNATION,
    NAME_PRONOUNS,
    story_names,
    without_non_names,
)
from scratchlm.data.stories.corpus import generate_stories
from scratchlm.data.stories.questions import QUESTION_KINDS
from scratchlm.data.stories.words import (
    FAMILY_PRONOUNS,
)
from scratchlm.errors import ScratchLMError
from scratchlm.evaluation.chat_eval import chat_prompt, check_chat_checkpoint
from scratchlm.finetune.rewards import story_answer_reward
from scratchlm.finetune.tasks import Problem, story_qa_examples
from scratchlm.inference.engine import Engine
from scratchlm.inference.settings import GREEDY, SamplingSettings
from scratchlm.model import GPT
from scratchlm.tokenizer import Tokenizer

STORY_TASKS = ("story-coherence", "story-qa")
# The quickstart's story opening and sampling (its closing samples use the same settings).
STORY_PROMPT = "Once upon a time"
STORY_SAMPLING = SamplingSettings(temperature=0.7, top_k=40)
# The quickstart trains on `synthetic:MB`, which is generate_stories(seed=0).
CORPUS_SEED = 0
CORPUS_REFERENCE_STORIES = 64
# `scratchlm rl` scores its held-out problems with seed 0 too: one fixed set that runs compare on.
STORY_QA_SEED = 0
DEFAULT_SAMPLES = 32
DEFAULT_SAMPLE_TOKENS = 200
DEFAULT_QUESTIONS = 200
QA_REPLY_TOKENS = 32  # a reference answer is one short sentence ("The kid was named Ethan.")
EXAMPLES_SHOWN = 3

# ---------------------------------------------------------------------------------------------------
# Scoring text (pure: no model)
# ---------------------------------------------------------------------------------------------------

_FAMILY_ALTERNATION = "|".join(
    f"[{word[0].upper()}{word[0]}]{word[1:]}" for word in FAMILY_PRONOUNS
)
# One scan over the text: names, subject pronouns he/she, family members, quote marks and ends of
# sentences (. ! ? before an optional closing quote and a capital letter, or the end of the text).
_EVENTS = re.compile(
    rf"(?P<name>(?<!\w)(?:{NAME_ALTERNATION})(?!\w))"
    r"|(?P<pronoun>(?<!\w)(?:[Hh]e|[Ss]he)(?!\w))"
    rf"|(?P<family>(?<!\w)(?:{_FAMILY_ALTERNATION})(?!\w))"
    r'|(?P<quote>")'
    r'|(?P<end>[.!?]+(?=["”]?\s+["“]?[A-Z]|["”]?\s*$))'
)


def distinct_names(text: str) -> int:
    return len(set(story_names(text)))


@dataclass(frozen=True)
class PronounCounts:
    checked: int  # pronouns with a name to refer to (see the module docstring)
    agreeing: int  # of those, the ones the name's character uses

    @property
    def agreement(self) -> float | None:
        """The share that agrees; None when nothing was checked."""
        return self.agreeing / self.checked if self.checked else None

    def __add__(self, other: PronounCounts) -> PronounCounts:
        return PronounCounts(self.checked + other.checked, self.agreeing + other.agreeing)


def pronoun_agreement(text: str) -> PronounCounts:
    """How many he/she pronouns agree with the name they refer to (rule: the module docstring)."""
    checked = agreeing = 0
    in_quote = False
    first: str | None = None  # this sentence's first name outside quotes
    family = False  # a family member mentioned in this sentence (so far)
    previous: str | None = None  # the sentence before's first name; None after a family member
    for match in _EVENTS.finditer(without_non_names(text)):
        kind, word = match.lastgroup, match.group()
        if kind == "quote":
            in_quote = not in_quote
        elif kind == "end":
            previous = None if family else first
            first, family = None, False
        elif in_quote:
            continue  # speech: "Happy birthday, Tom!" she said. Tom is spoken to, not about
        elif kind == "name":
            first = word if first is None else first
        elif kind == "family":
            family = True
        elif kind == "pronoun" and not family:
            referent = first if first is not None else previous
            if referent is not None:
                checked += 1
                agreeing += word.lower() in NAME_PRONOUNS[referent]
    return PronounCounts(checked, agreeing)


def story_answer_correct(reply: str, answer: str, kind: str) -> bool:
    """The story-qa reward's judgement (`story-answer`: the answer as whole words, and no rival
    answer; the module docstring)."""
    return story_answer_reward(reply, Problem(prompt="", answer=answer, kind=kind)) == 1.0


# ---------------------------------------------------------------------------------------------------
# Character coherence
# ---------------------------------------------------------------------------------------------------


@cache
def _reference_words() -> tuple[tuple[str, ...], ...]:
    """The reference corpus stories as words (generated once per process: a few milliseconds)."""
    stories = generate_stories(CORPUS_REFERENCE_STORIES, seed=CORPUS_SEED)
    return tuple(tuple(story.split()) for story in stories)


def corpus_at_length(words: int) -> tuple[float, PronounCounts]:
    """Mean distinct names over the reference stories cut to their first `words` words, and their
    pronoun counts together."""
    texts = [" ".join(story[:words]) for story in _reference_words()]
    counts = PronounCounts(0, 0)
    for text in texts:
        counts += pronoun_agreement(text)
    return sum(map(distinct_names, texts)) / len(texts), counts


@dataclass(frozen=True)
class CoherenceResult:
    samples: tuple[str, ...]  # the sampled stories, opening included
    mean_distinct_names: float
    corpus_mean_distinct_names: float  # the corpus at the samples' lengths
    pronouns: PronounCounts
    corpus_pronouns: PronounCounts
    seed: int
    seconds: float = field(compare=False)

    @property
    def ratio(self) -> float | None:
        """Distinct names per sample over the corpus's at the same length (1.0 = as the data);
        None when the corpus names nobody at those lengths (every sample ended at once)."""
        if self.corpus_mean_distinct_names == 0:
            return None
        return self.mean_distinct_names / self.corpus_mean_distinct_names

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": "story-coherence",
            "metric": "distinct_names_ratio",
            "value": self.ratio,
            "examples": len(self.samples),
            "mean_distinct_names": self.mean_distinct_names,
            "corpus_mean_distinct_names": self.corpus_mean_distinct_names,
            "pronoun_agreement": self.pronouns.agreement,
            "pronouns_checked": self.pronouns.checked,
            "corpus_pronoun_agreement": self.corpus_pronouns.agreement,
            "seed": self.seed,
            "samples": list(self.samples[:EXAMPLES_SHOWN]),
            "seconds": round(self.seconds, 2),
        }


def score_story_samples(samples: Sequence[str], *, seed: int = 0) -> CoherenceResult:
    """The coherence numbers of stories already written (`seed` only labels the result)."""
    if not samples:
        raise ScratchLMError("character coherence needs at least one sampled story")
    names = [distinct_names(text) for text in samples]
    pronouns, corpus_pronouns = PronounCounts(0, 0), PronounCounts(0, 0)
    corpus_means = []
    for text in samples:
        pronouns += pronoun_agreement(text)
        mean, counts = corpus_at_length(len(text.split()))
        corpus_means.append(mean)
        corpus_pronouns += counts
    return CoherenceResult(
        samples=tuple(samples),
        mean_distinct_names=sum(names) / len(names),
        corpus_mean_distinct_names=sum(corpus_means) / len(corpus_means),
        pronouns=pronouns,
        corpus_pronouns=corpus_pronouns,
        seed=seed,
        seconds=0.0,
    )


def sample_stories(
    model: GPT,
    tokenizer: Tokenizer,
    *,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    max_new_tokens: int = DEFAULT_SAMPLE_TOKENS,
) -> list[str]:
    """`samples` stories from the document start, story i sampled with seed `seed + i`."""
    if samples < 1:
        raise ScratchLMError(f"samples must be at least 1, got {samples}")
    engine = Engine(model)
    # The end-of-document token starts every story of the training data (it ends the one before).
    prompt = [tokenizer.eos_id, *tokenizer.encode(STORY_PROMPT)]
    was_training = model.training
    model.eval()
    try:
        stories = []
        for index in range(samples):
            ids = engine.generate(
                prompt,
                max_new_tokens=max_new_tokens,
                sampling=STORY_SAMPLING,
                seed=seed + index,
                stop_ids=frozenset({tokenizer.eos_id}),
            )
            stories.append(STORY_PROMPT + tokenizer.decode(list(ids), skip_special=True))
    finally:
        model.train(was_training)
    return stories


def character_coherence(
    model: GPT,
    tokenizer: Tokenizer,
    *,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    max_new_tokens: int = DEFAULT_SAMPLE_TOKENS,
) -> CoherenceResult:
    """Sample `samples` stories and score them against the corpus (the module docstring)."""
    started = time.perf_counter()
    stories = sample_stories(
        model, tokenizer, samples=samples, seed=seed, max_new_tokens=max_new_tokens
    )
    result = score_story_samples(stories, seed=seed)
    return CoherenceResult(
        samples=result.samples,
        mean_distinct_names=result.mean_distinct_names,
        corpus_mean_distinct_names=result.corpus_mean_distinct_names,
        pronouns=result.pronouns,
        corpus_pronouns=result.corpus_pronouns,
        seed=seed,
        seconds=time.perf_counter() - started,
    )


# ---------------------------------------------------------------------------------------------------
# Story question answering
# ---------------------------------------------------------------------------------------------------


def check_story_qa_checkpoint(metadata: dict[str, Any]) -> None:
    """story-qa asks a chat model: a checkpoint fine-tuned (or merged, or imported) with a chat
    template this scratchlm renders."""
    training = metadata.get("training")
    kept = isinstance(training, dict) and ("merged_from" in training or "imported_from" in training)
    if not (metadata.get("finetune") or kept):
        raise ScratchLMError(
            "story-qa asks a chat model questions through the chat template, and this is a base "
            "(pretrained) checkpoint; fine-tune it with `scratchlm finetune` first (the quickstart's "
            "chat model is OUT/chat), or run --tasks story-coherence on it"
        )
    check_chat_checkpoint(metadata)


@dataclass(frozen=True)
class StoryAnswer:
    kind: str  # one of QUESTION_KINDS
    question: str
    story: str
    answer: str  # the reference
    reply: str  # "" when the prompt did not fit
    correct: bool
    fit: bool  # the prompt fit the model's context with room for a reply


@dataclass(frozen=True)
class StoryQAResult:
    answers: tuple[StoryAnswer, ...]
    seed: int
    seconds: float = field(compare=False)

    @property
    def accuracy(self) -> float:
        return sum(answer.correct for answer in self.answers) / len(self.answers)

    @property
    def did_not_fit(self) -> int:
        return sum(not answer.fit for answer in self.answers)

    def by_kind(self) -> dict[str, dict[str, float]]:
        """Accuracy per question kind (in QUESTION_KINDS order; kinds never asked left out)."""
        table = {}
        for kind in QUESTION_KINDS:
            hits = [answer.correct for answer in self.answers if answer.kind == kind]
            if hits:
                table[kind] = {"questions": len(hits), "accuracy": sum(hits) / len(hits)}
        return table

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": "story-qa",
            "metric": "exact_match",
            "value": self.accuracy,
            "examples": len(self.answers),
            "did_not_fit": self.did_not_fit,
            "by_kind": self.by_kind(),
            "seed": self.seed,
            "replies": [
                {
                    "question": answer.question,
                    "answer": answer.answer,
                    "reply": answer.reply,
                    "correct": answer.correct,
                }
                for answer in self.answers[:EXAMPLES_SHOWN]
            ],
            "seconds": round(self.seconds, 2),
        }


def story_question_answering(
    model: GPT,
    tokenizer: Tokenizer,
    *,
    count: int = DEFAULT_QUESTIONS,
    seed: int = STORY_QA_SEED,
    max_new_tokens: int = QA_REPLY_TOKENS,
) -> StoryQAResult:
    """Ask `count` held-out story questions through the chat template; greedy replies."""
    started = time.perf_counter()
    examples = story_qa_examples("heldout", count, seed)
    engine = Engine(model)
    stops = frozenset({end_of_turn_id(tokenizer), tokenizer.eos_id})
    context = model.config.context_length
    answers = []
    was_training = model.training
    model.eval()
    try:
        for example in examples:
            question = example.question
            prompt = chat_prompt(tokenizer, example.problem.prompt)
            # Room for at least one new token, as `scratchlm rl` keeps its problems.
            fit = len(prompt) < context
            reply = ""
            if fit:
                ids = engine.generate(
                    prompt, max_new_tokens=max_new_tokens, sampling=GREEDY, stop_ids=stops
                )
                reply = tokenizer.decode(list(ids), skip_special=True)
            answers.append(
                StoryAnswer(
                    kind=question.kind,
                    question=question.question,
                    story=example.story,
                    answer=question.answer,
                    reply=reply,
                    correct=fit and story_answer_correct(reply, question.answer, question.kind),
                    fit=fit,
                )
            )
    finally:
        model.train(was_training)
    return StoryQAResult(tuple(answers), seed, time.perf_counter() - started)
