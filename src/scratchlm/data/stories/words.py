"""The stories' vocabulary: names, kinds of characters and their pronouns, adjectives, things,
places, seasons, fears, trouble spots, ending feelings and the small per-story word choices.

Plain data (tuples and insertion-ordered dicts: the order is part of the seeded output), with the
small frozen dataclasses that give some entries their fields.
"""

from __future__ import annotations

from dataclasses import dataclass

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
