"""The story-world measures against what is known: hand-checked texts, the story plans that wrote
the corpus (its names and pronouns are the truth), the story-qa reward's judgement, a naive greedy
loop for the replies, the quickstart's own training data for the held-out split, and the command."""

from __future__ import annotations

import dataclasses
import inspect
import json
import random
from pathlib import Path

import pytest
import torch

from scratchlm.checkpoint import load_checkpoint, save_checkpoint
from scratchlm.cli import main
from scratchlm.data.stories.answers import rival_answers, story_names
from scratchlm.data.stories.corpus import DOCUMENT_SEPARATOR, generate_stories
from scratchlm.data.stories.grammar import render_story, sample_story_plan
from scratchlm.data.stories.instructions import make_instruction_example
from scratchlm.data.stories.words import NAMES_BY_PRONOUN
from scratchlm.errors import ScratchLMError
from scratchlm.evaluation.chat_eval import chat_prompt
from scratchlm.evaluation.stories import (
    CORPUS_REFERENCE_STORIES,
    DEFAULT_QUESTIONS,
    STORY_QA_SEED,
    PronounCounts,
    character_coherence,
    corpus_at_length,
    distinct_names,
    pronoun_agreement,
    score_story_samples,
    story_answer_correct,
    story_question_answering,
)
from scratchlm.finetune.rewards import contains_reward
from scratchlm.finetune.tasks import Problem, plan_key, story_qa_examples
from scratchlm.model import GPT, build_model
from scratchlm.tokenizer import Tokenizer, train_bpe
from tests.conftest import tiny_config
from tests.evaluation.test_chat_eval import naive_greedy_reply

# A corpus-like story (the generator's templates) with two characters: Tom ("he") and Pip ("they").
STORY = (
    "Once upon a time, there was a brave little cat named Tom. Tom loved his red ball. "
    "He played with it every day in the park.\n\n"
    'One day, Tom met a kind fox named Pip. "Can I play too?" asked Pip. They played all day. '
    '"Thank you, Pip!" said Tom. He felt happy.'
)


# --- scoring text --------------------------------------------------------------------------------


def test_names_are_whole_case_sensitive_words_of_the_story_world() -> None:
    assert story_names(STORY) == ["Tom", "Tom", "Tom", "Pip", "Pip", "Pip", "Tom"]
    assert distinct_names(STORY) == 2
    # One stray name is one more distinct name.
    stray = STORY.replace("He played with it", "Leo played with it")
    assert distinct_names(stray) == 3
    # "Tommy" is not "Tom", "tom" is no name, "Tom's" is; Lily pads are plants.
    assert story_names("Tommy and tom saw Tom's hat. Lily pads floated. Lily smiled.") == [
        "Tom",
        "Lily",
    ]


def test_corpus_stories_name_their_two_characters_and_agree_with_their_pronouns() -> None:
    # The plan that wrote each story is the truth: its hero and friend, and their pronouns.
    rng = random.Random(11)
    counts = PronounCounts(0, 0)
    for _ in range(200):
        plan = sample_story_plan(rng)
        story = render_story(plan, rng)
        assert set(story_names(story)) == {plan.hero.name, plan.friend.name}
        counts += pronoun_agreement(story)
    assert counts.checked > 300 and counts.agreement == 1.0


def test_a_pronoun_that_does_not_fit_the_name_is_caught() -> None:
    assert pronoun_agreement(STORY) == PronounCounts(checked=2, agreeing=2)
    wrong = STORY.replace("He felt happy.", "She felt happy.")
    assert pronoun_agreement(wrong) == PronounCounts(checked=2, agreeing=1)
    # The plan's hero rendered with a pronoun the name never has: every check of him fails.
    rng = random.Random(3)
    while True:
        plan = sample_story_plan(rng)
        if plan.hero.pronoun == "he" and plan.friend.pronoun != "he":
            break
    swapped = dataclasses.replace(plan, hero=dataclasses.replace(plan.hero, pronoun="she"))
    counts = pronoun_agreement(render_story(swapped, random.Random(5)))
    assert counts.checked > 0 and counts.agreeing < counts.checked


def test_pronoun_rule_skips_speech_they_family_and_nameless_sentences() -> None:
    # "Tom" inside the quote is spoken to: "she" refers to Lily, the sentence before's subject.
    assert pronoun_agreement('Lily smiled. "Happy birthday, Tom!" she said.') == PronounCounts(1, 1)
    # A family member has a pronoun of their own; "they" may be a group; no name, no check.
    assert pronoun_agreement("Tom ran to his mom. She hugged him.").checked == 0
    assert pronoun_agreement("Tom and Lily ran. They laughed.").checked == 0
    assert pronoun_agreement("It was sunny. He ran.").checked == 0
    # "Oh no!" she cried. is one sentence: she refers to Lily, named in the sentence before.
    assert pronoun_agreement('Lily lost her ball. "Oh no!" she cried.') == PronounCounts(1, 1)
    assert pronoun_agreement("Sam woke up. He ate.") == PronounCounts(1, 0)
    assert PronounCounts(0, 0).agreement is None


def test_coherence_ratio_against_the_corpus_at_the_same_length() -> None:
    # Long enough for every reference story whole: each names its two characters.
    mean, counts = corpus_at_length(10_000)
    assert mean == 2.0 and counts.agreement == 1.0
    story = next(iter(generate_stories(1, seed=7)))
    long_story = f"{story}\n\n{story}"
    assert len(long_story.split()) > max(len(s.split()) for s in generate_stories(64, seed=0))
    assert score_story_samples([long_story]).ratio == pytest.approx(1.0)
    hero = story_names(story)[0]
    other = next(name for name in NAMES_BY_PRONOUN["she"] if name not in story)
    stray = long_story.replace(f" {hero} ", f" {other} ", 1)
    result = score_story_samples([long_story, stray])
    assert result.mean_distinct_names == 2.5 and result.ratio == pytest.approx(1.25)
    # A short sample is compared with the corpus cut as short: the first 12 words of each story.
    short = " ".join(story.split()[:12])
    expected = sum(
        distinct_names(" ".join(s.split()[:12]))
        for s in generate_stories(CORPUS_REFERENCE_STORIES, seed=0)
    )
    assert score_story_samples([short]).corpus_mean_distinct_names == pytest.approx(
        expected / CORPUS_REFERENCE_STORIES
    )


def test_answers_match_as_documented() -> None:
    # The reward pays for the answer in other words; a reply listing rivals does not count.
    assert story_answer_correct("The kid was named Ethan.", "Ethan", "name")
    assert story_answer_correct("ethan", "Ethan", "friend")
    assert not story_answer_correct("The kid was named Ethan and Leo.", "Ethan", "name")
    assert not story_answer_correct("Ethan, Pip, Sam", "Ethan", "name")
    assert rival_answers("Ethan, Pip, Sam, Pip", "Ethan", "name") == ["Pip", "Sam"]
    assert not story_answer_correct("The kid was named Ethanael.", "Ethan", "name")
    assert story_answer_correct("Tom is a cat.", "cat", "kind")
    assert not story_answer_correct("Tom is a cat or a dog.", "cat", "kind")
    assert story_answer_correct("Tom lost his teddy bear.", "teddy bear", "thing")
    assert not story_answer_correct("The ball or the kite.", "kite", "thing")
    assert story_answer_correct("The ball was red.", "red", "color")
    assert not story_answer_correct("It was red and blue.", "red", "color")
    assert story_answer_correct("Tom went to the park.", "park", "place")
    with pytest.raises(ScratchLMError, match="unknown question kind"):
        rival_answers("x", "y", "feeling")
    # Where no rival is named, the judgement is the story-qa reward's (contains).
    for reply in ("Tom.", "It was Tom!", "tommy", "The cat was named Tom", "TOM"):
        problem = Problem(prompt="", answer="Tom")
        assert story_answer_correct(reply, "Tom", "name") == (contains_reward(reply, problem) == 1)


@pytest.mark.slow  # replays the whole 20 MB corpus: about 8 s
def test_heldout_stories_share_no_plan_with_the_quickstart_training_data() -> None:
    from scratchlm.quickstart import INSTRUCTION_EXAMPLES, SUMMARY_QUESTIONS, run_quickstart

    defaults = inspect.signature(run_quickstart).parameters
    corpus_bytes = defaults["corpus_mb"].default * 1_000_000
    heldout = {
        plan_key(example.plan)
        for count in (SUMMARY_QUESTIONS, DEFAULT_QUESTIONS)
        for example in story_qa_examples("heldout", count, STORY_QA_SEED)
    }
    # The whole corpus `synthetic:MB` is (generate_stories(seed=0) up to MB megabytes): replay it.
    rng, written, trained = random.Random(0), 0, set()
    while written < corpus_bytes:
        plan = sample_story_plan(rng)
        written += len((render_story(plan, rng) + DOCUMENT_SEPARATOR).encode("utf-8"))
        trained.add(plan_key(plan))
    assert len(trained) > 20_000
    # The chat stage's instructions: the run seed's stream of plans, stories and examples.
    rng = random.Random(defaults["seed"].default)
    for _ in range(INSTRUCTION_EXAMPLES):
        plan = sample_story_plan(rng)
        make_instruction_example(plan, render_story(plan, rng), rng)
        trained.add(plan_key(plan))
    assert not heldout & trained


# --- with a model --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def story_tokenizer() -> Tokenizer:
    return train_bpe(list(generate_stories(300, seed=123)), 1024)


def story_model(tokenizer: Tokenizer, context_length: int) -> GPT:
    torch.manual_seed(0)
    model = build_model(
        tiny_config("tiny", vocab_size=tokenizer.vocab_size, context_length=context_length)
    )
    return model.eval()


def test_measures_are_deterministic_for_a_seed(story_tokenizer: Tokenizer) -> None:
    model = story_model(story_tokenizer, 64)
    first = character_coherence(model, story_tokenizer, samples=3, seed=5, max_new_tokens=24)
    again = character_coherence(model, story_tokenizer, samples=3, seed=5, max_new_tokens=24)
    assert first == again and len(first.samples) == 3
    assert all(text.startswith("Once upon a time") for text in first.samples)
    other = character_coherence(model, story_tokenizer, samples=3, seed=6, max_new_tokens=24)
    assert other.samples != first.samples
    assert first.as_dict()["value"] == first.ratio


def test_story_qa_replies_equal_a_naive_greedy_loop(story_tokenizer: Tokenizer) -> None:
    examples = story_qa_examples("heldout", 6, STORY_QA_SEED)
    lengths = sorted(len(chat_prompt(story_tokenizer, e.problem.prompt)) for e in examples)
    context = lengths[len(lengths) // 2]  # about half the prompts fit
    model = story_model(story_tokenizer, context)
    result = story_question_answering(model, story_tokenizer, count=6, max_new_tokens=8)
    assert result == story_question_answering(model, story_tokenizer, count=6, max_new_tokens=8)
    fits = [length < context for length in lengths]
    assert result.did_not_fit == fits.count(False) and 0 < result.did_not_fit < 6
    for example, answer in zip(examples, result.answers, strict=True):
        prompt = chat_prompt(story_tokenizer, example.problem.prompt)
        assert (
            answer.question == example.question.question and answer.answer == example.problem.answer
        )
        if len(prompt) >= context:
            assert (answer.fit, answer.reply, answer.correct) == (False, "", False)
            continue
        reply = story_tokenizer.decode(
            naive_greedy_reply(model, story_tokenizer, prompt, 8), skip_special=True
        )
        assert answer.reply == reply
        assert answer.correct == story_answer_correct(reply, answer.answer, answer.kind)
    rows = result.by_kind()
    assert sum(row["questions"] for row in rows.values()) == 6


# --- the command ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(
    tmp_path_factory: pytest.TempPathFactory, story_tokenizer: Tokenizer
) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("stories")
    model = story_model(story_tokenizer, 320)
    base = save_checkpoint(directory / "base", model, story_tokenizer)
    chat = save_checkpoint(
        directory / "chat",
        model,
        story_tokenizer,
        extra_metadata={"finetune": {"base": str(base)}},
    )
    return base, chat


def test_story_qa_needs_a_chat_checkpoint(
    checkpoints: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    base, _ = checkpoints
    argv = ["eval", "-m", str(base), "--device", "cpu", "--tasks"]
    for tasks, message in (
        ("story-qa", "base (pretrained) checkpoint"),
        ("story-coherence,story-qa", "base (pretrained) checkpoint"),
        ("story-qa,arc_easy", "run on their own"),
    ):
        assert main([*argv, tasks]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.count("\n") == 1 and message in captured.err
    assert main([*argv, "story-coherence", "--chat"]) == 2
    assert "drop --chat" in capsys.readouterr().err


def test_eval_story_tasks_json_equals_the_library(
    checkpoints: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, chat = checkpoints
    argv = ["eval", "-m", str(chat), "--device", "cpu", "--limit", "3", "--seed", "4"]
    assert main([*argv, "--tasks", "story-coherence,story-qa", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    loaded = load_checkpoint(chat, "cpu")
    coherence = character_coherence(loaded.model, loaded.tokenizer, samples=3, seed=4)
    qa = story_question_answering(loaded.model, loaded.tokenizer, count=3, seed=4)
    tasks = report["tasks"]
    assert [task["task"] for task in tasks] == ["story-coherence", "story-qa"]
    expected = [coherence.as_dict(), qa.as_dict()]
    for got, want in zip(tasks, expected, strict=True):
        got.pop("seconds"), want.pop("seconds")
        assert got == json.loads(json.dumps(want))
    assert main([*argv, "--tasks", "story-qa"]) == 0
    table = capsys.readouterr().out
    assert table.startswith("story-qa: exact_match") and "did not fit" in table


def test_quickstart_summary_prints_both_measures_and_a_story_turn(
    checkpoints: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from scratchlm import quickstart

    monkeypatch.setattr(quickstart, "SUMMARY_STORIES", 2)
    monkeypatch.setattr(quickstart, "SUMMARY_STORY_TOKENS", 16)
    monkeypatch.setattr(quickstart, "SUMMARY_QUESTIONS", 3)
    base, chat = (load_checkpoint(path, "cpu") for path in checkpoints)
    quickstart.show_story_measures(base, chat, seed=9)
    printed = capsys.readouterr().out
    coherence = character_coherence(
        base.model, base.tokenizer, samples=2, seed=9, max_new_tokens=16
    )
    qa = story_question_answering(chat.model, chat.tokenizer, count=3)
    ratio = "n/a" if coherence.ratio is None else f"{coherence.ratio:.2f}"
    assert f"character coherence {ratio} (1.0 = as the data)" in printed
    assert f"story questions {qa.accuracy:.0%} of 3 held-out questions" in printed
    shown = next(answer for answer in qa.answers if answer.fit)
    turn = printed.split("--- chat about a story it was just told")[1]
    # The story, then the question (the user message's layout), then the reply.
    assert f"> {shown.story.splitlines()[-1]}\n>\n> {shown.question}\n" in turn
    assert turn.index(shown.story.splitlines()[0]) < turn.index(shown.question)
    assert f"(expected: {shown.answer};" in turn
