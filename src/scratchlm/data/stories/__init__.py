"""The built-in corpus: simple children's stories generated offline from a small story grammar.

`quickstart` must train a model that visibly learns something in about five minutes on a laptop, with
no download. TinyStories showed that a few million parameters are enough to learn fluent English when
the text uses a small vocabulary and simple plots, so this package writes stories in that style:

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

The modules:
- `words`: the vocabulary (names, kinds of characters, things, places, seasons, fears, small words);
- `templates`: the sentence templates, the arcs built from them, titles and story requests;
- `grammar`: plans (`sample_story_plan`), rendering (`render_story`), descriptions and titles;
- `corpus`: `generate_stories` and `write_synthetic_corpus` (the TinyStories-format file);
- `instructions`: instruction/output pairs about generated stories.
- `questions`: questions a story answers, with the answers it states (`story_questions`).
"""
