"""Questions answerable from one generated story alone, with their answers.

`story_questions(plan, story)` lists every question of a few kinds whose answer the text states:

- "name":        "What is the name of the cat in the story?" -> the hero's name;
- "friend":      "What is the name of the fox in the story?" -> the friend's name;
- "kind":        "What kind of animal is Tom?" (a creature), "What kind of creature is Tom?" (a
                 dragon, unicorn or robot), "What kind of child is Tom?" (a boy or a girl; none for
                 a "kid") -> the kind, for the hero and for the friend;
- "thing":       what the hero lost, shared, helped get back or got as a surprise (by arc) -> the
                 object's name ("ball", "teddy bear");
- "color":       "What color is the ball in the story?" -> its color, when the text says "red ball";
- "place":       "Where did Tom go?" -> the place ("park"), when the text says Tom went to it.

Every answer is one word or a short phrase that appears in the story as a whole word (checked here;
a question whose answer the text does not contain is skipped), so a reader, or a model, can copy it.
Each question also has a `reply`: the answer in a sentence that restates the question ("What kind
of animal is Pip?" -> "Pip is a cow."), the form chat data teaches. A reply that starts from the
question's own words lets a small model find its place in the story: on the quickstart track
(a 20-minute base model, 240 chat steps), chat data with these replies answered 47.5% of the
held-out questions, with one-word replies 16% (docs/speedrun.md).
The kinds in the story world never repeat inside one story (the friend is never the hero's kind),
so "the cat in the story" names one character. The function is pure: the same plan and story give
the same questions in the same order; callers draw among them with their own seeded `random.Random`.
These questions drive the `story-qa` task of `scratchlm rl` and the story question-answering
measure of the evaluation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from scratchlm.data.stories.grammar import Character, StoryPlan, with_article
from scratchlm.data.stories.words import KINDS

QUESTION_KINDS = ("name", "friend", "kind", "thing", "color", "place")
# Kinds that are not animals: asking "what kind of animal is the robot" would be a trick question.
MAKE_BELIEVE_KINDS = ("dragon", "unicorn", "robot")
# What the hero does with the object, by arc; arcs not listed (fear, new friend, trip) may mention
# an object in passing but are not about it, so they get no "thing" question.
THING_QUESTIONS = {
    "lost_and_found": "What did {name} lose?",
    "sharing": "What did {name} share with {friend}?",
    "helping": "What did {name} help {friend} get back?",
    "surprise": "What did {name} get as a surprise?",
}


@dataclass(frozen=True)
class StoryQuestion:
    question: str
    answer: str  # a word or short phrase that appears in the story
    kind: str  # one of QUESTION_KINDS
    reply: str  # the answer in a sentence that restates the question ("The cat is named Pip.")


def mentions(text: str, phrase: str) -> bool:
    """Whether `phrase` appears in `text` as whole words ("Sam" is not in "Samantha")."""
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text) is not None


def _kind_question(character: Character) -> str | None:
    """None for a "kid": "what kind of child is Sam?" has no better answer than "a child"."""
    if character.kind == "kid":
        return None
    if KINDS[character.kind].is_person:
        # No list of options ("a boy or a girl?"): a reply that repeats the list would contain the
        # answer, and the `contains` reward would pay for it.
        return f"What kind of child is {character.name}?"
    noun = "creature" if character.kind in MAKE_BELIEVE_KINDS else "animal"
    return f"What kind of {noun} is {character.name}?"


def story_questions(plan: StoryPlan, story: str) -> list[StoryQuestion]:
    """The questions about `story` (rendered from `plan`) that the story text answers."""
    hero, friend, thing = plan.hero, plan.friend, plan.thing
    # (question, the phrases the story must contain for the question to make sense) in a fixed order
    candidates: list[tuple[StoryQuestion, tuple[str, ...]]] = []
    for character, kind in ((hero, "name"), (friend, "friend")):
        name_question = StoryQuestion(
            f"What is the name of the {character.kind} in the story?",
            character.name,
            kind,
            f"The {character.kind} is named {character.name}.",
        )
        candidates.append((name_question, (character.kind,)))
    for character in (hero, friend):
        kind_question = _kind_question(character)
        if kind_question is not None:
            reply = f"{character.name} is {with_article(character.kind)}."
            candidates.append(
                (StoryQuestion(kind_question, character.kind, "kind", reply), (character.name,))
            )
    if plan.arc in THING_QUESTIONS:
        thing_question = THING_QUESTIONS[plan.arc].format(name=hero.name, friend=friend.name)
        candidates.append(
            (
                StoryQuestion(thing_question, thing.name, "thing", f"It was the {thing.name}."),
                (hero.name, friend.name),
            )
        )
    candidates.append(
        (
            StoryQuestion(
                f"What color is the {thing.name} in the story?",
                thing.color,
                "color",
                f"The {thing.name} is {thing.color}.",
            ),
            (f"{thing.color} {thing.name}",),
        )
    )
    # Only when the text says the hero went there: "went to the park", "went to play in the park",
    # "a trip to the beach" (a story set at home "on the farm" never says where anyone went).
    if re.search(rf"\bto (?:the|play \w+ the) {re.escape(plan.place)}\b", story):
        reply = f"{hero.name} went to the {plan.place}."
        candidates.append(
            (StoryQuestion(f"Where did {hero.name} go?", plan.place, "place", reply), (hero.name,))
        )
    return [
        question
        for question, needs in candidates
        if all(mentions(story, phrase) for phrase in (question.answer, *needs))
    ]
