"""The quickstart track (issue 21, docs/speedrun.md): one quickstart recipe at fixed step budgets,
then the story measures: character coherence of the base model, story question answering of the
chat model, and the base model's held-out bits per byte.

Step budgets rather than a clock, so that a change is measured the same on a busy machine; the
step counts of the five-minute quickstart on an idle 2-core machine are the defaults (pretraining
~500 steps of 16 x 256 tokens, chat 80 steps with the context extended to 512 tokens, as the
quickstart does). A change that costs time per step is compared at
the steps the same minutes buy (`benchmarks/train_throughput.py` measures the ratio).

    .venv/bin/python benchmarks/quickstart_track.py --out /tmp/track/base
    .venv/bin/python benchmarks/quickstart_track.py --out /tmp/track/doc512 \\
        --set context_length=512 --batch-size 8 --windows document
    .venv/bin/python benchmarks/quickstart_track.py --out /tmp/track/qa --base /tmp/track/doc512 \\
        --qa-examples 3000

`--base DIR` reuses a pretraining run (only the chat stage and the measures run). Results go to
OUT/track.json and one summary line.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

from scratchlm.checkpoint import load_checkpoint
from scratchlm.data.stories.answers import NAME_PATTERN
from scratchlm.data.stories.corpus import generate_stories
from scratchlm.data.stories.instructions import generate_instruction_examples
from scratchlm.evaluation.perplexity import evaluate_text
from scratchlm.evaluation.stories import character_coherence, story_question_answering
from scratchlm.finetune.tasks import story_qa_examples
from scratchlm.finetune.trainer import FinetuneTrainer
from scratchlm.io_utils import atomic_write_text
from scratchlm.model import GPT
from scratchlm.quickstart import CHAT_CONTEXT, QUICKSTART_VOCAB_SIZE, chat_examples
from scratchlm.tokenizer import Tokenizer
from scratchlm.training.run_config import TrainConfig
from scratchlm.training.trainer import Trainer

# Held-out text for bits per byte: stories from a seed no quickstart corpus uses (the corpus is
# seed 0), the same for every recipe (the tokenizers differ, bytes do not).
HELDOUT_TEXT_SEED = 9_001
HELDOUT_STORIES = 300
COPY_STORIES = 60  # of those, for the name-copying losses


def qa_records(count: int, seed: int) -> list[dict[str, str]]:
    """Story questions on train-split plans (never a held-out one), answered in one word."""
    return [
        {
            "instruction": example.problem.prompt,
            "output": example.question.answer[0].upper() + example.question.answer[1:] + ".",
        }
        for example in story_qa_examples("train", count, seed)
    ]


@torch.inference_mode()
def name_copying(model: GPT, tokenizer: Tokenizer, stories: list[str]) -> dict[str, float]:
    """Does the base model copy a character's name from earlier in its story? The loss (nats) of
    the first token of each name mention, at the name's first mention in a story (a new name: at
    best the log of the number of names that fit) against its later mentions (known from the
    context: near 0 once the model copies). Stories are scored from the document start, cut to the
    context; a mention whose first token does not start at the name (or its leading space) is
    skipped."""
    first: list[float] = []
    repeated: list[float] = []
    context = model.config.context_length
    for story in stories:
        ids = tokenizer.encode(story)
        starts, offset = [], 0
        for token in ids:
            starts.append(offset)
            offset += len(tokenizer.decode([token]))
        if offset != len(story):
            continue  # a token that does not decode on its own: offsets unknown
        inputs = [tokenizer.eos_id, *ids][:context]
        logits = model(torch.tensor([inputs]))
        log_probs = torch.log_softmax(logits[0].float(), dim=-1)  # (positions, vocab)
        index_of = {start: index for index, start in enumerate(starts)}
        seen: set[str] = set()
        for match in NAME_PATTERN.finditer(story):
            index = index_of.get(match.start(), index_of.get(match.start() - 1))
            if index is None or index + 1 >= len(inputs):
                continue
            # Position `index` of `inputs` (shifted by the leading eos) predicts token `index`.
            loss = -float(log_probs[index, ids[index]])
            (repeated if match.group() in seen else first).append(loss)
            seen.add(match.group())
    return {
        "first_mention_nats": sum(first) / max(len(first), 1),
        "repeat_mention_nats": sum(repeated) / max(len(repeated), 1),
        "repeat_mentions": len(repeated),
    }


def pretrain(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    config = TrainConfig(
        preset=args.preset,
        set=list(args.set),
        data=args.data or f"synthetic:{args.corpus_mb}",
        tokenizer="bpe",
        vocab_size=args.vocab_size,
        tokenizer_sample_chars=5_000_000,
        val_fraction=0.02,
        out=str(out),
        seed=args.seed,
        batch_size=args.batch_size,
        windows=args.windows,
        lr=args.lr,
        eval_every=10_000,
        eval_tokens=32768,
        save_every=10_000,
        sample_tokens=0,
        warmup_steps=50,
        max_steps=args.pretrain_steps,
        threads=args.threads,
        quiet=True,
    )
    started = time.perf_counter()
    result = Trainer(config).run()
    return {
        "pretrain_steps": result.steps,
        "pretrain_tokens": result.tokens,
        "pretrain_s": round(time.perf_counter() - started, 1),
        "val_loss": result.best_val_loss,
    }


def chat_stage(args: argparse.Namespace, base: Path, out: Path) -> dict[str, Any]:
    if args.qa_answers == "sentence":  # the quickstart's own chat data
        records = chat_examples(args.instructions, args.qa_examples, args.seed)
    else:
        records = list(generate_instruction_examples(args.instructions, seed=args.seed))
        records += qa_records(args.qa_examples, args.seed)
        random.Random(args.seed).shuffle(records)
    data = out / "chat_data.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(data, "".join(json.dumps(record) + "\n" for record in records))
    started = time.perf_counter()
    result = FinetuneTrainer(
        TrainConfig(
            data=str(data),
            context_length=args.chat_context,
            out=str(out / "chat"),
            seed=args.seed,
            lr=args.chat_lr,
            warmup_steps=10,
            eval_every=10_000,
            save_every=10_000,
            sample_tokens=0,
            val_fraction=0.05,
            max_steps=args.chat_steps,
            spike_factor=args.chat_spike_factor,
            log_every=1,
            threads=args.threads,
            quiet=True,
        ),
        base=str(base),
    ).run()
    return {
        "chat_steps": result.steps,
        "chat_s": round(time.perf_counter() - started, 1),
        "chat_val_loss": result.best_val_loss,
    }


def measure(args: argparse.Namespace, base: Path, chat: Path) -> dict[str, Any]:
    device = torch.device("cpu")
    loaded = load_checkpoint(base, device)
    base_model, tokenizer = loaded.model, loaded.tokenizer
    heldout = list(generate_stories(HELDOUT_STORIES, seed=HELDOUT_TEXT_SEED))
    bits = evaluate_text(base_model, tokenizer, heldout, device=device)
    copying = name_copying(base_model, tokenizer, heldout[:COPY_STORIES])
    coherence = character_coherence(base_model, tokenizer, samples=args.samples, seed=0)
    chat_loaded = load_checkpoint(chat, device)
    chat_model, chat_tokenizer = chat_loaded.model, chat_loaded.tokenizer
    qa = story_question_answering(chat_model, chat_tokenizer, count=args.questions)
    coherence_row = coherence.as_dict()
    return {
        "bits_per_byte": bits.bits_per_byte,
        **copying,
        "coherence": coherence_row["value"],
        "distinct_names": coherence.mean_distinct_names,
        "corpus_distinct_names": coherence.corpus_mean_distinct_names,
        "pronoun_agreement": coherence_row.get("pronoun_agreement"),
        "story_qa": qa.accuracy,
        "story_qa_did_not_fit": qa.did_not_fit,
        "story_qa_by_kind": qa.by_kind(),
        "story_qa_replies": qa.as_dict()["replies"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--base", type=Path, help="reuse this pretraining run (skip pretraining)")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--set", action="append", default=[], help="model override FIELD=VALUE")
    parser.add_argument("--vocab-size", type=int, default=QUICKSTART_VOCAB_SIZE)
    parser.add_argument("--corpus-mb", type=int, default=20)
    parser.add_argument("--data", help="pretraining corpus (a data source) instead of the stories")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--windows", default="any", choices=("any", "document"))
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--pretrain-steps", type=int, default=500)
    parser.add_argument("--chat-steps", type=int, default=80)
    parser.add_argument("--chat-lr", type=float, default=1e-3)
    parser.add_argument(
        "--chat-context",
        type=int,
        default=CHAT_CONTEXT,
        help="the chat model's context (the quickstart extends the base's to this)",
    )
    parser.add_argument(
        "--chat-spike-factor",
        type=float,
        default=TrainConfig.spike_factor,
        help="the chat stage's --spike-factor (0: no loss-spike backtracking)",
    )
    parser.add_argument("--instructions", type=int, default=3000)
    parser.add_argument("--qa-examples", type=int, default=0, help="story questions in chat data")
    parser.add_argument(
        "--qa-answers",
        choices=("word", "sentence"),
        default="word",
        help="the story questions' answers: one word, or a sentence restating the question (the "
        "quickstart's chat data)",
    )
    parser.add_argument("--samples", type=int, default=32, help="stories for coherence")
    parser.add_argument("--questions", type=int, default=200, help="held-out story questions")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    row: dict[str, Any] = {"recipe": {k: str(v) for k, v in vars(args).items()}}
    base = args.base
    if base is None:
        base = args.out / "base"
        row.update(pretrain(args, base))
    if not (args.out / "chat" / "latest").exists():  # a finished chat stage is measured again
        row.update(chat_stage(args, base, args.out))
    row.update(measure(args, base, args.out / "chat"))
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "track.json", json.dumps(row, indent=2) + "\n")
    print(
        f"{args.out.name}: bits/byte {row['bits_per_byte']:.4f}, coherence "
        f"{row['coherence']:.2f} ({row['distinct_names']:.2f} vs {row['corpus_distinct_names']:.2f} "
        f"names), pronouns {row['pronoun_agreement']}, story QA {row['story_qa']:.3f} "
        f"({row['story_qa_did_not_fit']} did not fit), name loss first/repeat "
        f"{row['first_mention_nats']:.2f}/{row['repeat_mention_nats']:.2f} nats"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
