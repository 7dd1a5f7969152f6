"""Instruction examples about generated stories (for the chat fine-tuning stage)."""

from __future__ import annotations

import random
from collections.abc import Iterator

from scratchlm.data.stories.grammar import (
    StoryPlan,
    arc_predicate,
    describe_plan,
    hero_subject,
    render_story,
    sample_story_plan,
    story_title,
    with_article,
)
from scratchlm.data.stories.templates import STORY_REQUESTS
from scratchlm.errors import ScratchLMError

# (instruction kind, weight): story requests are the skill that matters most, questions add reading.
INSTRUCTION_KIND_WEIGHTS = (
    ("story", 10),
    ("color", 2),
    ("title", 2),
    ("name", 2),
    ("place", 1),
    ("feeling", 2),
    ("friend", 1),
    ("summary", 2),
    ("continue", 2),
)
INSTRUCTION_KINDS = tuple(kind for kind, weight in INSTRUCTION_KIND_WEIGHTS for _ in range(weight))


def make_instruction_example(plan: StoryPlan, story: str, rng: random.Random) -> dict[str, str]:
    """One {"instruction", "output"} pair about `story`, which must be `render_story(plan, ...)`."""
    kind = rng.choice(INSTRUCTION_KINDS)
    hero = plan.hero
    if kind == "story":
        subject = hero_subject(plan, detail=rng.randrange(4))
        predicate = arc_predicate(plan, detailed=rng.random() < 0.5)
        request = rng.choice(STORY_REQUESTS)
        instruction = request.format(
            about=f"{subject} who {predicate}", where=f"{subject} {predicate}"
        )
        return {"instruction": instruction, "output": story}
    if kind == "continue":
        beginning, _, rest = story.partition("\n\n")
        return {"instruction": f"Continue this story:\n\n{beginning}", "output": rest}
    if kind == "color":
        question = f"What color was the {plan.thing.name} in this story?"
        answer = f"The {plan.thing.name} was {plan.thing.color}."
    elif kind == "title":
        question = rng.choice(("Give this story a title.", "What is a good title for this story?"))
        answer = story_title(plan, rng)
    elif kind == "name":
        question = f"What was the name of the {hero.kind} in this story?"
        answer = f"The {hero.kind} was named {hero.name}."
    elif kind == "place":
        question = f"Where did {hero.name} go in this story?"
        answer = f"{hero.name} went to the {plan.place}."
    elif kind == "feeling":
        question = f"How did {hero.name} feel at the end of the story?"
        answer = f"{hero.name} felt {plan.ending_feeling}."
    elif kind == "friend":
        question = f"Who was {plan.friend.name} in this story?"
        answer = f"{plan.friend.name} was {with_article(plan.friend.description)}."
    else:
        question = rng.choice(
            (
                "What is this story about? Answer in one sentence.",
                "Summarize this story in one sentence.",
            )
        )
        answer = f"It is {describe_plan(plan)}."
    # The story first, the question last: a question right before the answer lets the model look
    # back from it into the story (question first measured 8.5% against 19% on story questions:
    # docs/speedrun.md, quickstart track).
    return {"instruction": f"{story}\n\n{question}", "output": answer}


def generate_instruction_examples(num_examples: int, *, seed: int = 0) -> Iterator[dict[str, str]]:
    """Yield `num_examples` instruction/output pairs about freshly generated stories.

    Most ask for a story ("Tell me a story about a cat who loses a ball.") and get one that matches;
    the rest ask a question about a given story (its object's color, a title, the hero's name, the
    place, the ending feeling, who the friend was, a one-sentence summary, or how it continues).
    """
    if num_examples < 0:
        raise ScratchLMError(f"num_examples must be 0 or more, got {num_examples}.")
    rng = random.Random(seed)
    for _ in range(num_examples):
        plan = sample_story_plan(rng)
        story = render_story(plan, rng)
        yield make_instruction_example(plan, story, rng)
