"""The built-in corpus: simple children's stories generated offline from a small story grammar.

`quickstart` must train a model that visibly learns something in about five minutes on a laptop, with
no download. TinyStories showed that a few million parameters are enough to learn fluent English when
the text uses a small vocabulary and simple plots, so this module writes stories in that style:

    Once upon a time, there was a brave little cat named Tom. ...

How a story is made:

1. `sample_story_plan` draws the cast (a hero and a friend, each with a name, a kind, a pronoun and
   adjectives), a family member, a place, one object with a color, a season, a feeling for the ending
   and a story arc (lost-and-found, sharing, a fear overcome, making a friend, helping, a surprise,
   a trip). Everything that must stay consistent inside one story lives in the plan.
2. `render_story` walks the arc's stages (opening, setting, problem, attempt, helper, resolution,
   feeling, closing). Each stage picks one of many sentence templates and the templates are filled
   from one slot table built from the plan, so the same name, pronoun, kind and object appear
   throughout. Articles (a/an) and capitalized variants are computed once per story, never typed into
   templates next to a slot.

The same plan also describes the story in words (`describe_plan`) and drives instruction examples
("Tell me a story about a cat who loses a ball." -> a story with a cat and a ball) for the chat
fine-tuning stage, so requests and answers agree by construction.

Determinism: every random choice goes through one `random.Random(seed)` in a fixed order, over tuples
and insertion-ordered dicts only (never sets), using `choice`, `random` and `shuffle`, whose algorithms
have been stable for all Python 3 versions we support. The same seed gives byte-identical text
everywhere.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from scratchlm.errors import ScratchLMError
from scratchlm.io_utils import atomic_open

__all__ = [
    "ARC_NAMES",
    "DOCUMENT_SEPARATOR",
    "END_OF_TEXT",
    "Character",
    "StoryPlan",
    "Thing",
    "describe_plan",
    "generate_instruction_examples",
    "generate_stories",
    "indefinite_article",
    "make_instruction_example",
    "render_story",
    "sample_story_plan",
    "story_title",
    "write_synthetic_corpus",
]

END_OF_TEXT = "<|endoftext|>"
# TinyStories file format: every story is followed by a line that is exactly "<|endoftext|>".
DOCUMENT_SEPARATOR = f"\n{END_OF_TEXT}\n"

# Bump when the generated text changes (the golden digest in tests/data/test_synthetic.py will
# fail): corpora are cached by this version, size and seed.
GENERATOR_VERSION = 1


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


# ---------------------------------------------------------------------------------------------------
# The cast: names, kinds of characters, adjectives, pronouns, family
# ---------------------------------------------------------------------------------------------------

NAMES_BY_PRONOUN: dict[str, tuple[str, ...]] = {
    "he": (
        "Max", "Tom", "Ben", "Leo", "Jack", "Tim", "Finn", "Oscar", "Milo", "Jake", "Rex", "Buddy",
        "Toby", "Oliver", "Henry", "Lucas", "Noah", "Theo", "Owen", "Jasper", "Felix", "Hugo",
        "Louie", "Rocky", "Bruno", "Gus", "Otis", "Teddy", "Bobby", "Danny", "Eli", "Ethan", "Liam",
        "Ollie", "Peter", "Simon", "Timmy", "Zack", "Arlo", "Benny", "Chester", "Duke", "Ned",
        "Percy", "Rufus", "Spike", "Wally",
    ),
    "she": (
        "Lily", "Mia", "Sue", "Anna", "Lucy", "Ellie", "Rosie", "Daisy", "Zoe", "Emma", "Molly",
        "Bella", "Ruby", "Sophie", "Chloe", "Grace", "Hannah", "Ivy", "Julia", "Kate", "Lola",
        "Luna", "Maya", "Nora", "Olive", "Penny", "Polly", "Rose", "Sara", "Tilly", "Amy", "Clara",
        "Dot", "Ella", "Fern", "Hazel", "Iris", "Jenny", "Kitty", "Lulu", "Millie", "Nina", "Pearl",
        "Willow", "Poppy",
    ),
    "they": (
        "Sam", "Alex", "Riley", "Jo", "Robin", "Kit", "Pip", "Sky", "Jamie", "Casey", "Quinn",
        "Rowan", "Sage", "Remy", "Charlie", "Jordan", "Taylor", "Morgan", "Avery", "Bean", "Button",
        "Pebble", "Sunny", "Nico", "Ari", "Bo", "Wren", "Drew",
    ),
}  # fmt: skip

# Pronoun forms by the pronoun a character uses. Singular "they" takes plural verbs ("they were"), so
# the verb forms that change live here too and templates write "{he} {was}".
PRONOUN_FORMS: dict[str, dict[str, str]] = {
    "he": {"he": "he", "him": "him", "his": "his", "himself": "himself", "was": "was", "wasnt": "wasn't"},
    "she": {"he": "she", "him": "her", "his": "her", "himself": "herself", "was": "was", "wasnt": "wasn't"},
    "they": {"he": "they", "him": "them", "his": "their", "himself": "themselves", "was": "were", "wasnt": "weren't"},
}  # fmt: skip


@dataclass(frozen=True)
class Kind:
    """What a character is, and the few things the story says that depend on it."""

    moved: str  # past tense of how it gets somewhere: "ran", "hopped", "flew"
    searched: str  # how it looks for something (past tense, no pronouns)
    pronouns: tuple[str, ...]  # the pronouns that fit; repeated entries make one more likely
    is_person: bool = False


ANY_PRONOUN = ("he", "she", "he", "she", "they")  # "they" for about one character in five

KINDS: dict[str, Kind] = {
    # People.
    "girl": Kind("ran", "looked high and low", ("she",), is_person=True),
    "boy": Kind("ran", "looked high and low", ("he",), is_person=True),
    "kid": Kind("ran", "looked everywhere, one spot at a time", ANY_PRONOUN, is_person=True),
    # Animals (and two make-believe friends that children's stories love).
    "cat": Kind("ran", "climbed up a tall tree to look around", ANY_PRONOUN),
    "kitten": Kind("ran", "peeked into every corner", ANY_PRONOUN),
    "dog": Kind("ran", "sniffed the ground with a wet black nose", ANY_PRONOUN),
    "puppy": Kind("ran", "sniffed all around", ANY_PRONOUN),
    "bunny": Kind("hopped", "stood up tall and looked all around", ANY_PRONOUN),
    "rabbit": Kind("hopped", "hopped here and there, looking everywhere", ANY_PRONOUN),
    "bear": Kind("walked", "lifted up big rocks and logs to look", ANY_PRONOUN),
    "fox": Kind("ran", "sniffed the air and followed a trail", ANY_PRONOUN),
    "owl": Kind("flew", "flew up high and looked down with big round eyes", ANY_PRONOUN),
    "bird": Kind("flew", "flew up high to look around", ANY_PRONOUN),
    "duck": Kind("waddled", "waddled around and looked everywhere", ANY_PRONOUN),
    "goose": Kind("waddled", "stretched a long neck to look around", ANY_PRONOUN),
    "mouse": Kind("scurried", "looked in all the tiny places", ANY_PRONOUN),
    "frog": Kind("hopped", "jumped up on a rock to look around", ANY_PRONOUN),
    "pig": Kind("trotted", "sniffed around with a pink snout", ANY_PRONOUN),
    "lion": Kind("walked", "looked around with sharp eyes", ANY_PRONOUN),
    "tiger": Kind("walked", "crept through the grass and looked", ANY_PRONOUN),
    "elephant": Kind("walked", "used a long trunk to look under things", ANY_PRONOUN),
    "squirrel": Kind("ran", "ran up a tree to look around", ANY_PRONOUN),
    "turtle": Kind("walked slowly", "looked very slowly and very carefully", ANY_PRONOUN),
    "horse": Kind("trotted", "looked over the tall grass", ANY_PRONOUN),
    "pony": Kind("trotted", "trotted in a big circle and looked", ANY_PRONOUN),
    "cow": Kind("walked", "looked around with big brown eyes", ANY_PRONOUN),
    "lamb": Kind("skipped", "looked behind every bush", ANY_PRONOUN),
    "monkey": Kind("ran", "swung from branch to branch to look", ANY_PRONOUN),
    "penguin": Kind("waddled", "slid on its belly to look around", ANY_PRONOUN),
    "hedgehog": Kind("scurried", "poked a little nose into the leaves", ANY_PRONOUN),
    "deer": Kind("ran", "listened with big ears and looked", ANY_PRONOUN),
    "goat": Kind("trotted", "climbed up on a rock to look", ANY_PRONOUN),
    "raccoon": Kind("ran", "searched with quick little hands", ANY_PRONOUN),
    "chick": Kind("hopped", "peeped and looked everywhere", ANY_PRONOUN),
    "ladybug": Kind("flew", "flew in little circles to look", ANY_PRONOUN),
    "butterfly": Kind("flew", "fluttered high to look around", ANY_PRONOUN),
    "dragon": Kind("flew", "flew up over the treetops to look", ANY_PRONOUN),
    "unicorn": Kind("trotted", "looked around with kind, shining eyes", ANY_PRONOUN),
    "robot": Kind("rolled", "scanned the ground with bright blue lights", ANY_PRONOUN),
}
PERSON_KINDS = tuple(name for name, kind in KINDS.items() if kind.is_person)
CREATURE_KINDS = tuple(name for name, kind in KINDS.items() if not kind.is_person)
PERSON_SHARE = 0.3  # TinyStories is full of Lily and Tim; about a third of characters are children

# Personality words (first adjective), then an optional size or age word ("a brave little cat").
TRAITS = (
    "brave", "shy", "kind", "curious", "happy", "silly", "clever", "gentle", "friendly", "playful",
    "sleepy", "smart", "cheerful", "quiet", "busy", "funny", "careful", "honest", "proud", "sweet",
    "eager", "jolly", "lively", "polite", "helpful", "wise", "bold", "grumpy", "good", "nice",
    "calm", "cheeky", "lucky", "clumsy", "bouncy", "merry", "loving", "thoughtful",
)  # fmt: skip
PERSON_SIZES = ("little", "small", "young")
CREATURE_SIZES = ("little", "small", "big", "tiny", "young", "old", "fluffy", "spotted", "furry")
SIZE_SHARE = 0.6

# Family members appear by role ("his mom"); in dialogue they are called by the role ("said Mom").
FAMILY_PRONOUNS: dict[str, str] = {"mom": "she", "dad": "he", "grandma": "she", "grandpa": "he"}


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


# ---------------------------------------------------------------------------------------------------
# Things: the one object each story is about
# ---------------------------------------------------------------------------------------------------

# Past-tense ways to play with each thing ("it" is the thing; {his} and {him} are the hero's).
THING_FUN: dict[str, tuple[str, ...]] = {
    "ball": ("kicked it high into the air", "threw it up and caught it", "bounced it again and again", "rolled it back and forth"),
    "kite": ("let it fly high in the sky", "ran fast so it could fly", "watched it dance in the wind"),
    "teddy bear": ("hugged it tight", "gave it a big squeeze", "told it a funny story"),
    "doll": ("brushed its hair", "sang it a little song", "took it for a walk"),
    "toy car": ("raced it up and down", "made it zoom in circles", "pushed it along with a loud vroom"),
    "toy boat": ("sailed it in a big puddle", "made it bob up and down in the water", "blew on its little sail"),
    "toy train": ("pushed it along with a loud choo choo", "made it go round and round", "filled it with little pebbles"),
    "hat": ("wore it all day long", "tipped it to say hello to everyone", "threw it up and caught it"),
    "scarf": ("wrapped it around {his} neck", "waved it like a flag", "let it flap in the wind"),
    "drum": ("played a happy song on it", "banged it loudly", "tapped out a little beat"),
    "book": ("read it under a tree", "looked at all the pictures", "read it two times"),
    "balloon": ("held its string and watched it float", "bopped it up into the air", "let it float above {his} head"),
    "blanket": ("snuggled up in it", "spread it out on the ground", "made a little tent with it"),
    "umbrella": ("twirled it round and round", "opened it and spun it", "danced with it like a partner"),
    "bucket": ("filled it with pebbles", "carried it everywhere", "used it as a drum"),
    "wagon": ("pulled it up and down the path", "gave {his} toys a ride in it", "rode in it down a little hill"),
    "bike": ("rode it up and down the path", "rang its little bell", "rode it in big circles"),
    "whistle": ("blew it loudly", "played a tune on it", "blew it to call {his} friends"),
    "crown": ("wore it proudly", "put it on and marched around", "polished it until it sparkled"),
    "backpack": ("carried it on {his} back", "filled it with snacks", "packed it with {his} favorite things"),
    "basket": ("filled it with flowers", "carried it on {his} arm", "filled it with shiny stones"),
    "marble": ("rolled it along the ground", "held it up to the sun", "watched it roll and spin"),
    "bell": ("rang it loudly", "rang it with a happy ding", "shook it to make music"),
    "toy plane": ("made it fly through the air", "zoomed it around and around", "held it up high like a real plane"),
    "toy truck": ("filled it with sticks and stones", "drove it over the bumps", "pushed it with a big rumble"),
    "ribbon": ("tied it in a pretty bow", "waved it in the wind", "twirled it while dancing"),
    "guitar": ("strummed it softly", "played a little song on it", "sang along while playing it"),
    "flute": ("played a sweet tune on it", "played a song for the birds", "blew a happy note on it"),
    "shell": ("held it up to {his} ear", "counted the stripes on it", "turned it over and over"),
}  # fmt: skip
THING_NAMES = tuple(THING_FUN)
COLORS = (
    "red", "blue", "green", "yellow", "orange", "purple", "pink", "white", "black", "brown", "gray",
    "golden", "silver",
)  # fmt: skip
# An optional word before the color ("a shiny red ball").
THING_LOOKS = ("shiny", "new", "old", "big", "little", "small", "bright", "pretty", "soft")
THING_LOOK_SHARE = 0.4


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
# Places, seasons and the story-specific extras (fears, trouble spots)
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Place:
    preposition: str  # "in the park", "at the beach", "on the farm"
    sights: tuple[str, ...]  # sentence templates describing it
    spots: tuple[str, ...]  # where something can hide ("under the slide"); at least three
    activities: tuple[str, ...]  # past-tense things to do there, no pronouns
    has_water: bool = False
    trip: bool = False  # far enough away to be the goal of a trip


PLACES: dict[str, Place] = {
    "park": Place(
        "in",
        (
            "The park had swings, a slide and a big green field.",
            "Children laughed on the swings, and ducks swam in the pond.",
            "Tall trees gave cool shade, and the grass was soft.",
        ),
        ("under the slide", "behind a big tree", "near the swings", "by the pond", "under a bench", "in the tall grass"),
        ("went down the slide", "played on the swings", "fed the ducks at the pond"),
    ),
    "garden": Place(
        "in",
        (
            "The garden was full of roses, tulips and tall sunflowers.",
            "Bees buzzed around the flowers, and a little fountain splashed.",
            "There were rows of carrots and beans, and a path made of stones.",
        ),
        ("under a big leaf", "behind the flower pots", "next to the tomatoes", "by the little fountain", "under the rose bush", "near the garden gate"),
        ("smelled the roses", "watered the flowers", "watched a snail on a leaf"),
    ),
    "forest": Place(
        "in",
        (
            "The forest was full of tall trees and singing birds.",
            "Sunlight came down through the green leaves.",
            "A little path wound between the trees, and mushrooms grew by the roots.",
        ),
        ("under a pile of leaves", "behind an old log", "next to a big mushroom", "inside a hollow tree", "under a pine tree", "by a mossy rock"),
        ("followed a little path", "listened to the birds sing", "picked wild berries"),
        trip=True,
    ),
    "beach": Place(
        "at",
        (
            "The waves went up and down, and the sand was warm.",
            "Seagulls flew over the blue water.",
            "There were shells and smooth stones all along the shore.",
        ),
        ("behind a sand castle", "under a beach towel", "near the big rocks", "by the water", "in a pile of seaweed", "under a striped umbrella"),
        ("built a big sand castle", "splashed in the waves", "looked for pretty shells"),
        has_water=True,
        trip=True,
    ),
    "farm": Place(
        "on",
        (
            "There were cows, pigs and chickens everywhere.",
            "A big red barn stood next to a field of corn.",
            "The farm smelled of fresh hay, and a rooster crowed on the fence.",
        ),
        ("behind the barn", "in the hay", "next to the chicken coop", "under the old tractor", "by the fence", "near the water trough"),
        ("fed the chickens", "petted a little lamb", "rode on a hay wagon"),
        trip=True,
    ),
    "meadow": Place(
        "in",
        (
            "The meadow was full of wild flowers and buzzing bees.",
            "Butterflies flew over the long green grass.",
            "A little stream ran along the edge of the meadow.",
        ),
        ("in the tall grass", "behind a big rock", "under a bush", "near the little stream", "by an old stump", "among the daisies"),
        ("rolled down a grassy slope", "chased the butterflies", "made a chain of daisies"),
    ),
    "lake": Place(
        "by",
        (
            "The lake was calm and blue, and frogs sat on the lily pads.",
            "Little boats floated on the water, and the sun made it sparkle.",
            "Ducks swam in a line across the lake.",
        ),
        ("near the water", "under the dock", "behind the reeds", "by a big willow tree", "next to a little boat", "under a flat rock"),
        ("skipped stones on the water", "watched the fish jump", "rowed a little boat"),
        has_water=True,
        trip=True,
    ),
    "hill": Place(
        "on",
        (
            "From the top of the hill, {Name} could see the whole town.",
            "The wind blew across the green hill.",
            "Sheep were eating grass on the side of the hill.",
        ),
        ("behind a big rock", "at the bottom of the hill", "under a lonely tree", "in the long grass", "near the old fence", "by a patch of clover"),
        ("rolled all the way down", "looked at the town below", "flew a paper plane"),
    ),
    "playground": Place(
        "at",
        (
            "There was a tall slide, a sandbox and a merry-go-round.",
            "Children were running, jumping and laughing everywhere.",
            "The swings went up and down, and the seesaw went bump.",
        ),
        ("in the sandbox", "under the slide", "behind the swings", "by the monkey bars", "under a bench", "near the seesaw"),
        ("went down the big slide", "played in the sandbox", "rode the merry-go-round"),
    ),
    "backyard": Place(
        "in",
        (
            "The backyard had a swing, a vegetable patch and a tall fence.",
            "A big apple tree grew in the middle of the backyard.",
            "Flowers grew along the fence, and a bird bath stood by the path.",
        ),
        ("behind the shed", "under the swing", "in the vegetable patch", "by the back fence", "under the porch", "next to the bird bath"),
        ("swung on the swing", "picked an apple", "splashed in the bird bath"),
    ),
    "river": Place(
        "by",
        (
            "The river flowed past, bubbling over smooth stones.",
            "An old wooden bridge crossed the river.",
            "Fish jumped in the water, and tall reeds swayed on the bank.",
        ),
        ("under the bridge", "behind the reeds", "near the water", "by a smooth stone", "under a willow tree", "next to a hollow log"),
        ("threw sticks into the water", "watched the water rush by", "looked for frogs"),
        has_water=True,
        trip=True,
    ),
    "zoo": Place(
        "at",
        (
            "At the zoo, there were lions, giraffes and big gray elephants.",
            "Monkeys swung in the trees, and parrots called out hello.",
            "A family of penguins splashed in a cold blue pool.",
        ),
        ("near the giraffes", "by the duck pond", "under a bench", "behind the snack stand", "next to the big gate", "near the monkey house"),
        ("watched the monkeys swing", "saw a tall giraffe eat leaves", "waved at the elephants"),
        trip=True,
    ),
    "pond": Place(
        "by",
        (
            "The pond was still, and little fish swam under the water.",
            "Dragonflies zipped over the pond, and a frog said ribbit.",
            "Lily pads floated on the water like little green plates.",
        ),
        ("behind the reeds", "under a lily pad", "by a mossy stone", "near the water", "under a little bush", "next to an old log"),
        ("watched the tadpoles swim", "counted the lily pads", "threw pebbles into the water"),
        has_water=True,
    ),
    "orchard": Place(
        "in",
        (
            "The orchard was full of apple trees and pear trees.",
            "Ripe red apples hung from every branch.",
            "The air smelled sweet, and bees flew from tree to tree.",
        ),
        ("under an apple tree", "behind a wooden ladder", "in a basket of apples", "by the old wall", "under a pile of leaves", "near the gate"),
        ("picked juicy apples", "climbed a little tree", "ate a sweet pear"),
        trip=True,
    ),
    "mountain": Place(
        "on",
        (
            "The mountain was so tall that its top touched the clouds.",
            "A small waterfall tumbled down the rocks.",
            "Pine trees covered the mountain, and the air was fresh and cool.",
        ),
        ("behind a big rock", "under a pine tree", "near the waterfall", "by the path", "in a little cave", "next to a fallen tree"),
        ("climbed a rocky path", "saw a waterfall", "looked at the clouds below"),
        trip=True,
    ),
    "market": Place(
        "at",
        (
            "The market was busy, with fruit, bread and flowers for sale.",
            "People called out, and the smell of fresh bread filled the air.",
            "There were baskets of apples, big orange pumpkins and jars of honey.",
        ),
        ("under a fruit stand", "behind a basket of apples", "next to the flower cart", "by the bread stand", "under a table", "near the fountain"),
        ("tasted some sweet honey", "looked at all the fruit", "bought a loaf of warm bread"),
        trip=True,
    ),
}  # fmt: skip
PLACE_NAMES = tuple(PLACES)
TRIP_PLACE_NAMES = tuple(name for name, place in PLACES.items() if place.trip)

SEASONS = ("spring", "summer", "fall", "winter")
TIMES_OF_DAY = ("morning", "afternoon", "day")
WEATHER_BY_SEASON: dict[str, tuple[str, ...]] = {
    "spring": ("sunny", "bright", "warm", "breezy"),
    "summer": ("hot", "sunny", "bright", "lovely"),
    "fall": ("windy", "cool", "cloudy", "crisp"),
    "winter": ("cold", "snowy", "frosty", "chilly"),
}
SEASON_SENTENCES: dict[str, tuple[str, ...]] = {
    "spring": (
        "The sun was warm, and the flowers were starting to bloom.",
        "Birds sang in the trees, and the grass was soft and green.",
        "It was spring, and little buds were growing on every tree.",
        "A soft spring wind blew, and the air smelled like flowers.",
    ),
    "summer": (
        "The sun was hot and bright in the blue sky.",
        "It was summer, and there was not a cloud in the sky.",
        "The day was warm, and bees buzzed from flower to flower.",
        "It was so hot that {Name} wanted to stay in the shade.",
    ),
    "fall": (
        "Red and yellow leaves fell from the trees.",
        "The wind was cool, and leaves crunched under {his} feet.",
        "It was fall, and the trees were orange and brown.",
        "The air was crisp, and the days were getting shorter.",
    ),
    "winter": (
        "Soft white snow covered the ground.",
        "The air was cold, and {Name} could see {his} breath.",
        "Little snowflakes danced in the air.",
        "It was winter, and the ponds were covered with ice.",
    ),
}


@dataclass(frozen=True)
class Fear:
    title: str  # as it appears in a title: "the Dark"
    appears: tuple[str, ...]  # the scary thing shows up
    explanations: tuple[str, ...]  # the friend explains why it is not so scary
    brave_moments: tuple[str, ...]  # the hero faces it
    needs_water: bool = False
    warm_weather_only: bool = False  # no bees or swimming in the snow


FEARS: dict[str, Fear] = {
    "the dark": Fear(
        "the Dark",
        (
            "{Soon}, the sun went down, and it started to get dark {at_place}.",
            "They played for so long that the sky turned dark. Long shadows stretched across the ground.",
            "Then the sun set, and everything grew dark and quiet.",
        ),
        (
            '"The dark is not so scary," said {Friend}. "Look up! The stars are shining for us."',
            '"The dark is just the night coming to rest," said {Friend}. "Everything is still the same."',
            '"In the dark, we can see the moon and the stars," said {Friend}. "Let\'s count them together."',
        ),
        (
            "{Name} looked up and saw the big round moon. It was beautiful.",
            "{Name} opened {his} eyes. Tiny stars twinkled all over the sky.",
            "Together, they counted the stars: one, two, three, and more and more.",
        ),
    ),
    "thunder": Fear(
        "Thunder",
        (
            "{Suddenly}, dark clouds filled the sky. Boom! The thunder was very loud.",
            "Then the wind blew hard, and gray clouds rolled in. Crash! Thunder shook the sky.",
            "Rain began to fall, and a loud rumble of thunder rolled across the sky.",
        ),
        (
            '"Thunder is just a big noise from the clouds," said {Friend}. "It cannot hurt you."',
            '"The clouds are just bumping together," said {Friend}. "We are safe here."',
            '"Let\'s wait under this tree until the storm is over," said {Friend}. "The thunder will go away soon."',
        ),
        (
            "{Name} listened to the rain. It sounded like a soft drum.",
            "They sat together and counted after each flash. Soon the thunder was far away.",
            "The storm passed, and a bright rainbow came out in the sky.",
        ),
    ),
    "bees": Fear(
        "the Bees",
        (
            "{Suddenly}, a big bee buzzed past {Name}'s nose. Bzzz!",
            "Then {Name} saw a bee on a flower. It buzzed loudly.",
            "Bzzz! A fat, fuzzy bee flew right over {Name}'s head.",
        ),
        (
            '"Bees are busy making honey," said {Friend}. "If you stay calm, they will leave you alone."',
            '"That bee just wants the flowers," said {Friend}. "It does not want to hurt you."',
            '"Bees help the flowers grow," said {Friend}. "Let\'s stand still and watch."',
        ),
        (
            "{Name} stood very still. The bee landed on a flower and then flew away.",
            "{Name} watched the bee move from flower to flower. It was only doing its job.",
            "The bee buzzed past and went on its way. {Name} was okay!",
        ),
        warm_weather_only=True,
    ),
    "deep water": Fear(
        "Deep Water",
        (
            "{Friend} jumped into the water with a splash. The water looked deep and dark.",
            "The water was cool and clear, but it looked very deep.",
            "{Friend} wanted to swim, but the water looked so deep to {Name}.",
        ),
        (
            '"We can stay where the water is not deep," said {Friend}. "I will be right next to you."',
            '"Just put your feet in first," said {Friend}. "You can always come back out."',
            '"The water is nice and cool," said {Friend}. "We will go slow."',
        ),
        (
            "{Name} put one foot in the water, then the other. It felt cool and nice.",
            "Step by step, {Name} walked into the water. Soon {he} {was} splashing and laughing.",
            "{Name} held on to {Friend}, and together they paddled in the shallow water.",
        ),
        needs_water=True,
        warm_weather_only=True,
    ),
    "being up high": Fear(
        "Being Up High",
        (
            "{Friend} wanted to climb to the top of a tall tree to see the view.",
            '{Friend} climbed up onto a high rock and waved. "Come up here!" {friend_he} called.',
            "There was a big old tree with low branches, and {Friend} was already halfway up.",
        ),
        (
            '"Hold on tight and don\'t look down," said {Friend}. "One step at a time."',
            '"I will be right beside you," said {Friend}. "You can do it!"',
            '"Just go slowly," said {Friend}. "Your hands and feet know what to do."',
        ),
        (
            "Step by step, {Name} climbed up. From the top, {he} could see everything!",
            "{Name} climbed slowly and carefully. At the top, the wind felt cool, and the world looked small.",
            "Little by little, {Name} got higher and higher. At last, {he} {was} at the top!",
        ),
    ),
}
WARM_SEASONS = ("spring", "summer")


def _fears_that_fit(has_water: bool, season: str) -> tuple[str, ...]:
    return tuple(
        name
        for name, fear in FEARS.items()
        if (has_water or not fear.needs_water)
        and (season in WARM_SEASONS or not fear.warm_weather_only)
    )


# Precomputed per (place has water, season) so sampling does not rebuild the tuple for every story.
FEARS_THAT_FIT: dict[tuple[bool, str], tuple[str, ...]] = {
    (has_water, season): _fears_that_fit(has_water, season)
    for has_water in (False, True)
    for season in SEASONS
}

# Where a friend's thing gets stuck in the helping arc: (where it is, how it comes back, title words).
TROUBLE_SPOTS: tuple[tuple[str, str, str], ...] = (
    ("high up in a tall tree", "down from the tree", "in the Tree"),
    ("on the roof of an old shed", "down from the roof", "on the Roof"),
    ("deep in a thorny bush", "out of the bush", "in the Bush"),
    ("under a heavy log", "out from under the log", "Under the Log"),
    ("on top of a tall fence", "down from the fence", "on the Fence"),
    ("in a deep muddy puddle", "out of the puddle", "in the Puddle"),
)

# How each arc may end, in one word; the feeling stage of every arc names it.
ENDING_FEELINGS: dict[str, tuple[str, ...]] = {
    "lost_and_found": ("happy", "glad", "thankful", "relieved"),
    "sharing": ("happy", "glad", "proud", "warm"),
    "fear": ("brave", "proud", "safe", "calm"),
    "new_friend": ("happy", "glad", "excited", "cheerful"),
    "helping": ("proud", "happy", "good", "glad"),
    "surprise": ("happy", "loved", "excited", "thankful"),
    "trip": ("happy", "glad", "excited", "thankful"),
}
ARC_NAMES = tuple(ENDING_FEELINGS)


# ---------------------------------------------------------------------------------------------------
# Small per-story word choices (drawn fresh for every story so the same template reads differently)
# ---------------------------------------------------------------------------------------------------

HOMES = (
    "a small house near the woods", "a little town by the sea", "a cozy house on a hill",
    "a quiet village", "a big city", "a farm near a river", "a yellow house with a red door",
    "a busy town", "a snug home under an old oak tree", "a tiny cottage at the edge of the forest",
    "a blue house on a long street", "a sunny valley", "a little village between two hills",
)  # fmt: skip
HOBBIES = (
    "play outside", "run and jump", "sing songs", "draw pictures", "dance in the sun",
    "look at the clouds", "build towers with blocks", "read books", "explore", "pick flowers",
    "splash in puddles", "climb trees", "watch the birds", "chase butterflies",
    "play hide and seek", "bake cookies", "listen to stories", "count the stars",
    "make new things", "jump in the leaves", "swing on the swings", "hum happy tunes",
    "collect pretty stones", "play tag", "paint with bright colors", "tell jokes",
)  # fmt: skip
DISTRACTIONS = (
    "look at a butterfly", "smell some flowers", "drink some water", "chase a falling leaf",
    "watch a bird", "pick up a pretty stone", "say hello to a friend", "look at a funny bug",
    "eat a snack", "watch the clouds", "follow a little frog", "tie a shoe", "rest in the shade",
)  # fmt: skip
SAD_WORDS = ("sad", "upset", "unhappy", "worried", "gloomy")
SCARED_WORDS = ("scared", "afraid", "frightened", "nervous")
SOON_WORDS = ("Soon", "After a while", "A little later", "Before long")
SUDDENLY_WORDS = ("Suddenly", "All of a sudden", "Just then")
THEN_WORDS = ("Then", "After that", "Next", "A moment later")
OH_NO_WORDS = ("Oh no", "Oh dear", "Oh my", "Oh, no")
WOW_WORDS = ("Wow", "Yay", "Hooray", "Oh, wow")
CRIED_WORDS = ("cried", "said", "wailed", "shouted", "sobbed")
GENTLY_WORDS = ("gently", "softly", "kindly", "quietly")
SADLY_WORDS = ("sadly", "quietly", "with a sniff", "in a small voice")
SHYLY_WORDS = ("shyly", "softly", "quietly", "with a little wave")


# ---------------------------------------------------------------------------------------------------
# Sentence templates
#
# Slots (all filled from `_story_slots`; a capitalized slot name is the sentence-initial form):
#   hero:    {Name} {he}/{He} {him} {his}/{His} {himself} {was} {wasnt} {kind} {a_hero}/{A_hero}
#            {moved} {searched}
#   friend:  {Friend} {friend_he}/{Friend_he} {friend_him} {friend_his}/{Friend_his} {friend_himself}
#            {friend_was} {friend_kind} {a_friend}/{A_friend} {friend_moved} {friend_searched}
#   family:  {family} ("mom"), {Family} ("Mom", when used as a name), {family_he}/{Family_he}
#            {family_him} {family_his}
#   place:   {place} {at_place}/{At_place} {spot_1} {spot_2} {found_spot} {activity_1} {activity_2}
#   thing:   {thing} {color} {thing_desc} ("shiny red ball") {color_thing} ("red ball")
#            {a_thing} {a_color_thing}/{A_color_thing} {thing_fun}
#   other:   {season} {time_of_day} {weather} {end_feeling} {sad} {scared} {fear} {trouble_spot}
#            {trouble_out} {home} {hobby} {distraction} {Soon} {Suddenly} {Then} {Oh_no} {Wow}
#            {cried} {gently} {sadly} {shyly}
# Never write "a {slot}": the article depends on the word, so use the a_... slots.
# ---------------------------------------------------------------------------------------------------

# Shared by every arc ---------------------------------------------------------------------------------

OPENINGS = (
    "Once upon a time, there was {a_hero} named {Name}.",
    "Once upon a time, there was {a_hero} called {Name}.",
    "There once was {a_hero} named {Name}.",
    "Once upon a time, in {home}, there lived {a_hero} named {Name}.",
    "{Name} was {a_hero} who lived in {home}.",
    "Once there was {a_hero}. {His} name was {Name}.",
    "Long ago, in {home}, there lived {a_hero}. {His} name was {Name}.",
    "There was once {a_hero} named {Name} who lived in {home}.",
    "Once upon a time, {a_hero} named {Name} lived in {home}.",
    "In {home}, there was {a_hero} named {Name}.",
    "Once upon a time, there lived {a_hero}. Everyone called {him} {Name}.",
    "Not long ago, there was {a_hero} named {Name}.",
)
HOBBY_LINES = (
    "{Name} loved to {hobby}.",
    "{He} liked to {hobby} every day.",
    "Every day, {Name} liked to {hobby}.",
    "More than anything, {Name} loved to {hobby}.",
    "{Name} was always happy when {he} could {hobby}.",
    "{He} wanted to {hobby} all day long.",
    "When the sun was out, {Name} liked to {hobby}.",
    "{Name} lived with {his} {family}, and together they liked to {hobby}.",
)
SETTINGS = (
    "One {time_of_day}, {Name} went to the {place}.",
    "One {weather} {season} {time_of_day}, {Name} {moved} to the {place}.",
    "One day, {Name} went to play {at_place}.",
    "It was a {weather} {season} day, and {Name} was playing {at_place}.",
    "One {time_of_day}, {Name} decided to go to the {place}.",
    "On a {weather} {time_of_day}, {Name} {moved} all the way to the {place}.",
    "One {season} day, {Name} and {his} {family} went to the {place}.",
    "Early one {time_of_day}, {Name} {moved} out to the {place}.",
    "After lunch one {season} day, {Name} went to the {place} to play.",
)
OWN_THING = (
    "{Name} had {a_thing}. It was {his} favorite thing in the whole world.",
    "{Name} had {a_thing}. {He} took it everywhere.",
    "{He} had {his} {thing_desc} with {him}. {His} {family} had given it to {him}.",
    "{Name} carried {a_thing}. {He} loved it more than anything.",
    "{Name} brought along {his} favorite {thing}. It was {color} and very special.",
    "{His} {thing_desc} went everywhere with {him}.",
    "{Name} had a favorite toy. It was {a_thing}.",
)
PLAY_WITH_THING = (
    "{He} {thing_fun}.",
    "{Name} {thing_fun} and laughed.",
    "For a long time, {Name} {thing_fun}.",
    "{Name} played with the {thing} for a long time.",
    "First, {Name} {thing_fun}. It was so much fun.",
)
CLOSINGS = (
    "The end.",
    "That night, {Name} went to bed with a big smile.",
    "It was the best day ever.",
    "And they all lived happily ever after.",
    "When the sun went down, everyone went home tired and happy.",
    "{Name} would remember this day for a long, long time.",
    "And that is how {Name} spent a very special {season} day.",
)

# Lost and found ---------------------------------------------------------------------------------------

LOST_THE_THING = (
    "After a while, {Name} put the {thing} down to {distraction}. When {he} turned around, the {thing} was gone!",
    "{Then}, {Name} stopped to {distraction}. When {he} looked back, {his} {thing} was not there anymore!",
    "{Suddenly}, a strong gust of wind blew. When {Name} looked down, the {thing} was gone!",
    "When it was time to go home, {Name} looked for {his} {thing}. But it was gone!",
    "{Name} {moved} off to {distraction}. When {he} came back, the {thing} was nowhere to be seen.",
)
LOST_REACTIONS = (
    '"{Oh_no}! Where is my {thing}?" {cried} {Name}.',
    '"My {thing}! Where did it go?" {Name} {cried}.',
    "{Name} felt very {sad}. {His} eyes filled with tears.",
    '{Name} was very {sad}. "I lost my {color_thing}," {he} said.',
    '"{Oh_no}," said {Name}. "I can\'t find my {thing} anywhere!"',
)
SEARCHES = (
    "{He} looked {spot_1}. {He} looked {spot_2}. But the {thing} was not there.",
    "{Name} searched {spot_1} and {spot_2}, but {he} could not find it.",
    "First, {he} looked {spot_1}. Then {he} looked {spot_2}. Still no {thing}.",
    "{Name} {moved} all around the {place}. {He} looked {spot_1} and {spot_2}, but it was not there.",
    "{He} searched {spot_1}, but there was nothing there. {He} searched {spot_2}, but it was not there either.",
)
HELPER_ARRIVES = (
    "Just then, {a_friend} named {Friend} came by.",
    "{Soon}, {a_friend} named {Friend} {friend_moved} over.",
    "{Then}, {Name} saw {a_friend}. {Friend_his} name was {Friend}.",
    "{Name}'s friend {Friend}, {a_friend}, {friend_moved} over to see what was wrong.",
)
HELPER_ASKS = (
    '"Why are you so {sad}, {Name}?" asked {Friend}.',
    '"What is wrong?" asked {Friend}.',
    '"Are you okay?" {Friend} asked {gently}.',
    '"Why do you look so {sad}?" asked {Friend}.',
)
LOST_EXPLANATIONS = (
    '"I lost my {color_thing}," said {Name}.',
    '"I can\'t find my {thing}," {Name} said {sadly}.',
    '"My {thing_desc} is gone," {Name} said. "I looked everywhere."',
)
HELPER_OFFERS = (
    '"Don\'t worry. I will help you look," said {Friend}.',
    '"I can help!" said {Friend}. "Let\'s look together."',
    '"Let\'s find it together," said {Friend} with a smile.',
    '"Two friends can look better than one," said {Friend}.',
)
FINDING = (
    "{Friend} {friend_searched}. {Soon}, {friend_he} saw something {color} {found_spot}.",
    "Together, they looked {found_spot}. And there it was!",
    "{Friend} {friend_searched}, and {friend_he} found the {thing} {found_spot}!",
    "They searched and searched. At last, {Name} saw the {color_thing} {found_spot}.",
)
FOUND_SHOUTS = (
    '"There it is!" shouted {Friend}.',
    '"My {thing}!" {Name} shouted. "You found it!"',
    '"{Wow}! You found it!" said {Name}.',
)
REUNITED = (
    "{Name} picked up {his} {thing} and held it close.",
    "{Name} hugged {his} {color_thing} tight.",
    "{Name} {moved} over and picked up the {thing}. It was safe.",
)
THANKS_FOR_HELP = (
    '"Thank you, {Friend}!" said {Name}. "You are a good friend."',
    '"Thank you for helping me," said {Name}.',
    "{Name} thanked {Friend} again and again.",
)
LOST_FEELINGS = (
    "{Name} felt so {end_feeling}.",
    "{Name} was very {end_feeling} to have {his} {thing} back.",
    "Now {Name} felt {end_feeling} again.",
    "{Name} smiled a big smile. {He} felt {end_feeling} and warm inside.",
)
LOST_MORALS = (
    "From that day on, {Name} always kept {his} {thing} close.",
    "{Name} learned to take good care of {his} things.",
    "{Name} learned that friends help each other.",
    "After that, {Name} never left {his} {thing} behind again.",
    "{Name} and {Friend} played together until the sun went down.",
)

# Sharing ------------------------------------------------------------------------------------------------

FRIEND_IS_THERE = (
    "{At_place}, {Name} saw {his} friend {Friend}, {a_friend}.",
    "There, {Name} met {a_friend} named {Friend}.",
    "{Name}'s friend {Friend}, {a_friend}, was already there.",
    "{At_place}, {a_friend} named {Friend} was playing too.",
)
ASKS_TO_SHARE = (
    '"Can I play with your {thing}?" asked {Friend}.',
    '"What a nice {thing}!" said {Friend}. "May I have a turn?"',
    '{Friend} looked at the {color_thing}. "Can we play with it together?" {friend_he} asked.',
    '"I like your {color_thing}," said {Friend}. "Will you share it with me?"',
)
REFUSES = (
    '"No," said {Name}. "It is mine!"',
    '{Name} held the {thing} tight. "No, it is my {thing}," {he} said.',
    '"No! I want to play with it all by myself," said {Name}.',
    '{Name} shook {his} head. "I don\'t want to share," {he} said.',
)
FRIEND_SADDENED = (
    "{Friend} looked {sad} and sat down all alone.",
    "{Friend}'s smile went away, and {friend_he} {friend_was} very quiet.",
    "{Friend} walked away with {friend_his} head down.",
    "{Friend} felt {sad}. {Friend_he} just wanted to play.",
)
PLAYING_ALONE = (
    "{Name} played with the {thing} all alone. But it was not much fun.",
    "{Name} {thing_fun}, but it did not feel fun anymore.",
    "{Name} tried to play by {himself}, but {he} kept looking at {Friend}.",
)
CHANGE_OF_HEART = (
    "{Name} thought about how {Friend} felt. {He} felt bad inside.",
    '{Name} remembered what {his} {family} always said: "Sharing is caring."',
    "{Name}'s tummy felt funny. {He} knew {he} had not been kind.",
    "{Name} looked at {Friend}, sitting all alone. {Then}, {Name} had an idea.",
)
SHARES = (
    '{Name} {moved} over to {Friend}. "I\'m sorry," {he} said. "Do you want to play with my {thing}?"',
    '"Here, {Friend}," said {Name}. "Let\'s play with the {thing} together."',
    '{Name} held out the {color_thing}. "You can have a turn," {he} said.',
    '"I\'m sorry I didn\'t share," said {Name}. "Let\'s take turns."',
)
FRIEND_CHEERS_UP = (
    '{Friend} smiled a big smile. "Thank you, {Name}!"',
    '{Friend}\'s face lit up. "Really? Thank you!" {friend_he} said.',
    '"{Wow}!" said {Friend}, jumping up and down.',
)
PLAYING_TOGETHER = (
    "They took turns with the {thing}. {Name} went first, and then {Friend}.",
    "Together, they played with the {color_thing} all {time_of_day}.",
    "They laughed and played with the {thing} until the sun went down.",
    "They played with the {thing} together. It was much more fun than playing alone.",
)
SHARING_FEELINGS = (
    "{Name} felt {end_feeling} inside.",
    "{Name} was {end_feeling} that {he} had shared.",
    "Sharing made {Name} feel {end_feeling}.",
    "{Name} felt {end_feeling}, and {Friend} felt happy too.",
)
SHARING_MORALS = (
    "{Name} learned that sharing is more fun than keeping things to yourself.",
    "{Name} learned that sharing makes everyone happy.",
    "From that day on, {Name} always shared {his} toys with {his} friends.",
    "{Name} and {Friend} became best friends, and they shared everything.",
)

# Fear overcome ------------------------------------------------------------------------------------------

FEAR_INTRODUCED = (
    "But there was one thing {Name} did not like. {He} {was} afraid of {fear}.",
    "{Name} was brave in many ways, but {he} {was} {scared} of {fear}.",
    "{Name} had a secret. {He} {was} afraid of {fear}.",
    "There was just one problem. {Name} was very {scared} of {fear}.",
)
COMFORT_THING = (
    "Whenever {he} felt {scared}, {Name} held {his} {thing_desc}. It made {him} feel safe.",
    "{Name} always carried {a_thing}. It helped {him} feel brave.",
    "{His} {family} had given {him} {a_thing} to help {him} feel brave.",
    "{Name} had {a_thing} that {he} hugged when {he} felt {scared}.",
)
FRIEND_COMES_ALONG = (
    "{His} friend {Friend}, {a_friend}, came along too.",
    "There, {Name} played with {a_friend} named {Friend}.",
    "{At_place}, {Name} met {his} good friend {Friend}, {a_friend}.",
)
PLAYING_WITH_FRIEND = (
    "They played games and ran around.",
    "They played with {Name}'s {color_thing} and laughed.",
    "{Name} and {Friend} {activity_1}.",
)
FEAR_REACTIONS = (
    "{Name} shook with fear. {He} hugged {his} {thing} tight.",
    '"I\'m scared!" {cried} {Name}. {He} wanted to run home.',
    "{Name}'s heart beat fast. {He} closed {his} eyes and held {his} {color_thing}.",
    '{Name} hid behind {Friend}. "I don\'t like {fear}," {he} whispered.',
)
FRIEND_CALMS = (
    '{Friend} sat close to {Name}. "It\'s okay," {friend_he} said.',
    '"Don\'t be scared," said {Friend} {gently}.',
    '{Friend} came close. "I am right here with you," {friend_he} said.',
)
DEEP_BREATHS = (
    "{Name} took a deep breath.",
    "{Name} thought about what {Friend} said. Then {he} took a deep breath.",
    '"Okay," said {Name}. "I will try."',
    "{Name} held {his} {thing} close and nodded.",
)
FEAR_GONE = (
    '"It is not so scary after all!" said {Name}.',
    '"I did it!" {Name} shouted. "I am not afraid anymore!"',
    "{Name} was surprised. It was not so bad after all.",
)
FEAR_FEELINGS = (
    "{Name} felt {end_feeling}.",
    "Now {Name} felt {end_feeling} inside.",
    "{Name} smiled. {He} felt so {end_feeling}.",
)
FEAR_MORALS = (
    "{Name} learned that being brave means trying even when you are scared.",
    "{Name} learned that a good friend can make anything less scary.",
    "From that day on, {Name} was not afraid of {fear} anymore.",
    "After that, {Name} was never {scared} of {fear} again.",
)

# Making a friend ----------------------------------------------------------------------------------------

LONELY = (
    "{Name} had just moved to a new home, and {he} did not have any friends yet.",
    "{Name} did not have many friends, and sometimes {he} felt lonely.",
    "{Name} wanted a friend to play with, but {he} {was} too shy to say hello.",
    "{Name} often played alone and wished {he} had a friend.",
)
SEES_NEW_FRIEND = (
    "There, {Name} saw {a_friend} sitting all alone.",
    "{At_place}, {Name} saw {a_friend} who looked lonely too.",
    "{Then}, {Name} saw {a_friend} {spot_1}. The {friend_kind} {friend_was} all by {friend_himself}.",
    "{Name} noticed {a_friend} sitting {spot_1}, watching the others play.",
)
WORKS_UP_COURAGE = (
    "{Name} wanted to say hello, but {he} felt shy.",
    "{Name} took a deep breath and {moved} over.",
    "{Name} thought for a moment. Then {he} {moved} over to say hello.",
)
SAYS_HELLO = (
    '"Hello! My name is {Name}," said {Name}. "What is your name?"',
    '"Hi there!" said {Name}. "I\'m {Name}. Who are you?"',
    '"Hello," said {Name} {shyly}. "Do you want to play?"',
)
NEW_FRIEND_REPLIES = (
    '"I\'m {Friend}," said the {friend_kind}.',
    '"My name is {Friend}," said the {friend_kind} with a smile.',
    'The {friend_kind} smiled. "Hi! I\'m {Friend}."',
)
OFFERS_TO_PLAY = (
    '{Name} showed {Friend} {his} {thing_desc}. "Do you want to play with it?" {he} asked.',
    '"Let\'s play with my {color_thing}!" said {Name}.',
    '{Name} held up {a_thing}. "Look what I have!" {he} said.',
)
ACCEPTS = (
    '"Yes, please!" said {Friend}.',
    '"Oh, yes!" said {Friend} happily.',
    '{Friend}\'s eyes lit up. "I would love to!"',
)
NEW_FRIENDS_PLAY = (
    "They played with the {thing} all {time_of_day}.",
    "{Name} and {Friend} took turns with the {thing}. They laughed and laughed.",
    "{Name} showed {Friend} how to {hobby}, and {Friend} showed {Name} a new game.",
    "They ran, jumped and laughed together. Then they played with the {color_thing}.",
)
BONDING = (
    "{Friend} was funny and kind, and {Name} liked {friend_him} very much.",
    '"This is the best day ever," said {Friend}.',
    "Soon they were laughing like old friends.",
)
NEW_FRIEND_FEELINGS = (
    "{Name} felt {end_feeling}. {He} {wasnt} lonely anymore.",
    "{Name} felt so {end_feeling} to have a new friend.",
    "{Name} went home feeling {end_feeling}.",
)
NEW_FRIEND_MORALS = (
    "{Name} learned that saying hello is the first step to making a friend.",
    "{Name} learned that a little courage can bring a new friend.",
    "From that day on, {Name} and {Friend} played together every day.",
    "{Name} and {Friend} became the best of friends.",
)

# Helping someone ----------------------------------------------------------------------------------------

MEETS_SOMEONE_IN_TROUBLE = (
    "{Suddenly}, {Name} heard someone crying. It was {a_friend} named {Friend}.",
    "{Then}, {Name} heard a sad little voice. {He} {moved} over and found {a_friend} named {Friend}.",
    "As {he} played, {Name} saw {a_friend} who looked very {sad}. {Friend_his} name was {Friend}.",
    "{Name} saw {a_friend} named {Friend} standing all alone. {Friend} looked very {sad}.",
)
ASKS_WHAT_IS_WRONG = (
    '"What is wrong?" asked {Name}.',
    '"Why are you {sad}?" asked {Name} {gently}.',
    '"Can I help you?" asked {Name}.',
)
TROUBLE = (
    '"My {thing_desc} is stuck {trouble_spot}," said {Friend}. "I can\'t get it back."',
    '{Friend} sniffed. "My {color_thing} got stuck {trouble_spot}!"',
    "{Name} looked and saw {Friend}'s {color_thing}. It was stuck {trouble_spot}.",
    '"Look," said {Friend} {sadly}. "My {color_thing} is stuck {trouble_spot}."',
)
OFFERS_HELP = (
    "{Name} thought and thought.",
    '"Don\'t worry," said {Name}. "I will help you."',
    '"I have an idea!" said {Name}.',
)
FIRST_TRY_FAILS = (
    "First, {Name} tried to reach it, but it was too far.",
    "{Name} stretched as far as {he} could, but {he} could not reach the {thing}.",
    "{Name} tried and tried, but the {thing} did not move.",
)
SOLVES_IT = (
    "Then {Name} found a long stick. {He} pushed and poked, and the {thing} came {trouble_out}!",
    "{Name} asked {his} {family} for help. Together, they got the {thing} {trouble_out}.",
    "{Name} was very careful. Slowly, {he} got the {thing} {trouble_out}.",
    "{Name} and {Friend} worked together. They pulled and pulled, and at last the {thing} came {trouble_out}.",
)
GIVES_BACK = (
    '"Here is your {thing}," said {Name}.',
    "{Name} gave the {color_thing} back to {Friend}.",
    "{Name} handed {Friend} the {thing}. It was safe and sound.",
)
THANKS_THE_HELPER = (
    '"Thank you, {Name}!" said {Friend}. "You are so kind."',
    '{Friend} jumped for joy. "You saved my {thing}!"',
    '"You are a real hero!" said {Friend}.',
)
HELPING_FEELINGS = (
    "{Name} felt {end_feeling} that {he} could help.",
    "Helping {Friend} made {Name} feel {end_feeling}.",
    "{Name} felt warm and {end_feeling} inside.",
)
AFTER_HELPING = (
    "Then {Name} and {Friend} played with the {thing} together.",
    "{Friend} let {Name} have a turn with the {thing}.",
    "{Name} and {Friend} became good friends.",
)
HELPING_MORALS = (
    "{Name} learned that helping others feels good.",
    "{Name} learned that even a small {kind} can be a big help.",
    "From that day on, {Name} always helped anyone in need.",
)

# A (birthday) surprise ----------------------------------------------------------------------------------

BIRTHDAY_COMING = (
    "Tomorrow was {Name}'s birthday, and {he} could not wait.",
    "It was {Name}'s birthday, but nobody seemed to remember.",
    "One {season} morning, {Name} woke up early. It was {his} birthday!",
    "Today was a special day. It was {Name}'s birthday!",
)
NOBODY_REMEMBERS = (
    "{His} {family} was busy and did not say anything about it.",
    '{Name} waited and waited, but no one said, "Happy birthday!"',
    "{Name} looked for {his} friends, but no one was around.",
    "Everyone seemed too busy to notice {Name}.",
)
DISAPPOINTED = (
    "{Name} felt a little {sad}.",
    "{He} sat down and sighed. Maybe everyone forgot.",
    '"Did everyone forget my birthday?" {Name} wondered.',
)
TAKEN_TO_THE_PLACE = (
    '{Then}, {his} {family} said, "{Name}, come with me to the {place}."',
    "{Then}, {his} {family} took {him} to the {place}.",
    "In the {time_of_day}, {his} {family} asked {him} to come to the {place}.",
    '"Let\'s go for a walk," said {Family}. So they went to the {place}.',
)
SURPRISE = (
    'When they got there, everyone jumped out and shouted, "Surprise!"',
    '{His} friends were waiting {spot_1}. "Surprise!" they shouted.',
    "{At_place}, there were balloons, a big cake and all of {his} friends.",
    '{Suddenly}, all of {his} friends jumped up. "Happy birthday, {Name}!"',
)
FRIEND_AT_PARTY = (
    "{His} friend {Friend}, {a_friend}, was there too.",
    '{Friend}, {a_friend}, {friend_moved} up. "Happy birthday, {Name}!" {friend_he} said.',
    "Even {Friend}, {a_friend}, had come to the party.",
)
THE_GIFT = (
    "{His} {family} gave {him} a present. Inside was {a_thing}!",
    "{Name} opened a big box. Inside, there was {a_thing}!",
    "{Friend} had a gift for {Name}, too. It was {a_thing}!",
    "There was a present with a big bow. {Name} opened it and found {a_thing}.",
)
LOVES_THE_GIFT = (
    '"{Wow}! {A_color_thing}!" said {Name}. "Thank you!"',
    '{Name} jumped up and down. "I love it!" {he} shouted.',
    '"It is just what I wanted!" said {Name}.',
)
PARTY = (
    "They ate cake and played games.",
    "{Name} and {Friend} played with the new {thing} until the sun went down.",
    "Everyone sang a song for {Name}, and {he} blew out the candles.",
    "{Name} {thing_fun}, and everyone cheered.",
)
SURPRISE_FEELINGS = (
    "{Name} felt so {end_feeling}.",
    "It was the best birthday ever, and {Name} felt {end_feeling}.",
    "{Name} hugged {his} {family}. {He} felt very {end_feeling}.",
)
SURPRISE_MORALS = (
    "{Name} learned that the ones who love you never forget.",
    "{Name} knew {he} had the best friends in the world.",
    "{Name} kept the {color_thing} for a long, long time.",
)

# A trip -------------------------------------------------------------------------------------------------

TRIP_ANNOUNCED = (
    'One {season} {time_of_day}, {his} {family} said, "Today we are going on a trip to the {place}!"',
    "{Name} and {his} {family} were going on a trip to the {place}.",
    "One day, {Name}'s {family} had big news. \"Let's go to the {place}!\" {family_he} said.",
    "It was the day of the big trip. {Name} and {his} {family} were going to the {place}.",
)
EXCITED = (
    "{Name} was so excited that {he} {moved} in circles.",
    '"Hooray!" shouted {Name}.',
    "{Name} could not wait to go.",
)
PACKS_THE_THING = (
    "{He} packed {his} {thing_desc} to bring along.",
    "{Name} took {a_thing} with {him}.",
    "Before they left, {Name} put {his} {thing_desc} in {his} bag.",
)
TRAVEL = (
    "They rode in the car for a long time.",
    "They took a bus, and then they walked the rest of the way.",
    "The trip was long, but {Name} looked out the window and counted the trees.",
    "They sang songs all the way there.",
)
ARRIVAL = (
    "At last, they got to the {place}.",
    "Finally, they were {at_place}.",
    "When they got to the {place}, {Name}'s eyes went wide.",
)
TRIP_ACTIVITIES = (
    "First, {Name} {activity_1}. Then {he} {activity_2}.",
    "{Name} {activity_1}, and {his} {family} {activity_2}.",
    "They {activity_1} and {activity_2}.",
)
MEETS_AT_DESTINATION = (
    "{At_place}, {Name} met {a_friend} named {Friend}.",
    "{Then}, {a_friend} named {Friend} {friend_moved} up to say hello.",
    "{Name} saw {a_friend} named {Friend} playing nearby.",
)
PLAYS_TOGETHER_ON_TRIP = (
    '"Can I play too?" asked {Friend}. "Of course!" said {Name}. They played with the {thing} together.',
    "{Name} showed {Friend} {his} {color_thing}, and they played with it together.",
    "{Name} and {Friend} took turns with the {thing}.",
)
TRIP_TWIST = (
    "{Name} almost left {his} {thing} {found_spot}, but {Friend} found it and gave it back.",
    "{Suddenly}, the {thing} was gone! But {Friend} found it {found_spot}.",
)
TIME_TO_GO = (
    "When the sun began to set, it was time to go home.",
    "Soon it was time to say goodbye.",
    '"Goodbye, {Friend}!" said {Name}. "I hope I see you again."',
)
BACK_HOME = (
    "On the way home, {Name} fell asleep in the car.",
    "That night, {Name} told {his} {family} all about {his} day.",
    "At home, {Name} put {his} {thing} by {his} bed.",
)
TRIP_FEELINGS = (
    "{Name} felt {end_feeling}. It had been a wonderful trip.",
    "{Name} was tired but {end_feeling}.",
    "{Name} felt so {end_feeling} about the trip to the {place}.",
)
TRIP_MORALS = (
    "{Name} learned that new places can be full of fun.",
    "{Name} hoped they would go back to the {place} again soon.",
)


# ---------------------------------------------------------------------------------------------------
# Arcs: paragraphs of stages; a stage is (templates, chance of appearing). A string instead of
# templates names a pool that depends on the plan ("season", "sight", "fear_appears", ...).
# ---------------------------------------------------------------------------------------------------

Stage = tuple[tuple[str, ...] | str, float]

ARCS: dict[str, tuple[tuple[Stage, ...], ...]] = {
    "lost_and_found": (
        ((OPENINGS, 1.0), (HOBBY_LINES, 0.5), (SETTINGS, 1.0), ("season", 0.5), ("sight", 0.3)),
        ((OWN_THING, 1.0), (PLAY_WITH_THING, 0.6), (LOST_THE_THING, 1.0), (LOST_REACTIONS, 1.0), (SEARCHES, 1.0)),
        ((HELPER_ARRIVES, 1.0), (HELPER_ASKS, 0.8), (LOST_EXPLANATIONS, 0.8), (HELPER_OFFERS, 1.0), (FINDING, 1.0), (FOUND_SHOUTS, 0.5), (REUNITED, 0.7)),
        ((THANKS_FOR_HELP, 0.7), (LOST_FEELINGS, 1.0), (LOST_MORALS, 0.6), (CLOSINGS, 0.4)),
    ),
    "sharing": (
        ((OPENINGS, 1.0), (HOBBY_LINES, 0.4), (OWN_THING, 1.0), (PLAY_WITH_THING, 0.5)),
        ((SETTINGS, 1.0), ("season", 0.4), ("sight", 0.3), (FRIEND_IS_THERE, 1.0), (ASKS_TO_SHARE, 1.0), (REFUSES, 1.0), (FRIEND_SADDENED, 1.0)),
        ((PLAYING_ALONE, 1.0), (CHANGE_OF_HEART, 1.0), (SHARES, 1.0), (FRIEND_CHEERS_UP, 0.8), (PLAYING_TOGETHER, 1.0)),
        ((SHARING_FEELINGS, 1.0), (SHARING_MORALS, 0.7), (CLOSINGS, 0.4)),
    ),
    "fear": (
        ((OPENINGS, 1.0), (HOBBY_LINES, 0.4), (FEAR_INTRODUCED, 1.0), (COMFORT_THING, 1.0)),
        ((SETTINGS, 1.0), ("season", 0.4), (FRIEND_COMES_ALONG, 1.0), (PLAYING_WITH_FRIEND, 0.6), ("fear_appears", 1.0), (FEAR_REACTIONS, 1.0)),
        ((FRIEND_CALMS, 1.0), ("fear_explanations", 1.0), (DEEP_BREATHS, 1.0), ("fear_brave_moments", 1.0), (FEAR_GONE, 0.8)),
        ((FEAR_FEELINGS, 1.0), (FEAR_MORALS, 0.8), (CLOSINGS, 0.4)),
    ),
    "new_friend": (
        ((OPENINGS, 1.0), (LONELY, 1.0), (OWN_THING, 1.0)),
        ((SETTINGS, 1.0), ("season", 0.4), ("sight", 0.4), (SEES_NEW_FRIEND, 1.0), (WORKS_UP_COURAGE, 1.0), (SAYS_HELLO, 1.0), (NEW_FRIEND_REPLIES, 1.0)),
        ((OFFERS_TO_PLAY, 1.0), (ACCEPTS, 1.0), (NEW_FRIENDS_PLAY, 1.0), (BONDING, 0.7)),
        ((NEW_FRIEND_FEELINGS, 1.0), (NEW_FRIEND_MORALS, 0.8), (CLOSINGS, 0.4)),
    ),
    "helping": (
        ((OPENINGS, 1.0), (HOBBY_LINES, 0.5), (SETTINGS, 1.0), ("season", 0.5), ("sight", 0.3)),
        ((MEETS_SOMEONE_IN_TROUBLE, 1.0), (ASKS_WHAT_IS_WRONG, 1.0), (TROUBLE, 1.0)),
        ((OFFERS_HELP, 1.0), (FIRST_TRY_FAILS, 0.7), (SOLVES_IT, 1.0), (GIVES_BACK, 1.0), (THANKS_THE_HELPER, 1.0)),
        ((HELPING_FEELINGS, 1.0), (AFTER_HELPING, 0.7), (HELPING_MORALS, 0.6), (CLOSINGS, 0.4)),
    ),
    "surprise": (
        ((OPENINGS, 1.0), (HOBBY_LINES, 0.5), (BIRTHDAY_COMING, 1.0)),
        ((NOBODY_REMEMBERS, 1.0), (DISAPPOINTED, 1.0), (TAKEN_TO_THE_PLACE, 1.0), ("season", 0.4)),
        ((SURPRISE, 1.0), (FRIEND_AT_PARTY, 1.0), (THE_GIFT, 1.0), (LOVES_THE_GIFT, 1.0), (PARTY, 1.0)),
        ((SURPRISE_FEELINGS, 1.0), (SURPRISE_MORALS, 0.5), (CLOSINGS, 0.4)),
    ),
    "trip": (
        ((OPENINGS, 1.0), (HOBBY_LINES, 0.4), (TRIP_ANNOUNCED, 1.0), (EXCITED, 0.8), (PACKS_THE_THING, 1.0)),
        ((TRAVEL, 0.8), (ARRIVAL, 1.0), ("season", 0.4), ("sight", 1.0), (TRIP_ACTIVITIES, 1.0)),
        ((MEETS_AT_DESTINATION, 1.0), (PLAYS_TOGETHER_ON_TRIP, 1.0), (TRIP_TWIST, 0.4)),
        ((TIME_TO_GO, 1.0), (BACK_HOME, 0.8), (TRIP_FEELINGS, 1.0), (TRIP_MORALS, 0.5), (CLOSINGS, 0.3)),
    ),
}  # fmt: skip
assert tuple(ARCS) == ARC_NAMES


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


def _arc_predicate(plan: StoryPlan, *, detailed: bool) -> str:
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


def _hero_subject(plan: StoryPlan, *, detail: int) -> str:
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
    return (
        f"a story about {_hero_subject(plan, detail=3)} who {_arc_predicate(plan, detailed=True)}"
    )


TITLES: dict[str, tuple[str, ...]] = {
    "lost_and_found": ("{Name} and the Lost {Thing}", "The Lost {Color} {Thing}", "Where Is {Name}'s {Thing}?", "{Name} Finds the {Color} {Thing}", "{Name} and {Friend} Find the {Thing}"),
    "sharing": ("{Name} Learns to Share", "{Name} and the {Color} {Thing}", "Sharing with {Friend}", "Taking Turns with the {Color} {Thing}"),
    "fear": ("{Name} Is Not Afraid of {Fear}", "{Name} Faces {Fear}", "The Brave Little {Kind}", "{Name} and {Friend} Are Brave"),
    "new_friend": ("{Name} Makes a Friend", "{Name} and {Friend}", "A New Friend for {Name}", "The {Kind} and the {Friend_kind}"),
    "helping": ("{Name} Helps {Friend}", "The {Thing} {Trouble}", "{Name} to the Rescue", "A Friend in Need"),
    "surprise": ("A Surprise for {Name}", "{Name}'s Birthday Surprise", "The {Color} {Thing}", "{Name}'s Best Birthday"),
    "trip": ("A Trip to the {Place}", "{Name} Goes to the {Place}", "A Day {At_place}", "{Name}'s Big Trip"),
}  # fmt: skip


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


# ---------------------------------------------------------------------------------------------------
# Public generators
# ---------------------------------------------------------------------------------------------------


def generate_stories(num_stories: int | None = None, *, seed: int = 0) -> Iterator[str]:
    """Yield `num_stories` stories (endlessly when None), the same ones for the same seed."""
    if num_stories is not None and num_stories < 0:
        raise ScratchLMError(
            f"num_stories must be 0 or more, got {num_stories}; pass a count or None for endless."
        )
    rng = random.Random(seed)
    count = 0
    while num_stories is None or count < num_stories:
        yield render_story(sample_story_plan(rng), rng)
        count += 1


def write_synthetic_corpus(path: Path, target_bytes: int, seed: int = 0) -> Path:
    """Write stories to `path` until it holds at least `target_bytes` bytes; return `path`.

    Every story is followed by "\\n<|endoftext|>\\n", so the file ends at a story boundary (the first
    one at or after `target_bytes`). The file is written atomically: it appears complete or not at all.
    """
    if target_bytes <= 0:
        raise ScratchLMError(
            f"target_bytes must be a positive number of bytes, got {target_bytes}; for example 10_000_000 for 10 MB."
        )
    path = Path(path)
    written = 0
    chunk: list[bytes] = []
    chunk_bytes = 0
    with atomic_open(path) as handle:
        for story in generate_stories(seed=seed):
            document = (story + DOCUMENT_SEPARATOR).encode("utf-8")
            chunk.append(document)
            chunk_bytes += len(document)
            written += len(document)
            # Write in ~1 MB pieces: few system calls, little memory, whatever the target size.
            if written >= target_bytes or chunk_bytes >= 1 << 20:
                handle.write(b"".join(chunk))
                chunk.clear()
                chunk_bytes = 0
            if written >= target_bytes:
                break
    return path


# ---------------------------------------------------------------------------------------------------
# Instruction examples (for the chat fine-tuning stage)
# ---------------------------------------------------------------------------------------------------

# Requests that end in "{about}" get "a cat who loses a ball"; "{where}" gets "a cat loses a ball".
STORY_REQUESTS = (
    "Tell me a story about {about}.",
    "Write a short story about {about}.",
    "Can you tell me a story about {about}?",
    "Write a story for a child about {about}.",
    "Please tell me a bedtime story about {about}.",
    "Make up a story about {about}.",
    "I would like a story about {about}.",
    "Tell me a short story about {about}, please.",
    "Can you tell me a story where {where}?",
    "Write a story where {where}.",
    "Tell me a story in which {where}.",
)
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
        subject = _hero_subject(plan, detail=rng.randrange(4))
        predicate = _arc_predicate(plan, detailed=rng.random() < 0.5)
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
    return {"instruction": f"{question}\n\n{story}", "output": answer}


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
