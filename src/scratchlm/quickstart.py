"""`scratchlm quickstart`: from nothing to a model that writes stories and answers in chat, within
a time budget.

Steps: generate the built-in story corpus (offline, deterministic), train a BPE tokenizer on it,
pretrain a small model for most of the budget, fine-tune it briefly on instructions generated from
the same story world ("Tell me a story about a cat who finds a ball."; the chat model's context is
extended to hold a story and a question about it), then print samples and the next commands. The
corpus is simple on purpose: in a few CPU-minutes a ~1M parameter model learns its grammar and
plots, which a real web corpus would need hours for.

The closing summary measures both models on the story world, where the truth is known
(`scratchlm.evaluation.stories`): character coherence of the base model's stories (distinct names
per story against the corpus's own at the same length, and pronoun agreement), and story question
answering by the chat model on held-out stories; then one of those chat turns, a story and a
question about it, with the expected answer beside the reply.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from scratchlm.chat_template import Message, end_of_turn_id, render
from scratchlm.checkpoint import Checkpoint, load_checkpoint
from scratchlm.data.stories.instructions import generate_instruction_examples
from scratchlm.errors import ScratchLMError
from scratchlm.evaluation.stories import (
    STORY_SAMPLING,
    character_coherence,
    story_question_answering,
)
from scratchlm.finetune.tasks import story_qa_examples
from scratchlm.finetune.trainer import FinetuneTrainer
from scratchlm.inference.engine import Engine
from scratchlm.io_utils import atomic_write_text
from scratchlm.training.run_config import TrainConfig
from scratchlm.training.trainer import Trainer

SAMPLE_PROMPTS = ("Once upon a time", "One day, a little", "The dog")
CHAT_PROMPTS = (
    "Tell me a story about a cat who finds a ball.",
    "Write a short story about a brave little fox.",
)
# Seconds of the budget for the chat fine-tune, and kept back for evaluation and samples.
CHAT_STAGE_S = 60.0
RESERVE_S = 20.0
INSTRUCTION_EXAMPLES = 3000
# Questions about a given story in the chat data (story-qa's train split: no held-out story), each
# answered in a sentence that restates the question ("Pip is a cow."). The instructions alone ask
# only some kinds of question; with these the chat model reads the story for every kind
# (docs/speedrun.md, "Replies that restate the question").
STORY_QUESTION_EXAMPLES = 3000
# A 1,024-token BPE vocabulary: names take two or three tokens, and the model learns to copy them
# from earlier in its context (keeping its characters) within the five minutes; with 2,048 and
# 4,096 tokens it did not in the same 2M tokens (docs/speedrun.md, "Vocabulary size").
QUICKSTART_VOCAB_SIZE = 1024
# The chat model's context. Pretraining keeps the preset's 256 tokens (fast, and the base model
# learns to copy names in time); the chat stage extends a rotary-position model to 512, which
# holds every held-out story with its question (at 256 half of them did not fit). Pretraining at
# 512 instead cost 19% more time per token on the track, and on the clock the base model lost its
# characters (coherence 1.86 against 1.33 at 256, over 16 stories; docs/speedrun.md).
CHAT_CONTEXT = 512
# Sequences per pretraining step: 8 x 256 tokens. Twice the updates of the default 16 for the same
# tokens; at equal tokens bits/byte fell from 0.230 to 0.222 and pronoun agreement rose from 57-60%
# to 84-95% (two seeds), for about 2% fewer tokens per second (docs/speedrun.md, quickstart track).
PRETRAIN_BATCH_SIZE = 8
# The closing summary's story measures: small enough to add about 10 s on one CPU thread.
SUMMARY_STORIES = 16
SUMMARY_STORY_TOKENS = 200
SUMMARY_QUESTIONS = 50


def run_quickstart(
    *,
    out: Path,
    minutes: float = 5.0,
    preset: str = "tiny",
    seed: int = 1337,
    device: str = "auto",
    corpus_mb: int = 20,
    vocab_size: int = QUICKSTART_VOCAB_SIZE,
    chat: bool = True,
) -> int | None:
    """Run every stage; returns None, or the number of the signal (SIGTERM, SIGUSR1) that stopped
    a training stage after its checkpoint (the later stages are then skipped)."""
    if minutes <= 0:
        raise ScratchLMError(f"--minutes must be positive, got {minutes}")
    started = time.perf_counter()
    if (out / "latest").exists() or (out / "checkpoints").exists():
        raise ScratchLMError(
            f"{out} already holds a quickstart run; remove it, or pass --out with a new directory "
            f"(its model stays usable: scratchlm generate --checkpoint {out})"
        )
    stages = 4 if chat else 3
    print(f"scratchlm quickstart: {minutes:g} minutes, preset {preset}, output {out}/")
    print(f"1/{stages} corpus and tokenizer: built-in synthetic stories (offline, deterministic)")
    config = TrainConfig(
        preset=preset,
        batch_size=PRETRAIN_BATCH_SIZE,
        data=f"synthetic:{corpus_mb}",
        tokenizer="bpe",
        vocab_size=vocab_size,
        tokenizer_sample_chars=5_000_000,
        val_fraction=0.02,
        out=str(out),
        seed=seed,
        device=device,
        eval_every=250,
        eval_tokens=32768,
        save_every=500,
        sample_tokens=48,
        sample_prompt="Once upon a time",
        warmup_steps=50,
        max_time=f"{minutes * 60:.0f}s",  # narrowed below once setup time is known
    )
    trainer = Trainer(config)
    setup_s = time.perf_counter() - started
    chat_s = min(CHAT_STAGE_S, minutes * 60 * 0.25) if chat else 0.0
    train_s = max(10.0, minutes * 60 - setup_s - chat_s - RESERVE_S)
    print(f"2/{stages} pretraining for {train_s:.0f}s (setup took {setup_s:.0f}s)")
    result = trainer.run(max_time_s=train_s)
    if result.stop_signal is not None:
        print(f"quickstart stopped during pretraining; the model so far is in {out}")
        return int(result.stop_signal)
    best = "n/a" if result.best_val_loss is None else f"{result.best_val_loss:.3f}"
    print(
        f"    {result.steps} steps, {result.tokens:,} tokens, {result.tokens_per_s:,.0f} tokens/s, "
        f"best validation loss {best}"
    )
    chat_dir = out / "chat"
    if chat:
        base_config = trainer.model_config
        # Learned positions have no weights past the base's context: those models keep theirs.
        chat_context = base_config.context_length
        if base_config.position == "rope":
            chat_context = max(chat_context, CHAT_CONTEXT)
        print(
            f"3/{stages} chat fine-tuning for {chat_s:.0f}s on {INSTRUCTION_EXAMPLES:,} generated "
            f"instructions and {STORY_QUESTION_EXAMPLES:,} story questions (context "
            f"{chat_context} tokens)"
        )
        instructions = out / "instructions.jsonl"
        atomic_write_text(
            instructions,
            "".join(
                json.dumps(example) + "\n"
                for example in chat_examples(INSTRUCTION_EXAMPLES, STORY_QUESTION_EXAMPLES, seed)
            ),
        )
        finetuner = FinetuneTrainer(
            TrainConfig(
                data=str(instructions),
                context_length=chat_context,
                out=str(chat_dir),
                seed=seed,
                device=device,
                lr=1e-3,
                warmup_steps=10,
                eval_every=100,
                save_every=1000,
                sample_tokens=0,
                val_fraction=0.05,
                max_time=f"{chat_s:.0f}s",
                quiet=True,
            ),
            base=str(out),
        )
        tuned = finetuner.run()
        if tuned.stop_signal is not None:
            print(f"quickstart stopped during chat fine-tuning; the model so far is in {chat_dir}")
            return int(tuned.stop_signal)
        tuned_best = "n/a" if tuned.best_val_loss is None else f"{tuned.best_val_loss:.3f}"
        print(f"    {tuned.steps} steps, assistant-token validation loss {tuned_best}")
    print(f"{stages}/{stages} samples (temperature 0.7):")
    show_samples(out, chat_dir if chat else None, seed)
    total = time.perf_counter() - started
    print(f"\ndone in {total / 60:.1f} minutes. Next:")
    if chat:
        print(f"  scratchlm chat --checkpoint {chat_dir}")
        print(f"  scratchlm eval --checkpoint {chat_dir} --tasks story-qa")
    print(f"  scratchlm eval --checkpoint {out} --tasks story-coherence")
    print(f'  scratchlm generate --checkpoint {out} --prompt "Once upon a time" --temperature 0.7')
    print(f"  scratchlm eval --checkpoint {out} --data <text file>")
    print(f"  scratchlm info --checkpoint {out}")
    print(
        "  scratchlm train --preset tiny --tokenizer char --data shakespeare --max-time 5m --out runs/shakespeare"
    )
    return None


def chat_examples(instructions: int, questions: int, seed: int) -> list[dict[str, str]]:
    """The chat stage's data: `instructions` generated instructions (mostly story requests) and
    `questions` story questions of story-qa's train split with their sentence replies, shuffled."""
    records = list(generate_instruction_examples(instructions, seed=seed))
    if questions > 0:
        records += [
            {"instruction": example.problem.prompt, "output": example.question.reply}
            for example in story_qa_examples("train", questions, seed)
        ]
    random.Random(seed).shuffle(records)
    return records


def show_samples(out: Path, chat_dir: Path | None, seed: int) -> None:
    settings = STORY_SAMPLING
    loaded = load_checkpoint(out)
    engine = Engine(loaded.model)
    tokenizer = loaded.tokenizer
    for index, prompt in enumerate(SAMPLE_PROMPTS):
        ids = list(
            engine.generate(
                tokenizer.encode(prompt),
                max_new_tokens=120,
                sampling=settings,
                seed=seed + index,
                stop_ids=frozenset({tokenizer.eos_id}),
            )
        )
        print(f"\n--- {prompt!r}\n{prompt}{tokenizer.decode(ids, skip_special=True)}")
    tuned = load_checkpoint(chat_dir) if chat_dir is not None else None
    if tuned is not None:
        engine = Engine(tuned.model)
        stops = frozenset({tuned.tokenizer.eos_id, end_of_turn_id(tuned.tokenizer)})
        for index, question in enumerate(CHAT_PROMPTS):
            messages: list[Message] = [{"role": "user", "content": question}]
            prompt_ids, _ = render(messages, tuned.tokenizer, add_generation_prompt=True)
            reply = list(
                engine.generate(
                    prompt_ids,
                    max_new_tokens=200,
                    sampling=settings,
                    seed=seed + index,
                    stop_ids=stops,
                )
            )
            print(f"\n--- chat\n> {question}\n{tuned.tokenizer.decode(reply, skip_special=True)}")
    show_story_measures(loaded, tuned, seed)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def show_story_measures(base: Checkpoint, chat: Checkpoint | None, seed: int) -> None:
    """Character coherence of the base model, story question answering of the chat model, and
    one of its story questions as a chat turn."""
    coherence = character_coherence(
        base.model,
        base.tokenizer,
        samples=SUMMARY_STORIES,
        seed=seed,
        max_new_tokens=SUMMARY_STORY_TOKENS,
    )
    ratio = "n/a" if coherence.ratio is None else f"{coherence.ratio:.2f}"
    print("\n--- story measures (the built-in story world, where the truth is known)")
    print(
        f"character coherence {ratio} (1.0 = as the data): "
        f"{coherence.mean_distinct_names:.1f} distinct names per story, the corpus "
        f"{coherence.corpus_mean_distinct_names:.1f} at the same length; pronoun agreement "
        f"{_percent(coherence.pronouns.agreement)} of {coherence.pronouns.checked} "
        f"(corpus {_percent(coherence.corpus_pronouns.agreement)}) "
        f"[{len(coherence.samples)} stories, {coherence.seconds:.0f}s]"
    )
    if chat is None:
        return
    qa = story_question_answering(chat.model, chat.tokenizer, count=SUMMARY_QUESTIONS)
    kinds = ", ".join(f"{kind} {row['accuracy']:.0%}" for kind, row in qa.by_kind().items())
    print(
        f"story questions {qa.accuracy:.0%} of {len(qa.answers)} held-out questions answered "
        f"({kinds}); {qa.did_not_fit} did not fit the context [{qa.seconds:.0f}s]"
    )
    shown = next((answer for answer in qa.answers if answer.fit), None)
    if shown is None:
        return
    told = "\n".join(f"> {line}" if line else ">" for line in shown.story.splitlines())
    # The user message as the model saw it: the story, a blank line, the question.
    print("\n--- chat about a story it was just told (held out from training)")
    print(f"{told}\n>\n> {shown.question}")
    print(f"{shown.reply}")
    print(f"(expected: {shown.answer}; {'right' if shown.correct else 'wrong'})")
