"""Who and what the story world names, for judging answers about its stories: the character names
in a text (`story_names`), and the rival answers a reply gives besides the right one
(`rival_answers`: other names for a name question, other kinds, objects, colors or places for
the others). The story-qa reward (`scratchlm.finetune.rewards`, "story-answer") and the story-qa
evaluation (`scratchlm.evaluation.stories`) judge with these, so that listing many answers
collects nothing in either.
"""

from __future__ import annotations

import re

from scratchlm.data.stories.questions import QUESTION_KINDS, mentions
from scratchlm.data.stories.words import COLORS, KINDS, NAMES_BY_PRONOUN, PLACE_NAMES, THING_NAMES
from scratchlm.errors import ScratchLMError

NAME_PRONOUNS: dict[str, tuple[str, ...]] = {}
for _pronoun, _names in NAMES_BY_PRONOUN.items():
    for _name in _names:
        NAME_PRONOUNS[_name] = (*NAME_PRONOUNS.get(_name, ()), _pronoun)
# Phrases that start with a name but name nobody; lowered before names are searched.
NOT_NAMES = ("Lily pads",)
# Longest first, so that the alternation never stops at a shorter name that starts a longer one.
NAME_ALTERNATION = "|".join(sorted(map(re.escape, NAME_PRONOUNS), key=len, reverse=True))
NAME_PATTERN = re.compile(rf"(?<!\w)(?:{NAME_ALTERNATION})(?!\w)")
# Rival answers by question kind; names are matched as in `story_names`.
RIVALS: dict[str, tuple[str, ...]] = {
    "kind": tuple(KINDS),
    "thing": THING_NAMES,
    "color": COLORS,
    "place": PLACE_NAMES,
}


def without_non_names(text: str) -> str:
    for phrase in NOT_NAMES:
        text = text.replace(phrase, phrase.lower())
    return text


def story_names(text: str) -> list[str]:
    """The character names of the story world in `text`, in order, as whole case-sensitive words."""
    return NAME_PATTERN.findall(without_non_names(text))


def rival_answers(reply: str, answer: str, kind: str) -> list[str]:
    """The answers of the same kind as `answer` (other names, kinds, objects, colors or places of
    the story world) that `reply` also gives, in a fixed order."""
    if kind not in QUESTION_KINDS:
        raise ScratchLMError(f"unknown question kind {kind!r}; one of {', '.join(QUESTION_KINDS)}")
    if kind in ("name", "friend"):
        return list(dict.fromkeys(name for name in story_names(reply) if name != answer))
    text = " ".join(reply.lower().split())
    wanted = answer.lower()
    return [rival for rival in RIVALS[kind] if rival != wanted and mentions(text, rival)]
