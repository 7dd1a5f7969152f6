"""The story grammar: articles and capitalization, the plan of one story (`sample_story_plan`),
rendering it (`render_story`), and describing it in words (`describe_plan`, `story_title`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from scratchlm.data.stories.templates import ARCS, TITLES
from scratchlm.data.stories.words import (
    ARC_NAMES,
    COLORS,
    CREATURE_KINDS,
    CREATURE_SIZES,
    CRIED_WORDS,
    DISTRACTIONS,
    ENDING_FEELINGS,
    FAMILY_PRONOUNS,
    FEARS,
    FEARS_THAT_FIT,
    GENTLY_WORDS,
    HOBBIES,
    HOMES,
    KINDS,
    NAMES_BY_PRONOUN,
    OH_NO_WORDS,
    PERSON_KINDS,
    PERSON_SHARE,
    PERSON_SIZES,
    PLACE_NAMES,
    PLACES,
    PRONOUN_FORMS,
    SAD_WORDS,
    SADLY_WORDS,
    SCARED_WORDS,
    SEASON_SENTENCES,
    SEASONS,
    SHYLY_WORDS,
    SIZE_SHARE,
    SOON_WORDS,
    SUDDENLY_WORDS,
    THEN_WORDS,
    THING_FUN,
    THING_LOOK_SHARE,
    THING_LOOKS,
    THING_NAMES,
    TIMES_OF_DAY,
    TRAITS,
    TRIP_PLACE_NAMES,
    TROUBLE_SPOTS,
    WEATHER_BY_SEASON,
    WOW_WORDS,
)

# ---------------------------------------------------------------------------------------------------
# Articles and capitalization
# ---------------------------------------------------------------------------------------------------

# Words that start with a vowel letter but a consonant sound ("a unicorn", "a useful"), and words that
# start with a silent h ("an honest"). Matched as prefixes of the lowercased phrase.
CONSONANT_SOUND_PREFIXES = ("uni", "use", "usu", "one", "once", "eu", "ewe")
VOWEL_SOUND_PREFIXES = ("honest", "hour", "honor", "heir")


def indefinite_article(phrase: str) -> str:
    """Return "a" or "an" for the phrase, by the sound of its first word."""
    lowered = phrase.lower()
    if lowered.startswith(VOWEL_SOUND_PREFIXES):
        return "an"
    if lowered.startswith(CONSONANT_SOUND_PREFIXES):
        return "a"
    return "an" if lowered[:1] in "aeiou" else "a"


def with_article(phrase: str) -> str:
    return f"{indefinite_article(phrase)} {phrase}"


def capitalize_first(text: str) -> str:
    """Upper-case the first letter only ("the park" -> "The park"; `str.capitalize` would lower the rest)."""
    return text[:1].upper() + text[1:]


# Short words that stay lower case inside a title ("Max and the Red Ball").
TITLE_SMALL_WORDS = ("a", "an", "and", "at", "by", "for", "in", "of", "on", "the", "to", "with")


def title_case(text: str) -> str:
    words = text.split(" ")
    return " ".join(
        word if index > 0 and word in TITLE_SMALL_WORDS else capitalize_first(word)
        for index, word in enumerate(words)
    )


@dataclass(frozen=True)
class Character:
    name: str
    kind: str  # a key of KINDS
    pronoun: str  # "he", "she" or "they"
    trait: str
    size: str = ""  # "" when the character has no size word

    @property
    def description(self) -> str:
        """Adjectives and kind without an article: "brave little cat"."""
        words = (self.trait, self.size, self.kind) if self.size else (self.trait, self.kind)
        return " ".join(words)


@dataclass(frozen=True)
class Thing:
    name: str  # a key of THING_FUN: "ball", "teddy bear"
    color: str
    look: str = ""

    @property
    def description(self) -> str:
        """Without an article: "shiny red ball"."""
        return f"{self.look} {self.color} {self.name}" if self.look else f"{self.color} {self.name}"


# ---------------------------------------------------------------------------------------------------
# Plans
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoryPlan:
    """Everything that must stay the same throughout one story; `render_story` adds only wording."""

    arc: str  # a key of ARCS
    hero: Character
    friend: (
        Character  # helper, new friend, or the one who wants a turn; never the hero's kind or name
    )
    family: str  # a key of FAMILY_PRONOUNS
    place: str  # a key of PLACES; for a trip, the destination
    thing: Thing
    season: str
    time_of_day: str
    ending_feeling: str  # the hero's feeling at the end, named in the last paragraph
    fear: str  # a key of FEARS; used by the "fear" arc
    trouble: int  # an index into TROUBLE_SPOTS; used by the "helping" arc


def _sample_character(rng: random.Random, *, other: Character | None = None) -> Character:
    while True:
        kind = rng.choice(PERSON_KINDS if rng.random() < PERSON_SHARE else CREATURE_KINDS)
        if other is None or kind != other.kind:
            break
    pronoun = rng.choice(KINDS[kind].pronouns)
    while True:
        name = rng.choice(NAMES_BY_PRONOUN[pronoun])
        if other is None or name != other.name:
            break
    trait = rng.choice(TRAITS)
    size = ""
    if rng.random() < SIZE_SHARE:
        size = rng.choice(PERSON_SIZES if KINDS[kind].is_person else CREATURE_SIZES)
    return Character(name=name, kind=kind, pronoun=pronoun, trait=trait, size=size)


def sample_story_plan(rng: random.Random) -> StoryPlan:
    """Draw one story's cast, setting, object and arc."""
    arc = rng.choice(ARC_NAMES)
    hero = _sample_character(rng)
    friend = _sample_character(rng, other=hero)
    place = rng.choice(TRIP_PLACE_NAMES if arc == "trip" else PLACE_NAMES)
    look = rng.choice(THING_LOOKS) if rng.random() < THING_LOOK_SHARE else ""
    thing = Thing(name=rng.choice(THING_NAMES), color=rng.choice(COLORS), look=look)
    season = rng.choice(SEASONS)
    return StoryPlan(
        arc=arc,
        hero=hero,
        friend=friend,
        family=rng.choice(tuple(FAMILY_PRONOUNS)),
        place=place,
        thing=thing,
        season=season,
        time_of_day=rng.choice(TIMES_OF_DAY),
        ending_feeling=rng.choice(ENDING_FEELINGS[arc]),
        fear=rng.choice(FEARS_THAT_FIT[PLACES[place].has_water, season]),
        trouble=rng.randrange(len(TROUBLE_SPOTS)),
    )


# ---------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------


def _character_slots(character: Character, prefix: str) -> dict[str, str]:
    """Pronoun and description slots; `prefix` is "" for the hero and "friend_" for the friend."""
    forms = PRONOUN_FORMS[character.pronoun]
    kind = KINDS[character.kind]
    # The sentence-initial forms are "He"/"His" for the hero and "Friend_he"/"Friend_his" for the friend.
    capital_he = f"{capitalize_first(prefix)}he" if prefix else "He"
    capital_his = f"{capitalize_first(prefix)}his" if prefix else "His"
    return {
        f"{prefix}he": forms["he"],
        f"{prefix}him": forms["him"],
        f"{prefix}his": forms["his"],
        f"{prefix}himself": forms["himself"],
        f"{prefix}was": forms["was"],
        f"{prefix}wasnt": forms["wasnt"],
        f"{prefix}kind": character.kind,
        f"{prefix}moved": kind.moved,
        f"{prefix}searched": kind.searched,
        capital_he: capitalize_first(forms["he"]),
        capital_his: capitalize_first(forms["his"]),
    }


def _story_slots(plan: StoryPlan, rng: random.Random) -> dict[str, str]:
    """The table every template of this story is filled from: plan facts plus fresh word choices."""
    hero, friend, thing, place = plan.hero, plan.friend, plan.thing, PLACES[plan.place]
    family_forms = PRONOUN_FORMS[FAMILY_PRONOUNS[plan.family]]
    spots = list(place.spots)
    rng.shuffle(spots)
    activities = list(place.activities)
    rng.shuffle(activities)
    trouble_spot, trouble_out, _ = TROUBLE_SPOTS[plan.trouble]
    at_place = f"{place.preposition} the {plan.place}"
    a_hero = with_article(hero.description)
    a_friend = with_article(friend.description)
    color_thing = f"{thing.color} {thing.name}"
    a_color_thing = with_article(color_thing)
    slots = {
        **_character_slots(hero, ""),
        **_character_slots(friend, "friend_"),
        "Name": hero.name,
        "a_hero": a_hero,
        "A_hero": capitalize_first(a_hero),
        "Friend": friend.name,
        "a_friend": a_friend,
        "A_friend": capitalize_first(a_friend),
        "family": plan.family,
        "Family": capitalize_first(plan.family),
        "family_he": family_forms["he"],
        "Family_he": capitalize_first(family_forms["he"]),
        "family_him": family_forms["him"],
        "family_his": family_forms["his"],
        "place": plan.place,
        "at_place": at_place,
        "At_place": capitalize_first(at_place),
        "spot_1": spots[0],
        "spot_2": spots[1],
        "found_spot": spots[2],
        "activity_1": activities[0],
        "activity_2": activities[1],
        "thing": thing.name,
        "color": thing.color,
        "thing_desc": thing.description,
        "color_thing": color_thing,
        "a_thing": with_article(thing.description),
        "a_color_thing": a_color_thing,
        "A_color_thing": capitalize_first(a_color_thing),
        "season": plan.season,
        "time_of_day": plan.time_of_day,
        "weather": rng.choice(WEATHER_BY_SEASON[plan.season]),
        "end_feeling": plan.ending_feeling,
        "fear": plan.fear,
        "trouble_spot": trouble_spot,
        "trouble_out": trouble_out,
        "home": rng.choice(HOMES),
        "hobby": rng.choice(HOBBIES),
        "distraction": rng.choice(DISTRACTIONS),
        "sad": rng.choice(SAD_WORDS),
        "scared": rng.choice(SCARED_WORDS),
        "Soon": rng.choice(SOON_WORDS),
        "Suddenly": rng.choice(SUDDENLY_WORDS),
        "Then": rng.choice(THEN_WORDS),
        "Oh_no": rng.choice(OH_NO_WORDS),
        "Wow": rng.choice(WOW_WORDS),
        "cried": rng.choice(CRIED_WORDS),
        "gently": rng.choice(GENTLY_WORDS),
        "sadly": rng.choice(SADLY_WORDS),
        "shyly": rng.choice(SHYLY_WORDS),
    }
    # Some ways to play mention the hero ("wrapped it around {his} neck"): fill them in first.
    slots["thing_fun"] = rng.choice(THING_FUN[thing.name]).format_map(slots)
    return slots


def _plan_pool(plan: StoryPlan, name: str) -> tuple[str, ...]:
    """The templates of a pool that depends on the plan."""
    if name == "season":
        return SEASON_SENTENCES[plan.season]
    if name == "sight":
        return PLACES[plan.place].sights
    fear = FEARS[plan.fear]
    if name == "fear_appears":
        return fear.appears
    if name == "fear_explanations":
        return fear.explanations
    if name == "fear_brave_moments":
        return fear.brave_moments
    raise AssertionError(f"unknown sentence pool {name!r}")


def render_story(plan: StoryPlan, rng: random.Random) -> str:
    """Write the story for `plan`: paragraphs separated by a blank line, no trailing newline."""
    slots = _story_slots(plan, rng)
    paragraphs = []
    for paragraph in ARCS[plan.arc]:
        sentences = []
        for templates, chance in paragraph:
            if chance < 1.0 and rng.random() >= chance:
                continue
            pool = _plan_pool(plan, templates) if isinstance(templates, str) else templates
            sentences.append(rng.choice(pool))
        paragraphs.append(" ".join(sentences))
    # One format call for the whole story is much faster than one per sentence.
    return "\n\n".join(paragraphs).format_map(slots)


# ---------------------------------------------------------------------------------------------------
# Describing a plan (for instructions, summaries and titles)
# ---------------------------------------------------------------------------------------------------


def arc_predicate(plan: StoryPlan, *, detailed: bool) -> str:
    """What the hero does in the story, present tense: "loses a red ball in the park"."""
    thing = plan.thing
    a_thing = with_article(f"{thing.color} {thing.name}" if detailed else thing.name)
    friend = plan.friend
    a_friend = with_article(friend.description if detailed else friend.kind)
    if detailed:
        a_friend = f"{a_friend} named {friend.name}"
    his = PRONOUN_FORMS[plan.hero.pronoun]["his"]
    at_place = f"{PLACES[plan.place].preposition} the {plan.place}"
    if plan.arc == "lost_and_found":
        return f"loses {a_thing} {at_place}" if detailed else f"loses {a_thing}"
    if plan.arc == "sharing":
        return f"learns to share {a_thing} with {a_friend}"
    if plan.arc == "fear":
        if detailed:
            return f"is afraid of {plan.fear} and learns to be brave with help from {a_friend}"
        return f"is afraid of {plan.fear}"
    if plan.arc == "new_friend":
        return (
            f"makes friends with {a_friend} {at_place}"
            if detailed
            else f"makes friends with {a_friend}"
        )
    if plan.arc == "helping":
        trouble_spot, _, _ = TROUBLE_SPOTS[plan.trouble]
        if detailed:
            return f"helps {a_friend} whose {thing.color} {thing.name} is stuck {trouble_spot}"
        return f"helps {a_friend} get {a_thing} back"
    if plan.arc == "surprise":
        return f"gets {a_thing} as a birthday surprise"
    if plan.arc == "trip":
        return (
            f"goes on a trip to the {plan.place} with {his} {plan.family}"
            if detailed
            else f"goes on a trip to the {plan.place}"
        )
    raise AssertionError(f"unknown arc {plan.arc!r}")


def hero_subject(plan: StoryPlan, *, detail: int) -> str:
    """The hero as a noun phrase, from "a cat" (detail 0) to "a brave little cat named Tom" (3)."""
    hero = plan.hero
    if detail == 0:
        return with_article(hero.kind)
    if detail == 1:
        return with_article(f"{hero.trait} {hero.kind}")
    if detail == 2:
        return f"{with_article(hero.kind)} named {hero.name}"
    return f"{with_article(hero.description)} named {hero.name}"


def describe_plan(plan: StoryPlan) -> str:
    """One phrase that names everything a reader would check the story against.

    "a story about a brave little cat named Tom who loses a red ball in the park"
    """
    return f"a story about {hero_subject(plan, detail=3)} who {arc_predicate(plan, detailed=True)}"


def story_title(plan: StoryPlan, rng: random.Random) -> str:
    """A short title in title case: "Max and the Red Ball"."""
    place = PLACES[plan.place]
    slots = {
        "Name": plan.hero.name,
        "Friend": plan.friend.name,
        "Kind": title_case(plan.hero.kind),
        "Friend_kind": title_case(plan.friend.kind),
        "Thing": title_case(plan.thing.name),
        "Color": title_case(plan.thing.color),
        "Place": title_case(plan.place),
        "At_place": f"{place.preposition} the {title_case(plan.place)}",
        "Fear": FEARS[plan.fear].title,
        "Trouble": TROUBLE_SPOTS[plan.trouble][2],
    }
    return rng.choice(TITLES[plan.arc]).format_map(slots)
