"""Questions about a generated story: the story states every answer."""

from __future__ import annotations

import random
import re

from scratchlm.data.stories.corpus import generate_stories
from scratchlm.data.stories.grammar import (
    Character,
    StoryPlan,
    Thing,
    render_story,
    sample_story_plan,
)
from scratchlm.data.stories.questions import StoryQuestion, mentions, story_questions
from scratchlm.data.stories.words import KINDS
from scratchlm.evaluation.stories import story_answer_correct

PLAN = StoryPlan(
    arc="lost_and_found",
    hero=Character(name="Tom", kind="cat", pronoun="he", trait="brave", size="little"),
    friend=Character(name="Sue", kind="girl", pronoun="she", trait="kind"),
    family="mom",
    place="park",
    thing=Thing(name="teddy bear", color="red"),
    season="summer",
    time_of_day="morning",
    ending_feeling="happy",
    fear="the dark",
    trouble=0,
)


def test_a_hand_written_story_gets_exactly_the_questions_it_answers() -> None:
    story = (
        "Tom was a brave little cat. One morning, Tom went to the park with his red teddy bear. "
        "He lost it! Sue, a kind girl, found the teddy bear under a bench."
    )
    assert story_questions(PLAN, story) == [
        StoryQuestion(
            "What is the name of the cat in the story?", "Tom", "name", "The cat is named Tom."
        ),
        StoryQuestion(
            "What is the name of the girl in the story?", "Sue", "friend", "The girl is named Sue."
        ),
        StoryQuestion("What kind of animal is Tom?", "cat", "kind", "Tom is a cat."),
        StoryQuestion("What kind of child is Sue?", "girl", "kind", "Sue is a girl."),
        StoryQuestion("What did Tom lose?", "teddy bear", "thing", "It was the teddy bear."),
        StoryQuestion(
            "What color is the teddy bear in the story?", "red", "color", "The teddy bear is red."
        ),
        StoryQuestion("Where did Tom go?", "park", "place", "Tom went to the park."),
    ]


def test_a_question_whose_answer_or_subject_the_text_lacks_is_skipped() -> None:
    # No "Sue" (only "Suez"), no "red teddy bear", no "to the park", no "girl": what is left is
    # about Tom alone.
    story = "Tom was a brave little cat in the park. He lost his teddy bear. Suez helped him."
    assert story_questions(PLAN, story) == [
        StoryQuestion(
            "What is the name of the cat in the story?", "Tom", "name", "The cat is named Tom."
        ),
        StoryQuestion("What kind of animal is Tom?", "cat", "kind", "Tom is a cat."),
    ]
    # Without the friend's name there is no "what did Tom share with Sue?" either.
    sharing = StoryPlan(**{**PLAN.__dict__, "arc": "sharing"})
    assert [question.kind for question in story_questions(sharing, story)] == ["name", "kind"]


def test_kind_questions_fit_the_kind() -> None:
    story = "Sam the kid met Rex the robot. Sam and Rex played."
    plan = StoryPlan(
        **{
            **PLAN.__dict__,
            "arc": "fear",
            "hero": Character(name="Sam", kind="kid", pronoun="they", trait="shy"),
            "friend": Character(name="Rex", kind="robot", pronoun="he", trait="kind"),
        }
    )
    # A kid gets no "what kind of child" question; a robot is a creature, not an animal.
    assert [question.question for question in story_questions(plan, story)] == [
        "What is the name of the kid in the story?",
        "What is the name of the robot in the story?",
        "What kind of creature is Rex?",
    ]


def _generated(count: int, seed: int) -> list[tuple[StoryPlan, str]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        plan = sample_story_plan(rng)
        pairs.append((plan, render_story(plan, rng)))
    return pairs


def test_every_answer_of_generated_stories_is_in_the_story() -> None:
    kinds_seen: set[str] = set()
    for plan, story in _generated(400, seed=11):
        questions = story_questions(plan, story)
        assert questions, story
        for question in questions:
            kinds_seen.add(question.kind)
            # A literal whole-word occurrence, checked here with a different test than `mentions`.
            assert re.search(rf"\b{re.escape(question.answer)}\b", story), (question, story)
            assert question.question.endswith("?")
            # The reply is a sentence that the story-qa judgement takes as the answer.
            assert question.reply.endswith(".") and question.reply[0].isupper()
            assert story_answer_correct(question.reply, question.answer, question.kind), question
        # A name question picks out one character: the friend is never the hero's kind.
        names = [question for question in questions if question.kind in ("name", "friend")]
        assert len({question.question for question in names}) == len(names)
        kind_answers = {question.answer for question in questions if question.kind == "kind"}
        assert kind_answers <= {plan.hero.kind, plan.friend.kind}
        assert all(kind in KINDS for kind in kind_answers)
    assert kinds_seen == {"name", "friend", "kind", "thing", "color", "place"}


def test_questions_are_the_same_for_the_same_seed() -> None:
    first = [story_questions(plan, story) for plan, story in _generated(50, seed=3)]
    again = [story_questions(plan, story) for plan, story in _generated(50, seed=3)]
    assert first == again
    # And the stories they come from are the corpus generator's (the same stream of plans).
    stories = [story for _, story in _generated(5, seed=3)]
    assert stories == list(generate_stories(5, seed=3))


def test_mentions_matches_whole_words_only() -> None:
    assert mentions("Sam went home.", "Sam")
    assert not mentions("Samantha went home.", "Sam")
    assert mentions("a red teddy bear!", "teddy bear")
    assert not mentions("a red teddy bears", "teddy bear")
